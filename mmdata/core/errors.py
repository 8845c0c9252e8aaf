"""The project's error types. A `UserError` is a mistake the user can fix (a flag, an input file, a recipe, a
model directory): the command lines print its message as one line and exit 1. Any other exception is a bug and
keeps its traceback, so raise a `UserError` (or a subclass) for everything a user can cause, naming what, where
and how to fix it.

Disk full, quota exceeded, read-only or not permitted is a `StorageError`: writers wrap their output in
`writing(path, hint)`, which turns those failures into one line naming the path and how to go on. The error keeps
the errno (it is an `OSError`) and crosses process boundaries (worker processes of a build). What was complete
stays complete: the hint says how to resume."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Base of every error a user can fix; the CLIs show its message alone."""


class InputError(UserError, ValueError):
    """An input, flag, option or setting is wrong (a ValueError too, for callers that catch those)."""


class NotFound(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (a FileNotFoundError too)."""


class DamagedData(UserError):
    """Stored bytes of a built dataset cannot be read back (a truncated, edited or swapped file). `problem` says
    which file and record, the message adds what to do."""

    def __init__(self, problem: str, root: object) -> None:
        super().__init__(f"{problem}; the dataset is damaged: `mmdata validate {root}` lists every problem, and a "
                         "rebuild repairs it")
        self.problem = problem


class DatasetChanged(UserError):
    """A dataset's files changed after it was opened (rebuilt in place, replaced by `--overwrite`, or a rerun over
    changed inputs): reading on would mix the old build's records with the new one's."""


STORAGE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM))


# torch.save and DeepSpeed report a failed write as a RuntimeError from their C++ stream writer.
_TORCH_WRITE = ("file write failed", "No space left on device", "Read-only file system", "Disk quota exceeded")


class StorageError(UserError, OSError):
    """An output could not be written for a reason outside the program (space, permissions, read-only)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type, tuple[str, int | None]]:
        return StorageError, (str(self), self.code)


def as_storage_error(e: BaseException, path: Path | str, hint: str) -> StorageError | None:
    """`e` as a one-line `StorageError` if it is a storage failure, else None."""
    if isinstance(e, StorageError):
        return e
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
        where = e.filename or path
        return StorageError(f"{where}: {e.strerror or e}; {hint}", e.errno)
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE):
        return StorageError(f"{path}: write failed ({str(e).splitlines()[-1].strip()[:160]}); {hint}")
    return None


@contextmanager
def writing(path: Path | str, hint: str) -> Iterator[None]:
    """Turn storage failures inside the block into a `StorageError` naming `path` (or the failing file)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        err = as_storage_error(e, path, hint)
        if err is None:
            raise
        raise err from None
