"""Where a dataset's files live. `mmdata.layout` reads and writes every shard file through this interface only.

`Storage` is what a backend provides: whole-file reads and atomic writes, staged files that become visible under
their final name only on `commit()`, a streaming read for sequential scans, and `read_ranges` — many byte ranges of
many files in one call, which a local backend serves from memory maps and an object store serves as concurrent
ranged GETs. Names are '/'-separated and relative to the dataset root. `LocalStorage` is the only backend today.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mmdata.media import write_bytes
from mmdata.outdir import temp_path

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only
_POPULATE_MAX = 256 << 20  # pre-fault JSONL-sized files; a multi-GB tar of images is read a record at a time
_MAX_MAPS = 1024  # bound memory maps on datasets with thousands of shards (vm.max_map_count is ~65k)


class StagedFile(Protocol):
    """A file being written: invisible under its final name until `commit()`; `abort()` leaves no trace."""

    def write(self, data: bytes) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Storage(Protocol):
    def exists(self, name: str) -> bool: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...  # atomic: the old content or the new, never half
    def create(self, name: str) -> StagedFile: ...
    def stream(self, name: str) -> BinaryIO: ...
    def list(self, folder: str, suffix: str) -> list[str]: ...
    def remove(self, name: str) -> None: ...  # no error if absent
    def read_ranges(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]: ...
    def close(self) -> None: ...


class _LocalStaged:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temp_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.tmp, "wb")

    def write(self, data: bytes) -> int:
        return self.f.write(data)

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails again
            self.f.close()
        self.tmp.unlink(missing_ok=True)


class LocalStorage:
    """A directory on a local filesystem. Random reads slice memory maps: O(1), no system call, no file offset
    shared with a forked DataLoader worker (maps are not pickled; a spawned worker maps the files again)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._maps: dict[str, mmap.mmap] = {}

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write_bytes(self, name: str, data: bytes) -> None:
        write_bytes(data, self.root / name)

    def create(self, name: str) -> _LocalStaged:
        return _LocalStaged(self.root / name)

    def stream(self, name: str) -> BinaryIO:
        return open(self.root / name, "rb")

    def list(self, folder: str, suffix: str) -> list[str]:
        return sorted(f"{folder}/{p.name}" for p in (self.root / folder).glob(f"*{suffix}"))

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def read_ranges(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        maps, out = self._maps, []
        for name, start, end in zip(names, starts, ends):
            m = maps.get(name) or self._map(name)
            out.append(m[start:end])
        return out

    def _map(self, name: str) -> mmap.mmap:
        if len(self._maps) >= _MAX_MAPS:
            self._maps.pop(next(iter(self._maps))).close()
        with open(self.root / name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # Pre-faulting a shard costs one pass over pages already cached and saves a page fault on nearly
            # every random read after it.
            flags = mmap.MAP_SHARED | (_POPULATE if size <= _POPULATE_MAX else 0)
            m = self._maps[name] = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        return m

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_maps": {}}

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"
