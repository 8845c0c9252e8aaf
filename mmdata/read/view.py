"""Views: a directory whose index selects rows of other datasets. Nothing is copied; a view reads like a dataset.

    <view>/view.json      ViewManifest: its sources (datasets, mixtures or views), how it was made, its counts
    <view>/index.npy      packed (source, row) pairs, 12 bytes a record, in order
    <view>/removed.jsonl  one line per input record left out, and why (dedup, decontamination)

A mixture is a view too (`mixture.json` instead of `view.json`): `Mixture` reads it. A view is a `Selection` whose
index is on disk (`mmdata.read.records`: the shape, slicing and media access every dataset-like object shares). A
source can itself be a view or a mixture: reads go down to the datasets that hold the bytes, in one batch per source
and level. Each source is pinned by the sha256 of its manifest: a rebuilt source no longer means the same rows, and
opening the view says so instead of serving other records. `open_any` opens whichever of a dataset, view or mixture
a folder (or prefix) holds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.core.errors import InputError, NotFound
from mmdata.format.manifests import INDEX_DTYPE, MixtureManifest, ViewManifest
from mmdata.format.names import INDEX, MANIFEST, MIXTURE, VIEW
from mmdata.read.dataset import Dataset
from mmdata.read.records import Selection
from mmdata.storage.base import Storage, open_storage
from mmdata.storage.location import Location, as_location, basename, resolve


def manifest_file(root: Location, storage_options: dict[str, Any] | None = None) -> str | None:
    """The name of the manifest that makes `root` readable (a dataset's, a view's or a mixture's), or None."""
    storage = open_storage(root, storage_options)
    return next((name for name in (MANIFEST, VIEW, MIXTURE) if storage.exists(name)), None)


def open_any(path: Location, *, storage_options: dict[str, Any] | None = None,
             cache_dir: str | Path | None = None) -> Dataset | View:
    """A built dataset, a view or a mixture, by what its directory (or URL prefix) holds."""
    kw: dict[str, Any] = {"storage_options": storage_options, "cache_dir": cache_dir}
    storage = open_storage(path, storage_options)
    if storage.exists(MIXTURE):
        return Mixture(path, **kw)
    if storage.exists(VIEW):
        return View(path, **kw)
    return Dataset(path, **kw)


def manifest_sha256(root: Location, storage_options: dict[str, Any] | None = None) -> str:
    name = manifest_file(root, storage_options)
    if name is None:
        raise NotFound(f"{root}: not a built dataset, view or mixture (no {MANIFEST}, {VIEW} or {MIXTURE})")
    return hashlib.sha256(open_storage(root, storage_options).read_bytes(name)).hexdigest()


class View(Selection):
    """Read a view (or, through `Mixture`, a mixture) like a dataset: `len`, `[i]`, slices, `get(i)`, iteration,
    batches, media (`mmdata.read.records`).

    Opening reads the manifest and opens each source (its records are read on demand); the index is memory-mapped
    on first use: memory stays flat in view size, and DataLoader workers re-open everything instead of copying it.
    """

    manifest: Any  # ViewManifest, or MixtureManifest for a mixture
    kind = "view"

    def __init__(self, root: Location, *, storage_options: dict[str, Any] | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.root = as_location(root)
        self.storage_options, self.cache_dir = storage_options, cache_dir  # in memory only, for the sources
        self.storage = open_storage(self.root, storage_options)
        self.manifest = self.load_manifest(self.storage)
        self.manifest_sha256 = manifest_sha256(self.root, storage_options)  # this view's identity
        super().__init__([self._open_source(s) for s in self.manifest.sources],
                         [s.name for s in self.manifest.sources], None, labelled=True)

    @staticmethod
    def load_manifest(root: Location | Storage) -> Any:
        return ViewManifest.load(root)

    def _open_source(self, s: Any) -> Dataset | View:
        # Relative first, so a folder (or prefix) holding datasets and views can move as a whole.
        where = (resolve(self.root, s.path), as_location(s.abs_path))
        root = next((p for p in where if manifest_file(p, self.storage_options) is not None), None)
        if root is None:
            raise NotFound(f"{self.root}: source {s.name!r} not found at {s.path} (relative to "
                           f"this {self.kind}) nor {s.abs_path}; restore it or re-make the {self.kind}")
        if manifest_sha256(root, self.storage_options) != s.dataset_sha256:
            raise InputError(f"{self.root}: source {s.name!r} ({root}) was rebuilt after this {self.kind} was made, "
                             f"so its rows no longer mean the same records; re-make the {self.kind}")
        return open_any(root, storage_options=self.storage_options, cache_dir=self.cache_dir)

    @property
    def index(self) -> np.ndarray:
        if self._index is None:
            index = self.storage.read_array(self.manifest.index)  # memory-mapped, or 12 bytes a sample fetched once
            if index.dtype != INDEX_DTYPE or len(index) != self.manifest.total:
                raise InputError(f"{self.root}: {INDEX} does not match its manifest; re-make {self.root}")
            self._index = index
        return self._index

    def __len__(self) -> int:
        return int(self.manifest.total)

    def describe(self) -> str:
        return f"{self.kind} {basename(self.root)}"

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_index": None}  # re-mapped in each worker process

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, samples={len(self)}, sources={self.names})"


class Mixture(View):
    manifest: MixtureManifest
    kind = "mixture"

    @staticmethod
    def is_mixture(root: Location, storage_options: dict[str, Any] | None = None) -> bool:
        return open_storage(root, storage_options).exists(MIXTURE)

    @staticmethod
    def load_manifest(root: Location | Storage) -> MixtureManifest:
        return MixtureManifest.load(root)

    def __repr__(self) -> str:
        return f"Mixture({str(self.root)!r}, name={self.manifest.name!r}, samples={len(self)}, sources={self.names})"
