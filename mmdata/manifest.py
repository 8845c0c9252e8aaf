"""`dataset.json`: what a built dataset is, how it was made, and what it holds. Written last by the build."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from mmdata.errors import InputError, NotFound
from mmdata.layout import ShardEntry
from mmdata.storage import Location, Storage, as_storage, is_url, resolve

SCHEMA_VERSION = 1
MANIFEST = "dataset.json"


@dataclass
class Manifest:
    schema_version: int
    builder: str
    args: dict[str, Any]
    formats: list[str]
    shard_size: int
    media_root: str | None  # absolute source root (in place), "media" (copied under the dataset) or None
    counts: dict[str, int]  # read, written, rejected: read == written + rejected
    tasks: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    shards: list[ShardEntry] = field(default_factory=list)

    def save(self, out: Location | Storage) -> None:
        as_storage(out).write_bytes(MANIFEST, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2) + b"\n")

    @classmethod
    def load(cls, root: Location | Storage, options: dict[str, Any] | None = None) -> Manifest:
        storage = as_storage(root, options)
        return cls.parse(read_manifest(storage), storage.where(MANIFEST))

    @classmethod
    def parse(cls, raw: bytes, where: str = MANIFEST) -> Manifest:
        data = orjson.loads(raw)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{where}: schema_version {version!r} is not supported (this mmdata reads "
                             f"{SCHEMA_VERSION})")
        known = {f.name for f in fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.shards = [ShardEntry.from_dict(s) for s in data.get("shards", [])]
        return manifest

    def resolve_media_root(self, root: Location) -> Location | None:
        """Where the media are: under the dataset (`media`, copied there), or the source's root, in place."""
        if self.media_root is None:
            return None
        if is_url(root) or is_url(self.media_root):
            return resolve(root, self.media_root)
        return (Path(root) / self.media_root).resolve()


def read_manifest(storage: Storage, pin: bool = False) -> bytes:
    """The bytes of the dataset's `dataset.json`; a one-line error if there is none (an unfinished build says so).
    `pin`: what `storage` reads afterwards must belong to this manifest's build (`Storage.pin`)."""
    if not storage.exists(MANIFEST):
        storage.check()
        where = storage.where()
        if storage.exists(".build.json"):
            raise NotFound(f"{where}: build is incomplete (no {MANIFEST}); rerun the same build command to resume it")
        raise NotFound(f"{where}: not an mmdata dataset ({MANIFEST} not found)")
    return storage.pin(MANIFEST) if pin else storage.read_bytes(MANIFEST)
