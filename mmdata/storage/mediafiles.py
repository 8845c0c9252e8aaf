"""Reading media files under a media root (a local folder or a URL): the path must stay inside the root, checked on
the name (and, locally, through symlinks) before anything is opened; a letter-case mismatch with the disk is
resolved. Also what a writer asks of a media root: that it exists (`open_media_root`) and which local file to link
when media are copied (`local_file`)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from mmdata.core.errors import NotFound
from mmdata.core.media import MediaError, check_bytes, check_name
from mmdata.storage.base import open_storage
from mmdata.storage.location import Location, is_url


def check_file(path: Path) -> tuple[int, int, str]:
    """Like `check_bytes` for a file on disk; a missing file is a `MediaError` naming the path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MediaError(f"{path}: media file not found") from None
    except IsADirectoryError:
        raise MediaError(f"{path}: is a directory, not a media file") from None
    return check_bytes(data, str(path))


def open_media_root(root: Location, storage_options: dict[str, Any] | None = None) -> Location:
    """`root` as media are read from it: a local folder made absolute, or a URL whose bucket exists (`NotFound`
    naming it otherwise)."""
    if is_url(root):
        open_storage(root, storage_options).check()
        return root
    path = Path(root).resolve()
    if not path.is_dir():
        raise NotFound(f"{path}: directory not found")
    return path


def local_file(root: Location | None, rel: str, what: str) -> Path | None:
    """The local file media `rel` under `root` is read from (symlinks followed, checked by `inside`), which a local
    output links instead of copying; None under a URL root, which has no local file."""
    if root is None or is_url(root):
        return None
    return inside(Path(root), rel, what)


def read_media(root: Path | str | None, rel: str, what: str,
               storage_options: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """The bytes of `rel` under the media root, and its on-disk spelling: when `rel` is not there as written, a
    letter-case mismatch is resolved (`resolve_case`). The path must stay inside the root (`inside`), checked
    before anything is opened. A `MediaError` starting with `what` says why not.

    A URL root (`s3://bucket/prefix`) is read through its storage, one GET per file, after the same checks on the
    name (no request is made for a refused name); letter case is resolved on a miss only, by listing."""
    if root is None:
        raise MediaError(f"{what}: no media root given (pass --media-root)")
    if isinstance(root, str) and "://" in root:
        return _read_remote(root, rel, what, storage_options)
    try:
        path = inside(root, rel, what)
        if not path.is_file():
            found = resolve_case(root, rel)
            if found is None or not inside(root, found, what).is_file():
                raise MediaError(f"{what}: file not found under media root {root}")
            rel, path = found, inside(root, found, what)
        return path.read_bytes(), rel
    except OSError as e:
        raise MediaError(f"{what}: cannot be read ({e.strerror or e})") from None


def inside(root: Path, rel: str, what: str) -> Path:
    """`root / rel` with symlinks followed, if it stays inside `root`; else a `MediaError` starting with `what`
    (which names the path) says why. Nothing is opened: an absolute path, `..`, a NUL byte, a component too long
    for any filesystem, or a symlink leaving the root is refused from the name alone."""
    check_name(rel, what)
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, rel))
    if real != base and not real.startswith(base.rstrip("/") + "/"):
        raise MediaError(f"{what}: resolves to {real} (through a symlink), outside the media root {base}")
    return Path(real)


_REMOTE: dict[str, Any] = {}  # one storage (one connection pool) per URL media root, per process


def _read_remote(root: str, rel: str, what: str, storage_options: dict[str, Any] | None) -> tuple[bytes, str]:
    """`read_media` under a URL: one GET; on a miss only, one listing per path component to resolve letter case."""
    check_name(rel, what)  # before any request
    if root not in _REMOTE:  # the storage itself reconnects in a forked process
        _REMOTE[root] = open_storage(root, storage_options)
    store = _REMOTE[root]
    try:
        return bytes(store.read_bytes(rel)), rel
    except NotFound:
        pass
    folder = ""
    for part in PurePosixPath(rel).parts:
        names = [n.rsplit("/", 1)[-1] for n in store.list(folder, "")]
        matches = [n for n in names if n == part] or sorted(n for n in names if n.lower() == part.lower())
        if not matches:
            raise MediaError(f"{what}: file not found under media root {root}")
        folder = f"{folder}/{matches[0]}" if folder else matches[0]
    try:
        return bytes(store.read_bytes(folder)), folder
    except NotFound:  # a "folder" of that name, not an object
        raise MediaError(f"{what}: file not found under media root {root}") from None


def resolve_case(root: Path, rel: str) -> str | None:
    """Find `rel` under `root` ignoring letter case, component by component; the on-disk spelling, or None.

    Some Cambrian sub-sources name files in a different case than their JSON does.
    """
    current = root
    parts: list[str] = []
    for part in Path(rel).parts:
        exact = current / part
        if exact.exists():
            parts.append(part)
            current = exact
            continue
        try:
            matches = sorted(e for e in os.listdir(current) if e.lower() == part.lower())
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not matches:
            return None
        parts.append(matches[0])
        current = current / matches[0]
    return "/".join(parts)
