"""`LocalStorage`: a dataset in a local directory, behind `mmdata.storage.base.Storage`. Random reads slice memory maps:
O(1), no system call, no file offset shared with a forked DataLoader worker."""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mmdata.storage.files import place, temp_path, write_bytes
from mmdata.storage.pin import Pin, check_pin, take_pin

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only
_POPULATE_MAX = 256 << 20  # pre-fault JSONL-sized files; a multi-GB tar of images is read a record at a time
_MAX_MAPS = 1024  # bound memory maps on datasets with thousands of shards (vm.max_map_count is ~65k)


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
        self._pin: Pin | None = None

    def path(self, name: str) -> Path:
        return self.root / name

    def where(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    def check(self) -> None:
        pass

    def empty(self) -> bool:
        return not self.root.is_dir() or not any(self.root.iterdir())

    def clear(self) -> None:
        for child in self.root.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read_bytes(self, name: str) -> bytes:
        data = self._read(name)
        self.check_pinned()
        return data

    def pin(self, name: str) -> bytes:
        """Read `name` (the manifest) and pin it (`take_pin`): every file read or opened through this storage
        afterwards is checked to belong to its build, with one `stat` of the manifest."""
        self._pin, data = take_pin(str(self.root), name, self._stat, self._read)
        return data

    def _read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def _stat(self, name: str) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.root / name)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def check_pinned(self) -> None:
        if self._pin is not None:
            self._pin = check_pin(str(self.root), self._pin, self._stat, self._read)

    def write_bytes(self, name: str, data: bytes) -> None:
        write_bytes(data, self.root / name)

    def create(self, name: str) -> _LocalStaged:
        return _LocalStaged(self.root / name)

    def put_files(self, files: Sequence[tuple[str, bytes, Path | None]]) -> None:
        """Each file linked from its `source` when it has one (free: a hard link, else a copy), else written in place:
        not via temp + rename, since a rerun of an unfinished shard rewrites the same paths."""
        for name, data, source in files:
            dst = self.root / name
            if source is not None:
                place(source, dst)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(data)

    def stream(self, name: str, size: int | None = None) -> BinaryIO:
        f = open(self.root / name, "rb")
        try:
            self.check_pinned()
        except BaseException:
            f.close()
            raise
        return f

    def list(self, folder: str, suffix: str) -> list[str]:
        return sorted(f"{folder}/{p.name}" if folder else p.name for p in (self.root / folder).glob(f"*{suffix}"))

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
            m = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        try:
            self.check_pinned()
        except BaseException:
            m.close()
            raise
        self._maps[name] = m
        return m

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()

    # ---------------------------------------------------------------- whole files for a parser (the read layer)
    def open_file(self, name: str) -> BinaryIO:
        """`name` opened for a parser that reads it whole (an image decoder reads what it needs, when it needs it)."""
        return self.stream(name)

    def read_array(self, name: str) -> np.ndarray:
        """A `.npy` file as a read-only memory map: pages are read on demand and shared between processes."""
        array = np.load(self.root / name, mmap_mode="r", allow_pickle=False)
        self.check_pinned()
        return array

    def reachable(self) -> bool:
        return self.root.is_dir()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_maps": {}, "_pin": self._pin}  # a worker checks against the build opened

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"
