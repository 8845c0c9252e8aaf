"""Where a dataset's files live. `mmdata.layout` reads and writes every shard file through this interface only.

`Storage` is what a backend provides: whole-file reads and atomic writes, staged files that become visible under
their final name only on `commit()`, a streaming read for sequential scans, and `read_ranges` — many byte ranges of
many files in one call, which a local backend serves from memory maps and an object store serves as concurrent
ranged GETs. Names are '/'-separated and relative to the dataset root.

A location is a local path or a URL (`s3://bucket/prefix`, any fsspec protocol): `open_storage` picks the backend
(`LocalStorage`, or `mmdata.objectstore.FsspecStorage`) and the helpers below join and relate locations of either
kind. Nothing else in mmdata looks at a location's scheme.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import posixpath
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from mmdata.errors import DatasetChanged
from mmdata.media import write_bytes
from mmdata.outdir import temp_path

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only
_POPULATE_MAX = 256 << 20  # pre-fault JSONL-sized files; a multi-GB tar of images is read a record at a time
_MAX_MAPS = 1024  # bound memory maps on datasets with thousands of shards (vm.max_map_count is ~65k)


Location = str | Path  # a local path, or a URL kept as a string (`Path` would fold `s3://` into `s3:/`)


def is_url(location: Location) -> bool:
    return isinstance(location, str) and "://" in location


def as_location(location: Location) -> Location:
    """A URL as its string (without a trailing '/'), anything else as a `Path`."""
    return location.rstrip("/") if is_url(location) else Path(location)  # type: ignore[union-attr]


def join(location: Location, name: str) -> Location:
    """`name` ('/'-separated, may hold '..') under `location`."""
    if is_url(location):
        scheme, path = str(location).split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(path, name))}"
    return Path(location) / name


def resolve(base: Location, location: Location) -> Location:
    """`location` as given when it is a URL or absolute, else relative to `base` (made absolute when local)."""
    if is_url(location):
        return as_location(location)
    if is_url(base):
        return join(base, str(location)) if not Path(location).is_absolute() else Path(location)
    return (Path(base) / Path(location).expanduser()).resolve()


def relative(location: Location, start: Location) -> str:
    """`location` relative to `start` when both are on one filesystem (one bucket), else `location` itself."""
    if is_url(location) != is_url(start):
        return str(location)
    if not is_url(location):
        return os.path.relpath(location, start)
    (s1, p1), (s2, p2) = (str(x).split("://", 1) for x in (location, start))
    if s1 != s2 or p1.split("/", 1)[0] != p2.split("/", 1)[0]:
        return str(location)
    return posixpath.relpath(p1, p2)


def basename(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def open_storage(location: Location, options: dict[str, Any] | None = None,
                 cache_dir: str | Path | None = None) -> Storage:
    """The backend for `location`. `options` (credentials, endpoint; fsspec's `storage_options`) and `cache_dir`
    (a local block cache for repeated reads) only apply to URLs; options stay in memory, never in a file."""
    if is_url(location):
        from mmdata.objectstore import FsspecStorage

        return FsspecStorage(str(location), options, cache_dir)
    return LocalStorage(location)


def as_storage(where: Location | Storage, options: dict[str, Any] | None = None) -> Storage:
    """`where` itself if it is a `Storage` already, else the backend for that location."""
    return open_storage(where, options) if isinstance(where, (str, Path)) else where


class StagedFile(Protocol):
    """A file being written: invisible under its final name until `commit()`; `abort()` leaves no trace."""

    def write(self, data: bytes) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class Storage(Protocol):
    def where(self, name: str = "") -> str: ...  # `name`'s location, for messages (never a credential)
    def check(self) -> None: ...  # raise a one-line error if the root itself cannot be reached (a missing bucket)
    def empty(self) -> bool: ...  # nothing stored under the root yet
    def clear(self) -> None: ...  # remove everything under the root
    def exists(self, name: str) -> bool: ...
    def read_bytes(self, name: str) -> bytes: ...
    def pin(self, name: str) -> bytes: ...  # read `name` (a manifest); what is read after must belong to it
    def check_pinned(self) -> None: ...  # raise `DatasetChanged` if the pinned manifest changed (after a read)
    def write_bytes(self, name: str, data: bytes) -> None: ...  # atomic: the old content or the new, never half
    def create(self, name: str) -> StagedFile: ...
    def stream(self, name: str, size: int | None = None) -> BinaryIO: ...  # `size`, if known, saves a request
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


Pin = tuple[str, Any, str]  # (the manifest's name, its version as the backend sees it, the sha256 of its bytes)


def take_pin(where: str, name: str, version: Callable[[str], Any], read: Callable[[str], bytes]) -> tuple[Pin, bytes]:
    """Read manifest `name` and pin it: its version (`version(name)`: a stat, an ETag...) taken before and after
    the read agree, so the bytes are that version's.

    A pin makes a reader safe against rebuilds: a build removes or replaces its manifest before it touches any other
    file (in place), or swaps in a whole new folder (`--overwrite`), so a file opened or fetched while the pinned
    manifest is still in place belongs to the pinned build (`check_pin`, after each open or fetch)."""
    for _ in range(10):
        before = version(name)
        data = read(name)
        if version(name) == before:
            return (name, before, hashlib.sha256(data).hexdigest()), data
    raise DatasetChanged(f"{where}/{name} keeps changing while it is read: a build is writing this dataset; open it "
                         "once the build is done")


def check_pin(where: str, pin: Pin, version: Callable[[str], Any], read: Callable[[str], bytes]) -> Pin:
    """`pin`, still valid (updated if its manifest was rewritten with the same bytes: a rerun that changed nothing,
    so the same shards byte for byte); else `DatasetChanged`: what was opened or fetched just before may belong to
    another build."""
    name, then, sha = pin
    now = version(name)
    if now == then:
        return pin
    if now is not None and hashlib.sha256(read(name)).hexdigest() == sha and version(name) == now:
        return name, now, sha
    state = "was removed (a build is rewriting the dataset)" if now is None else "was replaced by a new build"
    raise DatasetChanged(f"{where}: the dataset changed after it was opened ({name} {state}); reading on would mix "
                         "two builds' records: open it again (mmdata.open) once the build is done")


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

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_maps": {}, "_pin": self._pin}  # a worker checks against the build opened

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"
