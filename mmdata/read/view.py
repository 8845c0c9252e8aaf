"""Views: a directory whose index selects rows of other datasets. Nothing is copied; a view reads like a dataset.

    <view>/view.json      ViewManifest: its sources (datasets, mixtures or views), how it was made, its counts
    <view>/index.npy      packed (source, row) pairs, 12 bytes a record, in order
    <view>/removed.jsonl  one line per input record left out, and why (dedup, decontamination)

A mixture is a view too (`mixture.json` instead of `view.json`): `Mixture` reads it. A source can itself be a view
or a mixture: reads go down to the datasets that hold the bytes, in one batch per source and level. Each source is
pinned by the sha256 of its manifest: a rebuilt source no longer means the same rows, and opening the view says so
instead of serving other records. `open_any` opens whichever of a dataset, view or mixture a folder (or prefix)
holds."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmdata.core.errors import InputError, NotFound
from mmdata.core.schema import Record
from mmdata.format.manifests import INDEX_DTYPE, MixtureManifest, ViewManifest
from mmdata.format.names import INDEX, MANIFEST, MIXTURE, VIEW
from mmdata.read.dataset import Dataset
from mmdata.read.frame import records_frame
from mmdata.storage.base import Storage, open_storage
from mmdata.storage.local import LocalStorage
from mmdata.storage.location import Location, as_location, basename, resolve

_CHUNK = 4096  # samples resolved per batched read when iterating


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
        pass

        return Mixture(path, **kw)
    if storage.exists(VIEW):
        return View(path, **kw)
    return Dataset(path, **kw)


def manifest_sha256(root: Location, storage_options: dict[str, Any] | None = None) -> str:
    name = manifest_file(root, storage_options)
    if name is None:
        raise NotFound(f"{root}: not a built dataset, view or mixture (no {MANIFEST}, {VIEW} or {MIXTURE})")
    return hashlib.sha256(open_storage(root, storage_options).read_bytes(name)).hexdigest()


class View(Sequence[Record]):
    """Read a view (or, through `Mixture`, a mixture) like a dataset: `len`, `[i]`, `get(i)`, iteration, batches.

    Opening reads the manifest, memory-maps the index and opens each source (its records are read on demand):
    memory stays flat in view size, and DataLoader workers re-open everything instead of copying it.
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
        self.names: list[str] = [s.name for s in self.manifest.sources]
        self.datasets: list[Dataset | View] = [self._open_source(s) for s in self.manifest.sources]
        self._index: np.ndarray | None = None

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
            if isinstance(self.storage, LocalStorage):
                index = np.load(self.storage.path(self.manifest.index), mmap_mode="r", allow_pickle=False)
            else:  # 12 bytes a sample, fetched once
                index = np.load(io.BytesIO(self.storage.read_bytes(self.manifest.index)), allow_pickle=False)
            if index.dtype != INDEX_DTYPE or len(index) != self.manifest.total:
                raise InputError(f"{self.root}: {INDEX} does not match its manifest; re-make {self.root}")
            self._index = index
        return self._index

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return int(self.manifest.total)

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {basename(self.root)} ({n} samples)")
        d, row = self.index[i].tolist()
        return d, row

    def __getitem__(self, i: int) -> Record:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("slices are not supported; use itertools.islice or a list of indices")
        return self.get(i)[0]

    def get(self, i: int) -> tuple[Record, Dataset]:
        """Sample `i` and the dataset that holds it (for its images: `dataset.image(record, j)`)."""
        d, row = self._locate(i)
        return self.datasets[d].get(row)

    def raw(self, i: int) -> bytes:
        """The stored bytes of sample `i` in the dataset that holds it, undecoded."""
        d, row = self._locate(i)
        return self.datasets[d].raw(row)

    def source_of(self, i: int) -> str:
        """Name of the source of sample `i`."""
        return self.names[self._locate(i)[0]]

    def __iter__(self) -> Iterator[Record]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Record]:
        """Records from position `start` to the end, read a chunk at a time, decoded one at a time."""
        for lo in range(start, len(self), _CHUNK):
            for data, dataset in self.located(self.index[lo:lo + _CHUNK]):
                yield dataset.decode(data)

    def get_many(self, positions: Sequence[int]) -> list[tuple[Record, Dataset]]:
        """`get` for a batch of positions: one batched read per source (what a DataLoader batch wants)."""
        n = len(self)
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"a position in {positions!r} is out of range for {basename(self.root)} ({n} samples)")
        return [(dataset.decode(data), dataset) for data, dataset in self.located(self.index[pos % max(n, 1)])]

    def located_rows(self, rows: Sequence[int] | np.ndarray) -> list[tuple[bytes, Dataset]]:
        """Stored bytes of positions `rows` and the dataset that decodes each (what a parent view reads)."""
        return self.located(self.index[np.asarray(rows, dtype=np.int64)])

    def located(self, chunk: np.ndarray) -> list[tuple[bytes, Dataset]]:
        """(stored bytes, holding dataset) of each (source, row) of `chunk`, in order."""
        ds, rows = chunk["dataset"], chunk["row"].astype(np.int64)
        out: list[tuple[bytes, Dataset]] = [(b"", None)] * len(chunk)  # type: ignore[list-item]
        for d, source in enumerate(self.datasets):
            where = np.flatnonzero(ds == d)
            if where.size:
                for k, item in zip(where.tolist(), source.located_rows(rows[where])):
                    out[k] = item
        return out

    def flat(self) -> tuple[list[Dataset], np.ndarray]:
        """The datasets that hold this view's records and, per position, (dataset, row) into them."""
        bases: list[Dataset] = []
        index = np.empty(len(self), dtype=INDEX_DTYPE)
        for d, source in enumerate(self.datasets):
            where = np.flatnonzero(self.index["dataset"] == d)
            sub_bases, sub = source.flat()
            offset = len(bases)
            bases += sub_bases
            rows = self.index["row"][where].astype(np.int64)
            index["dataset"][where] = sub["dataset"][rows] + offset
            index["row"][where] = sub["row"][rows]
        return bases, index

    def check_media(self) -> None:
        """Raise `MediaUnreachable` if a source's media live in a local folder that is not here (before training,
        rather than at the first image)."""
        for d in self.datasets:
            d.check_media()

    def close(self) -> None:
        for d in self.datasets:
            d.close()

    # ---------------------------------------------------------------- media
    def image_at(self, i: int, j: int) -> Image.Image:
        """Media `j` of sample `i` as RGB."""
        record, dataset = self.get(i)
        return dataset.image(record, j)

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        """One row per sample (first `limit`), with a `dataset` column naming its source."""
        n = len(self) if limit is None else min(limit, len(self))
        names = self.names
        datasets = self.index["dataset"][:n].tolist()
        return records_frame(self, n, dataset=lambda i: names[datasets[i]])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_index"] = None  # re-mapped in each worker process
        return state

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
