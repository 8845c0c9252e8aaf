"""Reading shards: `ShardReader` serves rows of one form of a dataset's shards as stored bytes (a JSON line, or one
record's tar members) from the offset indexes; `decoder` turns those bytes into a `Record`. Every byte goes through
a `Storage`, so a second backend changes no line here."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from mmdata.core.errors import DamagedData
from mmdata.core.schema import RECORD_DECODER, Record
from mmdata.format.names import Form, index_name
from mmdata.format.shards import ShardEntry
from mmdata.format.ustar import tar_members
from mmdata.storage.base import Storage


# ---------------------------------------------------------------------------------------------- reading
class ShardReader:
    """Rows of one form of a dataset's shards as stored bytes: a JSON line, or one record's tar members.

    All shards' offsets form one table (8 bytes per record, read on first use): shard s's row j starts at
    `offsets[start_s + j + s]` and ends at the next entry, each shard's run closing with its file size.
    """

    def __init__(self, storage: Storage, shards: Sequence[ShardEntry], form: Form) -> None:
        self.storage, self.form = storage, form
        shards = [s for s in shards if s.count > 0]
        self.names = [s.files[form].name for s in shards]
        self.sizes = [s.files[form].bytes for s in shards]
        self.counts = [s.count for s in shards]
        self.starts = np.cumsum([0] + self.counts).astype(np.int64)
        self._starts = self.starts.tolist()
        self._offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            parts = []
            for name, size, count in zip(self.names, self.sizes, self.counts):
                raw = self.storage.read_bytes(index_name(name))
                if len(raw) != 8 * count:  # every row after it would be misread
                    root = getattr(self.storage, "root", self.storage)
                    raise DamagedData(f"{root}/{index_name(name)}: {len(raw) / 8:g} offsets for the {count} records "
                                      "the manifest lists (a damaged index, or the dataset was replaced since it was "
                                      "opened)", root)
                parts += [np.frombuffer(raw, dtype="<u8"), np.array([size], dtype="<u8")]
            self._offsets = np.concatenate(parts).astype(np.int64) if parts else np.zeros(1, dtype=np.int64)
        return self._offsets

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_offsets": None}  # a DataLoader worker reads the indexes itself, on first use

    def read(self, shard: int, rows: Sequence[int] | np.ndarray) -> list[bytes]:
        """Rows `rows` of shard `shard` (any order, repeats allowed), in the order asked."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.counts[shard]):
            raise IndexError(f"{self.names[shard]}: a row of {rows.tolist()} is out of range for "
                             f"{self.counts[shard]} records")
        return self.read_rows(rows + self.starts[shard])

    def read_rows(self, rows: Sequence[int] | np.ndarray) -> list[bytes]:
        """Dataset rows `rows` (any order, any shards, repeats allowed), in the order asked. The reads are issued
        sorted by (shard, offset): sequential for a file system, one batch of ranged reads for an object store."""
        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return []
        shard = np.searchsorted(self.starts[1:], rows, side="right")
        pos = rows + shard
        offsets = self.offsets
        begin, end = offsets[pos], offsets[pos + 1]
        order = np.argsort((shard << 40) | begin, kind="stable")  # by (shard, offset): shards stay below 1 TiB
        names = self.names
        data = self.storage.read_ranges([names[s] for s in shard[order].tolist()], begin[order].tolist(),
                                        end[order].tolist())
        out: list[bytes] = [b""] * len(data)
        for k, blob in zip(order.tolist(), data):
            out[k] = blob
        return out

    def read_one(self, row: int) -> bytes:
        """Dataset row `row` alone (the scalar path of `read_rows`, without its array overhead)."""
        s = bisect.bisect_right(self._starts, row) - 1
        offsets = self.offsets
        return self.storage.read_ranges([self.names[s]], [int(offsets[row + s])], [int(offsets[row + s + 1])])[0]

    def open_stream(self, shard: int) -> BinaryIO:
        return self.storage.stream(self.names[shard], self.sizes[shard])

    def scan(self, shard: int, stream: BinaryIO | None = None) -> Iterator[bytes]:
        """Shard `shard` front to back, read as one stream (`stream`, if already opened): JSONL lines, or each
        record's tar members cut at the index's offsets (a tar shard's media need not fit in memory)."""
        with stream or self.open_stream(shard) as f:
            if self.form == "jsonl":
                yield from f
                return
            base = int(self.starts[shard]) + shard
            bounds = self.offsets[base:base + self.counts[shard] + 1].tolist()
            f.read(bounds[0])  # 0: a tar's first record starts the file
            for begin, end in zip(bounds, bounds[1:]):
                yield f.read(end - begin)

    def scan_all(self) -> Iterator[bytes]:
        """Every shard in order; the next shard's stream is opened (so, remotely, its first chunks requested)
        when the current one starts."""
        n = len(self.names)
        following = self.open_stream(0) if n else None
        try:
            for s in range(n):
                current, following = following, self.open_stream(s + 1) if s + 1 < n else None
                yield from self.scan(s, current)
        finally:
            if following is not None:
                following.close()


def decoder(form: Form) -> Callable[[bytes], Record]:
    """Stored bytes → `Record` for shards of `form` (tar records carry their media bytes in `Media.data`)."""
    return _decode_jsonl if form == "jsonl" else _decode_tar


_decode_jsonl = RECORD_DECODER.decode  # typed: the line's types are checked while it is parsed, in C


def _decode_tar(data: bytes) -> Record:
    record: Record | None = None
    blobs: dict[int, bytes] = {}
    for name, content in tar_members(data):
        parts = name.split(".")
        if parts[-1] == "json" and len(parts) == 2:
            record = _decode_jsonl(content)
        else:
            blobs[int(parts[1])] = content
    assert record is not None, "tar sample without a .json member"
    for i, m in enumerate(record.media):
        m.data = blobs.get(i)
    return record
