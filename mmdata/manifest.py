"""`dataset.json`: what a built dataset is, how it was made, and what it holds. Written last by the build."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from mmdata.errors import InputError, NotFound
from mmdata.layout import ShardEntry
from mmdata.media import write_bytes

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

    def save(self, out: Path) -> None:
        write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2) + b"\n", out / MANIFEST)

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = root / MANIFEST
        if not path.is_file():
            if (root / ".build.json").is_file():
                raise NotFound(f"{root}: build is incomplete (no {MANIFEST}); rerun the same build command "
                                        "to resume it")
            raise NotFound(f"{root}: not an mmdata dataset ({MANIFEST} not found)")
        data = orjson.loads(path.read_bytes())
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{path}: schema_version {version!r} is not supported (this mmdata reads "
                             f"{SCHEMA_VERSION})")
        known = {f.name for f in fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.shards = [ShardEntry.from_dict(s) for s in data.get("shards", [])]
        return manifest

    def resolve_media_root(self, root: Path) -> Path | None:
        if self.media_root is None:
            return None
        return (root / self.media_root).resolve()
