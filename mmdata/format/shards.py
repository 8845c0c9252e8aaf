"""A shard's records: its data file per form (`ShardFile`), its manifest entry (`ShardEntry`), and its result
(`ShardResult`), stored as `shards/NNNNNN.done.json` once the shard is complete."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from mmdata.format.names import SHARDS, done_name, is_done_name, shard_name, shard_number
from mmdata.storage.base import Storage


# ---------------------------------------------------------------------------------------------- manifest entries
@dataclass(frozen=True)
class ShardFile:
    name: str  # relative to the dataset root
    bytes: int
    sha256: str


@dataclass
class ShardEntry:
    """One shard in `dataset.json`: its counts and, per form, its data file."""

    name: str
    count: int
    read: int
    rejected: int
    files: dict[str, ShardFile]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardEntry:
        return cls(d["name"], d["count"], d["read"], d["rejected"],
                   {form: ShardFile(**f) for form, f in d["files"].items()})


@dataclass
class ShardResult:
    """What writing one shard produced; stored as its `.done.json` (rejects included, for `rejects.jsonl`)."""

    index: int
    read: int = 0
    written: int = 0
    rejected: int = 0
    files: dict[str, ShardFile] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    rejects: list[dict[str, str]] = field(default_factory=list)
    # Where the shard was written (host, pid; on Ray also node ip and id): in `.done.json` only, never the manifest.
    node: dict[str, Any] = field(default_factory=dict)
    # What the shard was made from: {"unit": digest, "files": {path: fingerprint}} (`mmdata.build.freshness`); a rerun
    # rebuilds the shard when it differs.
    inputs: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> ShardEntry:
        return ShardEntry(shard_name(self.index), self.written, self.read, self.rejected, self.files)


def write_done(storage: Storage, result: ShardResult) -> None:
    storage.write_bytes(done_name(result.index), orjson.dumps(asdict(result)))


def read_done(storage: Storage, index: int) -> ShardResult | None:
    """The result of shard `index` if it is complete, else None."""
    name = done_name(index)
    if not storage.exists(name):
        return None
    d = orjson.loads(storage.read_bytes(name))
    d["files"] = {form: ShardFile(**f) for form, f in d["files"].items()}
    return ShardResult(**d)


def any_done(storage: Storage) -> bool:
    return any(map(is_done_name, storage.list(SHARDS, "")))


def remove_shards_from(storage: Storage, first: int) -> None:
    """Delete every file of the shards numbered `first` and above (a rebuild from a shorter input has fewer)."""
    for name in storage.list(SHARDS, ""):
        number = shard_number(name)
        if number is not None and number >= first:
            storage.remove(name)
