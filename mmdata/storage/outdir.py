"""Output directory safety for `mmdata build` and `mmdata mix`: one writer at a time, replacements that a kill
cannot lose, and the leftovers of killed runs cleaned up by the next one.

Next to an output `<dir>/<name>` live, while a run needs them, three hidden siblings:
    .<name>.mmdata-lock   held (flock) by the running writer; holds its PID for the message a second writer gets
    .<name>.mmdata-new    a replacement being built (`--overwrite`, a re-mix); swapped in once complete
    .<name>.mmdata-old    the previous output, between the two renames of a swap, then deleted

A swap is two renames (`<name>` → old, new → `<name>`), then old is deleted. A kill at any point leaves either
`<name>` or a complete new one plus the old one; `recover` (run under the lock, at the start of the next run)
finishes or undoes the swap, so the old and the new output are never both lost. Readers that opened the old output
keep reading it: their open files and memory maps stay on the old inodes after the rename and the delete.

Local file systems only (flock, rename): an object store has neither. Writers reach these mechanics through
`mmdata.storage.output.Destination`, which gives a URL prefix its own scheme behind the same calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from mmdata.core.errors import UserError

_LOCK, _NEW, _OLD = ".mmdata-lock", ".mmdata-new", ".mmdata-old"


class Busy(UserError):
    """Another process is writing the same output."""


def _sibling(out: Path, suffix: str) -> Path:
    out = Path(out).absolute()
    return out.with_name(f".{out.name}{suffix}")


def staging(out: Path) -> Path:
    """Where a replacement of `out` is built before `swap_in`."""
    return _sibling(out, _NEW)


@contextlib.contextmanager
def locked(out: Path, what: str) -> Iterator[None]:
    """Hold the output lock of `out` for the block; a second writer gets `Busy` naming this process.

    flock is released by the kernel when its holder dies, however it dies: a lock left by a killed run is simply
    taken over (its file still names the dead PID until then).
    """
    path = _sibling(out, _LOCK)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise Busy(f"{out}: another {holder.get('what', 'mmdata run')} is writing here (PID "
                       f"{holder.get('pid', '?')}, lock {path}); wait for it to finish or stop that process") from None
        # The holder we waited on may have removed the file between our open and our lock: lock the live file.
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps({"pid": os.getpid(), "what": what, "argv": sys.argv}))
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _holder(fd: int) -> dict[str, object]:
    try:
        data = orjson.loads(os.pread(fd, 1 << 16, 0))
        return data if isinstance(data, dict) else {}
    except (OSError, orjson.JSONDecodeError):
        return {}  # the holder has not written its PID yet


def recover(out: Path, complete: str) -> None:
    """Finish or undo a swap a killed run left halfway (`complete`: the file that marks a finished output) and
    delete the replacement a killed run was building. Call under `locked(out)`."""
    out = Path(out).absolute()
    new, old = _sibling(out, _NEW), _sibling(out, _OLD)
    if old.exists():
        if not out.exists():  # killed between the two renames
            os.rename(new if (new / complete).is_file() else old, out)
        _remove(old)
    if new.exists():
        _remove(new)


def swap_in(new: Path, out: Path) -> None:
    """Replace `out` by the complete output `new` (see the module docstring for what a kill leaves)."""
    out = Path(out).absolute()
    old = _sibling(out, _OLD)
    _remove(old)
    if out.exists():
        os.rename(out, old)
    os.rename(new, out)
    _remove(old)


def clear_temp_files(root: Path, folders: tuple[str, ...]) -> None:
    """Delete the `*.tmp` files (`temp_path`) killed runs on any host left in `root` and its `folders` (staged
    shards, half-written JSON). Under the lock, no live run owns one. (A media tree is not walked: it can hold
    millions of files.)"""
    for folder in folders:
        for tmp in (Path(root) / folder).glob("*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
