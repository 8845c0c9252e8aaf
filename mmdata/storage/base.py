"""Where a dataset's files live. The format layer reads and writes every file through this interface only.

`Storage` is what a backend provides: whole-file reads and atomic writes, staged files that become visible under
their final name only on `commit()`, a streaming read for sequential scans, `read_ranges` — many byte ranges of
many files in one call, which a local backend serves from memory maps and an object store serves as concurrent
ranged GETs — and whole files shaped for a parser (`open_file`, `read_array`), so a reader never asks which backend
it has. Names are '/'-separated and relative to the dataset root. `open_storage` picks the backend from the
location (`LocalStorage`, or `FsspecStorage` for a URL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from mmdata.storage.local import LocalStorage
from mmdata.storage.location import Location, is_url
from mmdata.storage.objectstore import FsspecStorage


def open_storage(location: Location, options: dict[str, Any] | None = None,
                 cache_dir: str | Path | None = None) -> Storage:
    """The backend for `location`. `options` (credentials, endpoint; fsspec's `storage_options`) and `cache_dir`
    (a local block cache for repeated reads) only apply to URLs; options stay in memory, never in a file."""
    if is_url(location):
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
    # Many files (media) each written whole, in place, once this returns: only for files that count once something
    # written after them exists (a shard's `.done.json`). A local `source` holding a file's bytes may be linked.
    def put_files(self, files: Sequence[tuple[str, bytes, Path | None]]) -> None: ...
    def stream(self, name: str, size: int | None = None) -> BinaryIO: ...  # `size`, if known, saves a request
    def list(self, folder: str, suffix: str) -> list[str]: ...
    def remove(self, name: str) -> None: ...  # no error if absent
    def read_ranges(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]: ...
    def close(self) -> None: ...
    # Reading whole files the way the backend serves them best (what the read layer asks, never "local or URL?").
    def open_file(self, name: str) -> BinaryIO: ...  # a file for a parser (an image): opened, or fetched in one GET
    def read_array(self, name: str) -> np.ndarray: ...  # a `.npy` file: memory-mapped, or fetched in one GET
    def reachable(self) -> bool: ...  # the root is there to read from (a folder that exists, a prefix with objects)
