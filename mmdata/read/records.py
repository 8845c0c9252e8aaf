"""The one shape of every dataset-like object (`Records`: a built dataset, a view, a mixture, a selection of any of
them), and `Selection`: rows of other datasets picked by an in-memory (source, row) index — what `x[10:20]` and
`x[[3, 1, 2]]` return, and what a view (`mmdata.read.view`) is once its index is read.

    len(x); x[i] -> Record; x.get(i) -> (record, the dataset holding it); x.get_many(positions); iteration
    x[a:b], x[[i, j, ...]], x[bool mask] -> Selection (lazy: nothing is read until a record is asked for)
    x.image(i or record, j); x.media_bytes(i or record, j); x.media_path(i or record, j)
    x.to_pandas(limit); x.check_media(); x.close()

A record's media are resolved by the dataset that holds it. When a selection's sources do not all resolve media
alike (two datasets with different media roots), it remembers which source each record it served came from, for
as long as that record object is alive, so `x.image(x[i], j)` finds the right picture.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from mmdata.core.errors import InputError
from mmdata.core.schema import Record
from mmdata.format.manifests import INDEX_DTYPE
from mmdata.read.frame import records_frame
from mmdata.storage.location import Location

_CHUNK = 4096  # samples resolved per batched read when iterating a selection


_ORIGINS = 4096  # records remembered before the first sweep of dead ones (a selection whose sources differ)


class Records(Sequence[Record]):
    """What a `Dataset`, a `View`, a `Mixture` and a `Selection` share. A subclass provides `__len__`,
    `__getitem__` (an int; anything else goes to `_select`), `_get`, `get_many`, `_holder`, `_selection`, `bases`,
    `located_rows`, `flat`, `check_media` and `close`; the dataset that holds a record provides `_image`,
    `_media_bytes` and `_media_path`."""

    # ---------------------------------------------------------------- reading
    def get(self, i: int) -> tuple[Record, Any]:
        """Record `i` and the `Dataset` that holds it (which resolves its media: `dataset.image(record, j)`)."""
        return self._get(i)

    def _get(self, i: int) -> tuple[Record, Any]:
        raise NotImplementedError

    def get_many(self, positions: Sequence[int] | np.ndarray) -> list[tuple[Record, Any]]:
        raise NotImplementedError

    def __getitems__(self, positions: list[int]) -> list[Record]:
        """A batch of records in one batched read (a `torch.utils.data.DataLoader` fetches whole batches through
        this: `DataLoader(x, batch_size=B, collate_fn=mmdata.collate_list)`)."""
        return [record for record, _ in self.get_many(positions)]

    def _select(self, key: Any) -> Any:
        """`x[key]` for anything but an int: a `Selection` for a slice, a sequence (or array) of positions, or a
        boolean mask with one flag per record; a numpy integer is a position."""
        n = len(self)
        if isinstance(key, slice):
            return self._selection(np.arange(*key.indices(n), dtype=np.int64))
        if not isinstance(key, (str, bytes)):
            try:
                return self[operator.index(key)]
            except TypeError:
                pass
        if isinstance(key, (str, bytes)) or not (isinstance(key, (Sequence, np.ndarray)) or hasattr(key, "__array__")):
            raise TypeError(f"{type(self).__name__} indices are integers, slices, sequences of integers or a boolean "
                            f"mask, not {type(key).__name__}")
        positions = np.asarray(key)
        if positions.dtype == np.bool_:
            if positions.shape != (n,):
                raise IndexError(f"a boolean mask of shape {positions.shape} for {n} records: give one flag per "
                                 "record")
            positions = np.flatnonzero(positions)
        elif positions.size == 0:
            positions = np.zeros(0, dtype=np.int64)
        elif positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer):
            raise TypeError(f"{type(self).__name__} indices are integers, slices, sequences of integers or a boolean "
                            f"mask, not an array of {positions.dtype} with shape {positions.shape}")
        positions = positions.astype(np.int64)
        if positions.size and (positions.min() < -n or positions.max() >= n):
            raise IndexError(f"a position in {key!r} is out of range for {n} records")
        return self._selection(positions % max(n, 1))

    def _selection(self, positions: np.ndarray) -> Selection:
        """The records at `positions` (non-negative, in range), in that order."""
        raise NotImplementedError

    def bases(self) -> list[Any]:
        """The built datasets holding these records, each once."""
        raise NotImplementedError

    # ---------------------------------------------------------------- media
    def _holder(self, record: Record, j: int) -> Any:
        """The dataset that resolves media `j` of `record`, a record this object served."""
        raise NotImplementedError

    def _record_and_holder(self, x: int | Record, j: int) -> tuple[Record, Any]:
        if isinstance(x, Record):
            return x, self._holder(x, j)
        return self._get(operator.index(x))

    def image(self, x: int | Record, j: int) -> Image.Image:
        """Media `j` of record `x` (a position, or a record this object served) as shown, in 8-bit RGB: EXIF
        rotation applied, 16-bit and float samples scaled rather than clipped."""
        record, dataset = self._record_and_holder(x, j)
        return dataset._image(record, j)

    def media_bytes(self, x: int | Record, j: int) -> bytes:
        """The encoded bytes of media `j` of record `x` (a position, or a record this object served): from the
        tar, the media stored with the dataset, or the media root."""
        record, dataset = self._record_and_holder(x, j)
        return dataset._media_bytes(record, j)

    def media_path(self, x: int | Record, j: int) -> Location:
        """Where media `j` of record `x` (a position, or a record this object served) is: a path or a URL."""
        record, dataset = self._record_and_holder(x, j)
        return dataset._media_path(record, j)


class Selection(Records):
    """Records of other datasets, views or mixtures (`datasets`, named `names`), in the order of `index`: packed
    (source, row) pairs (`INDEX_DTYPE`). `x[10:20]` and `x[[3, 1, 2]]` of any dataset-like `x` are selections,
    read lazily: one batched read per source for `get_many` and for each chunk of an iteration.

    `labelled`: `to_pandas()` names each record's source in a `dataset` column (views and mixtures, and their
    selections)."""

    kind = "selection"

    def __init__(self, datasets: list[Records], names: list[str], index: np.ndarray | None, *,
                 labelled: bool) -> None:
        self.datasets, self.names, self.labelled = datasets, names, labelled
        self._index = index
        self._bases: list[Any] = []
        for d in datasets:
            self._bases += [b for b in d.bases() if not any(b is seen for seen in self._bases)]
        # Sources that all find a media path alike resolve any record's media; otherwise each record served is
        # remembered with its source (`_served`), for as long as the record is alive.
        homes = {b.media_key for b in self._bases}
        self._resolver: Any = self._bases[0] if len(homes) == 1 else None
        self._origins: dict[int, tuple[weakref.ref[Record], Any]] = {}
        self._sweep_at = _ORIGINS

    @property
    def index(self) -> np.ndarray:
        assert self._index is not None
        return self._index

    def bases(self) -> list[Any]:
        return self._bases

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return len(self.index)

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {self.describe()} ({n} samples)")
        d, row = self.index[i].tolist()
        return d, row

    def describe(self) -> str:
        """How messages name this object."""
        return f"a selection of {', '.join(self.names)}"

    def __getitem__(self, i: Any) -> Any:
        if type(i) is not int:
            return self._select(i)
        return self._served(*self._get(i))

    def _get(self, i: int) -> tuple[Record, Any]:
        d, row = self._locate(i)
        return self.datasets[d]._get(row)

    def get(self, i: int) -> tuple[Record, Any]:
        """Sample `i` and the dataset that holds it (for its media: `dataset.image(record, j)`)."""
        record, dataset = self._get(i)
        return self._served(record, dataset), dataset

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
            located = self.located(self.index[lo:lo + _CHUNK])
            if self._resolver is not None:  # nothing to remember
                for data, dataset in located:
                    yield dataset.decode(data)
                continue
            origins, ref = self._origins, weakref.ref  # `_served`, inlined: this is the hot loop
            for data, dataset in located:
                record = dataset.decode(data)
                origins[id(record)] = (ref(record), dataset)
                yield record
            self._sweep()

    def get_many(self, positions: Sequence[int] | np.ndarray) -> list[tuple[Record, Any]]:
        """`get` for a batch of positions: one batched read per source (what a DataLoader batch wants)."""
        n = len(self)
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"a position in {positions!r} is out of range for {self.describe()} ({n} samples)")
        located = self.located(self.index[pos % max(n, 1)])
        out = [(dataset.decode(data), dataset) for data, dataset in located]
        if self._resolver is None:
            origins, ref = self._origins, weakref.ref
            for record, dataset in out:
                origins[id(record)] = (ref(record), dataset)
            self._sweep()
        return out

    def _selection(self, positions: np.ndarray) -> Selection:
        return Selection(self.datasets, self.names, self.index[positions], labelled=self.labelled)

    def located_rows(self, rows: Sequence[int] | np.ndarray) -> list[tuple[bytes, Any]]:
        """Stored bytes of positions `rows` and the dataset that decodes each (what a parent view reads)."""
        return self.located(self.index[np.asarray(rows, dtype=np.int64)])

    def located(self, chunk: np.ndarray) -> list[tuple[bytes, Any]]:
        """(stored bytes, holding dataset) of each (source, row) of `chunk`, in order."""
        ds, rows = chunk["dataset"], chunk["row"].astype(np.int64)
        out: list[tuple[bytes, Any]] = [(b"", None)] * len(chunk)
        for d, source in enumerate(self.datasets):
            where = np.flatnonzero(ds == d)
            if where.size:
                for k, item in zip(where.tolist(), source.located_rows(rows[where])):
                    out[k] = item
        return out

    def flat(self) -> tuple[list[Any], np.ndarray]:
        """The datasets that hold these records and, per position, (dataset, row) into them."""
        bases: list[Any] = []
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

    # ---------------------------------------------------------------- which source a record came from
    def _served(self, record: Record, dataset: Any) -> Record:
        """`record`, remembered as `dataset`'s while it is alive, when the sources resolve media differently."""
        if self._resolver is None:
            self._origins[id(record)] = (weakref.ref(record), dataset)
            self._sweep()
        return record

    def _sweep(self) -> None:
        """Forget dead records once the map has doubled since the last sweep (amortized O(1) a record). In place:
        an iteration in progress holds the map."""
        origins = self._origins
        if len(origins) > self._sweep_at:
            for k in [k for k, (ref, _) in origins.items() if ref() is None]:
                del origins[k]
            self._sweep_at = max(_ORIGINS, 2 * len(origins))

    def _holder(self, record: Record, j: int) -> Any:
        if self._resolver is not None:
            return self._resolver
        entry = self._origins.get(id(record))
        if entry is not None and entry[0]() is record:
            return entry[1]
        if record.media[j].data is not None:  # the bytes came with the record (a tar): no source needed
            return self._bases[0]
        raise InputError(f"record {record.id!r} was not served by {self.describe()}, whose sources keep their media "
                         "in different places, so its media cannot be told apart; pass its position instead "
                         "(`x.image(i, j)`), or take its dataset with it: `record, dataset = x.get(i)`, then "
                         "`dataset.image(record, j)`")

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        """One row per sample (first `limit`); views and mixtures add a `dataset` column naming its source."""
        n = len(self) if limit is None else min(limit, len(self))
        if not self.labelled:
            return records_frame(self, n)
        names = self.names
        datasets = self.index["dataset"][:n].tolist()
        return records_frame(self, n, dataset=lambda i: names[datasets[i]])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_origins": {}}  # weak references stay in their process

    def __repr__(self) -> str:
        return f"Selection(samples={len(self)}, sources={self.names})"
