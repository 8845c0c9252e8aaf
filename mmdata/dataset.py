"""Read a built dataset lazily: `mmdata.open(path)` → `len`, `[i]`, iteration, `to_pandas()`, images.

Opening reads the manifest and the (tiny) per-shard indexes, never the records: memory stays flat in dataset size.
`[i]` is one seek + one read through the uint64 byte-offset index, for JSONL shards and webdataset tars alike.
"""

from __future__ import annotations

import bisect
import io
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from mmdata.errors import NotFound
from mmdata.manifest import Manifest
from mmdata.media import to_rgb
from mmdata.schema import Record

_EMPTY = np.zeros(0, dtype="<u8")


class Dataset(Sequence[Record]):
    """A built dataset. Records come from the JSONL shards when present, else from the webdataset tars (whose
    records carry their media bytes in `Media.data`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = Manifest.load(self.root)
        self.form = "jsonl" if "jsonl" in self.manifest.formats else "wds"
        self.media_root = self.manifest.resolve_media_root(self.root)
        self._shards = [s for s in self.manifest.shards if s["count"] > 0]
        self._starts = list(np.cumsum([0] + [s["count"] for s in self._shards]))
        self._offsets: dict[int, np.ndarray] = {}
        self._files: dict[int, int] = {}  # shard -> OS file descriptor, read with pread (fork-safe, no shared offset)

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> Record:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("slices are not supported; use itertools.islice or a list of indices")
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record index {i} out of range for a dataset of {n} records")
        s = bisect.bisect_right(self._starts, i) - 1
        return self._read(s, i - int(self._starts[s]))

    def __iter__(self) -> Iterator[Record]:
        for s, shard in enumerate(self._shards):
            if self.form == "jsonl":
                with open(self.root / shard["files"]["jsonl"]["name"], "rb") as f:
                    for line in f:
                        yield Record.from_dict(orjson.loads(line))
            else:
                for j in range(shard["count"]):
                    yield self._read(s, j)

    def raw(self, i: int) -> bytes:
        """The stored bytes of record `i` (its JSON line, or its tar members), undecoded."""
        s = bisect.bisect_right(self._starts, i) - 1
        fd, start, end = self._span(s, i - int(self._starts[s]))
        return os.pread(fd, end - start, start)

    # ---------------------------------------------------------------- storage
    def _index(self, s: int) -> np.ndarray:
        if s not in self._offsets:
            shard = self._shards[s]
            name = shard["files"][self.form]["name"]
            idx = self.root / (name[:-6] + ".idx" if self.form == "jsonl" else name + ".idx")
            # Memory-mapped: only the pages of records actually touched are ever resident.
            self._offsets[s] = np.memmap(idx, dtype="<u8", mode="r") if idx.stat().st_size else _EMPTY
        return self._offsets[s]

    def _file(self, s: int) -> int:
        fd = self._files.get(s)
        if fd is None:
            if len(self._files) >= 64:  # bound open file handles on datasets with thousands of shards
                os.close(self._files.pop(next(iter(self._files))))
            fd = self._files[s] = os.open(self.root / self._shards[s]["files"][self.form]["name"], os.O_RDONLY)
        return fd

    def _span(self, s: int, j: int) -> tuple[int, int, int]:
        offsets = self._index(s)
        end = int(offsets[j + 1]) if j + 1 < len(offsets) else self._shards[s]["files"][self.form]["bytes"]
        return self._file(s), int(offsets[j]), end

    def _read(self, s: int, j: int) -> Record:
        fd, start, end = self._span(s, j)
        data = os.pread(fd, end - start, start)
        if self.form == "jsonl":
            return Record.from_dict(orjson.loads(data))
        return _record_from_tar(data)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dataloader workers: each process opens its own file handles.
        state = self.__dict__.copy()
        state["_files"] = {}
        state["_offsets"] = {}  # memory maps are reopened, not copied into the pickle
        return state

    # ---------------------------------------------------------------- media
    def media_path(self, record: Record, j: int) -> Path:
        if self.media_root is None:
            raise NotFound(f"{self.root}: dataset has no media root")
        return self.media_root / record.media[j].path

    def image(self, record: Record, j: int) -> Image.Image:
        """Media `j` of `record` as shown, in 8-bit RGB (from the tar bytes or the media root): EXIF rotation
        applied, 16-bit and float samples scaled rather than clipped."""
        m = record.media[j]
        src: Any = io.BytesIO(m.data) if m.data is not None else self.media_path(record, j)
        with Image.open(src) as im:
            return to_rgb(im)

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        from mmdata.inspect import records_frame

        return records_frame(self, limit)

    def __repr__(self) -> str:
        m = self.manifest
        return f"Dataset({str(self.root)!r}, builder={m.builder!r}, records={len(self)}, form={self.form!r})"


def _record_from_tar(data: bytes) -> Record:
    """Parse one record's tar members (`<key>.json`, `<key>.<i>.<ext>`) into a Record with media bytes attached."""
    record: Record | None = None
    blobs: dict[int, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            content = tar.extractfile(member)
            assert content is not None, member.name
            parts = member.name.split(".")
            if parts[-1] == "json" and len(parts) == 2:
                record = Record.from_dict(orjson.loads(content.read()))
            else:
                blobs[int(parts[1])] = content.read()
    assert record is not None, "tar sample without a .json member"
    for i, m in enumerate(record.media):
        m.data = blobs.get(i)
    return record


def open_dataset(path: str | Path) -> Any:
    """Open a built dataset or a mixture directory (anything with `len`, `[i]`, iteration and `to_pandas()`)."""
    root = Path(path)
    if (root / "mixture.json").is_file():
        from mmdata.mixture import Mixture  # type: ignore[import-not-found]

        return Mixture(root)
    return Dataset(root)
