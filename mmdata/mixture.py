"""Read a mixture written by `mmdata mix`: `Mixture(root)` serves records like a `Dataset` does.

Opening reads `mixture.json`, memory-maps `index.npy` (12 bytes per sample) and opens each source dataset lazily:
memory stays flat in mixture size, and worker processes re-open everything instead of copying it.
JSONL sources are read through memory-mapped shards (a record is one slice, no system call), which is what keeps
random access within reach of reading a single dataset front to back.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from mmdata.dataset import Dataset
from mmdata.errors import InputError, NotFound
from mmdata.inspect import records_frame
from mmdata.manifest import MANIFEST
from mmdata.mix import INDEX_DTYPE, MIXTURE, MIXTURE_VERSION
from mmdata.schema import Record

_CHUNK = 4096  # samples resolved per vectorized step when iterating
_ORIGINS = 4096
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only  # recently served records whose dataset `image()` can still tell


class Mixture(Sequence[Record]):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MIXTURE
        if not path.is_file():
            raise NotFound(f"{self.root}: not a mixture ({MIXTURE} not found); run `mmdata mix recipe.yaml "
                                    f"--out {self.root}`")
        self.manifest: dict[str, Any] = orjson.loads(path.read_bytes())
        if self.manifest.get("version") != MIXTURE_VERSION:
            raise InputError(f"{path}: mixture version {self.manifest.get('version')!r} is not supported (this "
                             f"mmdata reads {MIXTURE_VERSION}); re-run `mmdata mix`")
        self.names: list[str] = [s["name"] for s in self.manifest["sources"]]
        self.datasets: list[Dataset] = [self._open_source(s) for s in self.manifest["sources"]]
        self._rows = [_JsonlRows(d) if d.form == "jsonl" else None for d in self.datasets]
        self._index: np.ndarray | None = None
        self._origins: OrderedDict[int, tuple[Record, int]] = OrderedDict()
        self._pid = os.getpid()

    def _open_source(self, s: dict[str, Any]) -> Dataset:
        # Relative first, so a folder holding datasets and mixtures can move as a whole.
        root = next((p for p in (self.root / s["path"], Path(s["abs_path"])) if (p / MANIFEST).is_file()), None)
        if root is None:
            raise NotFound(f"{self.root}: source {s['name']!r} not found at {s['path']} (relative to the "
                                    f"mixture) nor {s['abs_path']}; restore the dataset or re-run `mmdata mix`")
        if hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest() != s["dataset_sha256"]:
            raise InputError(f"{self.root}: source {s['name']!r} ({root}) was rebuilt after this mixture was made, "
                             "so its rows no longer mean the same records; re-run `mmdata mix` on the recipe")
        return Dataset(root)

    @property
    def index(self) -> np.ndarray:
        if self._index is None:
            index = np.load(self.root / self.manifest["index"], mmap_mode="r", allow_pickle=False)
            if index.dtype != INDEX_DTYPE or len(index) != self.manifest["total"]:
                raise InputError(f"{self.root}: index does not match {MIXTURE}; re-run `mmdata mix`")
            self._index = index
        return self._index

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return int(self.manifest["total"])

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

    def _check_fork(self) -> None:
        # A forked DataLoader worker inherits the datasets' open files, and with them one shared file offset:
        # seek + read from two processes would then race. Memory maps have no offset and stay.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self.close()

    def close(self) -> None:
        """Close the source datasets' file handles (they reopen on demand)."""
        for d in self.datasets:
            d.close()

    def get(self, i: int) -> tuple[Record, Dataset]:
        """Sample `i` and the dataset it comes from (for its images)."""
        self._check_fork()
        d, row = self._locate(i)
        rows = self._rows[d]
        record = Record.from_dict(orjson.loads(rows.line(row))) if rows is not None else self.datasets[d][row]
        self._remember(record, d)
        return record, self.datasets[d]

    def raw(self, i: int) -> bytes:
        """The stored JSON of sample `i`, undecoded."""
        d, row = self._locate(i)
        rows = self._rows[d]
        return rows.line(row) if rows is not None else orjson.dumps(self.datasets[d][row].to_dict())

    def source_of(self, i: int) -> str:
        """Name of the source dataset of sample `i` (the recipe's `name`, by default the dataset's folder name)."""
        return self.names[self._locate(i)[0]]

    def __iter__(self) -> Iterator[Record]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Record]:
        """Records from position `start` to the end, resolved a chunk at a time."""
        for lo in range(start, len(self), _CHUNK):
            yield from self._records(self.index[lo:lo + _CHUNK])

    def get_many(self, positions: Sequence[int]) -> list[tuple[Record, Dataset]]:
        """`get` for a batch of positions at once (vectorized lookups: what a DataLoader batch wants)."""
        n = len(self)
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"a position in {positions!r} is out of range for a mixture of {n} samples")
        chunk = self.index[pos % max(n, 1)]
        datasets = self.datasets
        return [(record, datasets[d]) for record, d in zip(self._records(chunk), chunk["dataset"].tolist())]

    def _records(self, chunk: np.ndarray) -> list[Record]:
        # The per-record loop is the hot path of training: lookups are vectorized per chunk, the loop only slices
        # a memory map and decodes.
        self._check_fork()
        readers = self._rows
        ds, rows = chunk["dataset"].astype(np.int64), chunk["row"].astype(np.int64)
        shard, begin, end = np.zeros_like(rows), np.zeros_like(rows), np.zeros_like(rows)
        for d, reader in enumerate(readers):
            mask = ds == d
            if reader is not None and mask.any():
                shard[mask], begin[mask], end[mask] = reader.spans(rows[mask])
        maps = [reader.maps if reader is not None else None for reader in readers]
        loads, from_dict, datasets = orjson.loads, Record.from_dict, self.datasets
        return [datasets[d][row] if maps[d] is None
                else from_dict(loads((maps[d][s] or readers[d].open(s))[b:e]))  # type: ignore[index,union-attr]
                for d, s, b, e, row in zip(ds.tolist(), shard.tolist(), begin.tolist(), end.tolist(), rows.tolist())]

    # ---------------------------------------------------------------- media
    def _remember(self, record: Record, d: int) -> None:
        self._origins[id(record)] = (record, d)
        if len(self._origins) > _ORIGINS:
            self._origins.popitem(last=False)

    def image_at(self, i: int, j: int) -> Image.Image:
        """Media `j` of sample `i` as RGB."""
        record, dataset = self.get(i)
        return dataset.image(record, j)

    def image(self, record: Record, j: int) -> Image.Image:
        """Media `j` of a record this mixture served recently (through `[i]` or `get`); else of the only source
        whose builder produced it. Prefer `get(i)` / `image_at(i, j)` in new code: they never need to guess."""
        m = record.media[j]
        if m.data is not None:
            return self.datasets[0].image(record, j)  # bytes from a tar decode the same whatever the dataset
        origin = self._origins.get(id(record))
        if origin is not None and origin[0] is record:
            return self.datasets[origin[1]].image(record, j)
        roots = {d.media_root for d in self.datasets if d.manifest.builder == record.source}
        if len(roots) == 1:
            return next(d for d in self.datasets if d.manifest.builder == record.source).image(record, j)
        raise ValueError(f"record {record.id!r}: cannot tell which of the mixture's datasets it came from; use "
                         "mixture.get(i) -> (record, dataset) or mixture.image_at(i, j)")

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        """One row per sample (first `limit`), with a `dataset` column naming its source dataset."""
        n = len(self) if limit is None else min(limit, len(self))
        names = self.names
        datasets = self.index["dataset"][:n].tolist()
        return records_frame(self, n, dataset=lambda i: names[datasets[i]])

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dataloader workers: memory maps and file handles are re-opened in each process.
        state = self.__dict__.copy()
        state["_index"] = None
        state["_origins"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"Mixture({str(self.root)!r}, name={self.manifest['name']!r}, samples={len(self)}, sources={self.names})"


class _JsonlRows:
    """Row → JSON line of a JSONL dataset through memory-mapped shards and one concatenated offset table."""

    def __init__(self, dataset: Dataset) -> None:
        self.root = dataset.root
        shards = [s for s in dataset.manifest.shards if s["count"] > 0]
        self.names = [s["files"]["jsonl"]["name"] for s in shards]
        self.sizes = [int(s["files"]["jsonl"]["bytes"]) for s in shards]
        self.starts = np.cumsum([0] + [s["count"] for s in shards]).tolist()
        self._offsets: np.ndarray | None = None
        self.maps: list[mmap.mmap | None] = [None] * len(shards)

    @property
    def offsets(self) -> np.ndarray:
        # Shard s's rows r..: offsets[row + s] is the start, offsets[row + s + 1] the end (each shard ends with
        # its size), so one table serves every shard.
        if self._offsets is None:
            parts = []
            for name, size in zip(self.names, self.sizes):
                parts += [np.fromfile(self.root / (name[:-6] + ".idx"), dtype="<u8"), np.array([size], dtype="<u8")]
            self._offsets = np.concatenate(parts).astype(np.int64)
        return self._offsets

    def open(self, s: int) -> mmap.mmap:
        m = self.maps[s]
        if m is None:
            with open(self.root / self.names[s], "rb") as f:
                # Pre-faulting the whole shard costs one pass over pages already cached and saves a page fault
                # on nearly every random read after it.
                m = self.maps[s] = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
        return m

    def line(self, row: int) -> bytes:
        s = bisect.bisect_right(self.starts, row) - 1
        o = self.offsets
        return self.open(s)[int(o[row + s]):int(o[row + s + 1])]

    def spans(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, begin, end) of each of `rows`, vectorized."""
        shard = np.searchsorted(np.asarray(self.starts[1:]), rows, side="right")
        pos = rows + shard
        return shard, self.offsets[pos], self.offsets[pos + 1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_offsets"] = None
        state["maps"] = [None] * len(self.maps)
        return state

