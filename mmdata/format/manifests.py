"""The manifests: `dataset.json` (a built dataset), `view.json` (a dedup or decontamination view) and `mixture.json`
(a mixture), each written last by what makes it, and read back with one version check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import orjson

from mmdata.core.errors import InputError, NotFound
from mmdata.format.names import BUILD, MANIFEST, MIXTURE, VIEW
from mmdata.format.shards import ShardEntry
from mmdata.storage.base import Storage, as_storage
from mmdata.storage.location import Location, resolve

SCHEMA_VERSION = 1
VIEW_VERSION = 1
MIXTURE_VERSION = 1
INDEX_DTYPE = np.dtype([("dataset", "<u4"), ("row", "<u8")])  # a view's or mixture's index: 12 bytes per sample


def _versioned(raw: bytes, where: str, key: str, supported: int, what: str, fix: str) -> dict[str, Any]:
    """A manifest's fields, if this mmdata reads its version; else an error naming the file, the version and the fix."""
    data = orjson.loads(raw)
    if data.get(key) != supported:
        raise InputError(f"{where}: {what} {data.get(key)!r} is not supported (this mmdata reads {supported}){fix}")
    return data


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
        data = _versioned(raw, where, "schema_version", SCHEMA_VERSION, "schema_version", "")
        known = {f.name for f in fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.shards = [ShardEntry.from_dict(s) for s in data.get("shards", [])]
        return manifest

    def resolve_media_root(self, root: Location) -> Location | None:
        """Where the media are: under the dataset (`media`, copied there), or the source's root, in place."""
        return None if self.media_root is None else resolve(root, self.media_root)


def read_manifest(storage: Storage, pin: bool = False) -> bytes:
    """The bytes of the dataset's `dataset.json`; a one-line error if there is none (an unfinished build says so).
    `pin`: what `storage` reads afterwards must belong to this manifest's build (`Storage.pin`)."""
    if not storage.exists(MANIFEST):
        storage.check()
        where = storage.where()
        if storage.exists(BUILD):
            raise NotFound(f"{where}: build is incomplete (no {MANIFEST}); rerun the same build command to resume it")
        raise NotFound(f"{where}: not an mmdata dataset ({MANIFEST} not found)")
    return storage.pin(MANIFEST) if pin else storage.read_bytes(MANIFEST)


@dataclass
class ViewSource:
    """One source of a view: where it is and which build of it the rows refer to."""

    name: str
    path: str  # relative to the view, so a folder of datasets and views can move as a whole
    abs_path: str
    length: int
    dataset_sha256: str  # sha256 of the source's manifest file


@dataclass
class ViewManifest:
    """`view.json`: a view's sources, what made it (`kind` + `params`) and its counts."""

    version: int
    kind: str  # "dedup" | "decontaminate"
    total: int
    index: str
    sources: list[ViewSource]
    params: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # read == kept + removed
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # source → reason → records
    name: str = ""

    @classmethod
    def load(cls, root: Location | Storage) -> ViewManifest:
        storage = as_storage(root)
        if not storage.exists(VIEW):
            raise NotFound(f"{storage.where()}: not a view ({VIEW} not found)")
        data = _versioned(storage.read_bytes(VIEW), storage.where(VIEW), "version", VIEW_VERSION, "view version",
                          "; re-run the command that made it")
        return cls(**{**data, "sources": [ViewSource(**s) for s in data["sources"]]})


@dataclass
class MixtureSource:
    """One source in `mixture.json`: where its dataset is, which build it was, and what the mixture takes."""

    name: str
    path: str  # relative to the mixture, so a folder of datasets and mixtures can move as a whole
    abs_path: str
    length: int
    dataset_sha256: str  # of the source's dataset.json: a rebuilt source no longer matches the index's rows
    mode: str
    requested: float
    max: int | None
    requested_count: float
    requested_proportion: float
    count: int
    proportion: float
    epochs: float
    capped: bool
    available: int | None = None  # records before the recipe's filters (mixtures made before filters: None)
    filtered: dict[str, int] = field(default_factory=dict)  # filter → records of the source it fails


@dataclass
class MixtureManifest:
    """`mixture.json`: the recipe as resolved. Written by `mmdata.mix.planner`, read by `mmdata.read.view.Mixture`."""

    version: int
    name: str
    recipe: dict[str, Any]
    recipe_file: str
    recipe_sha256: str
    seed: int
    total: int
    index: str
    sources: list[MixtureSource]
    warnings: list[str]

    @classmethod
    def load(cls, root: Location | Storage) -> MixtureManifest:
        storage = as_storage(root)
        if not storage.exists(MIXTURE):
            storage.check()
            raise NotFound(f"{storage.where()}: not a mixture ({MIXTURE} not found); run `mmdata mix recipe.yaml "
                           f"--out {storage.where()}`")
        data = _versioned(storage.read_bytes(MIXTURE), storage.where(MIXTURE), "version", MIXTURE_VERSION,
                          "mixture version", "; re-run `mmdata mix`")
        return cls(**{**data, "sources": [MixtureSource(**src) for src in data["sources"]]})
