"""Read a mixture written by `mmdata mix`: `Mixture(root)` serves records like a `Dataset` does.

Opening reads `mixture.json`, memory-maps `index.npy` (12 bytes per sample) and opens each source dataset lazily:
memory stays flat in mixture size, and worker processes re-open everything instead of copying it.
Reads are batched: a chunk of samples becomes one batched read per source (`Dataset.raw_many`), and records are
decoded one at a time as they are handed out, so no more of them are alive at once than a sequential scan keeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmdata.dataset import Dataset
from mmdata.errors import InputError, NotFound
from mmdata.manifest import MANIFEST
from mmdata.mix import INDEX_DTYPE, MIXTURE, MixtureManifest, MixtureSource
from mmdata.schema import Record

_CHUNK = 4096  # samples resolved per batched read when iterating


class Mixture(Sequence[Record]):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = MixtureManifest.load(self.root)
        self.names: list[str] = [s.name for s in self.manifest.sources]
        self.datasets: list[Dataset] = [self._open_source(s) for s in self.manifest.sources]
        self._index: np.ndarray | None = None

    @staticmethod
    def is_mixture(root: Path) -> bool:
        return (root / MIXTURE).is_file()

    def _open_source(self, s: MixtureSource) -> Dataset:
        # Relative first, so a folder holding datasets and mixtures can move as a whole.
        root = next((p for p in (self.root / s.path, Path(s.abs_path)) if (p / MANIFEST).is_file()), None)
        if root is None:
            raise NotFound(f"{self.root}: source {s.name!r} not found at {s.path} (relative to the "
                                    f"mixture) nor {s.abs_path}; restore the dataset or re-run `mmdata mix`")
        if hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest() != s.dataset_sha256:
            raise InputError(f"{self.root}: source {s.name!r} ({root}) was rebuilt after this mixture was made, "
                             "so its rows no longer mean the same records; re-run `mmdata mix` on the recipe")
        return Dataset(root)

    @property
    def index(self) -> np.ndarray:
        if self._index is None:
            index = np.load(self.root / self.manifest.index, mmap_mode="r", allow_pickle=False)
            if index.dtype != INDEX_DTYPE or len(index) != self.manifest.total:
                raise InputError(f"{self.root}: index does not match {MIXTURE}; re-run `mmdata mix`")
            self._index = index
        return self._index

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return self.manifest.total

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for a mixture of {n} samples")
        d, row = self.index[i].tolist()
        return d, row

    def __getitem__(self, i: int) -> Record:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("slices are not supported; use itertools.islice or a list of indices")
        return self.get(i)[0]

    def get(self, i: int) -> tuple[Record, Dataset]:
        """Sample `i` and the dataset it comes from (for its images: `dataset.image(record, j)`)."""
        d, row = self._locate(i)
        return self.datasets[d][row], self.datasets[d]

    def raw(self, i: int) -> bytes:
        """The stored bytes of sample `i` in its source dataset, undecoded."""
        d, row = self._locate(i)
        return self.datasets[d].raw(row)

    def source_of(self, i: int) -> str:
        """Name of the source dataset of sample `i` (the recipe's `name`, by default the dataset's folder name)."""
        return self.names[self._locate(i)[0]]

    def __iter__(self) -> Iterator[Record]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Record]:
        """Records from position `start` to the end, read a chunk at a time."""
        decoders = [d.decode for d in self.datasets]
        for lo in range(start, len(self), _CHUNK):
            chunk = self.index[lo:lo + _CHUNK]
            for d, data in zip(chunk["dataset"].tolist(), self._raw(chunk)):
                yield decoders[d](data)

    def get_many(self, positions: Sequence[int]) -> list[tuple[Record, Dataset]]:
        """`get` for a batch of positions: one batched read per source (what a DataLoader batch wants)."""
        n = len(self)
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"a position in {positions!r} is out of range for a mixture of {n} samples")
        chunk = self.index[pos % max(n, 1)]
        datasets, decoders = self.datasets, [d.decode for d in self.datasets]
        return [(decoders[d](data), datasets[d]) for d, data in zip(chunk["dataset"].tolist(), self._raw(chunk))]

    def _raw(self, chunk: np.ndarray) -> list[bytes]:
        """The stored bytes of each (dataset, row) of `chunk`, in order."""
        ds, rows = chunk["dataset"], chunk["row"].astype(np.int64)
        out: list[bytes] = [b""] * len(chunk)
        for d, dataset in enumerate(self.datasets):
            where = np.flatnonzero(ds == d)
            if where.size:
                for k, data in zip(where.tolist(), dataset.raw_many(rows[where])):
                    out[k] = data
        return out

    def close(self) -> None:
        """Release the source datasets' memory maps (they are mapped again on demand)."""
        for d in self.datasets:
            d.close()

    # ---------------------------------------------------------------- media
    def image_at(self, i: int, j: int) -> Image.Image:
        """Media `j` of sample `i` as RGB."""
        record, dataset = self.get(i)
        return dataset.image(record, j)

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        """One row per sample (first `limit`), with a `dataset` column naming its source dataset."""
        from mmdata.inspect import records_frame  # inspect types its arguments as Dataset | Mixture

        n = len(self) if limit is None else min(limit, len(self))
        names = self.names
        datasets = self.index["dataset"][:n].tolist()
        return records_frame(self, n, dataset=lambda i: names[datasets[i]])

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dataloader workers: the index's memory map is re-opened in each process.
        state = self.__dict__.copy()
        state["_index"] = None
        return state

    def __repr__(self) -> str:
        return f"Mixture({str(self.root)!r}, name={self.manifest.name!r}, samples={len(self)}, sources={self.names})"
