"""Disk full, quota exceeded, read-only or not permitted: one line naming the path and how to go on, not a traceback.

Writers wrap their output in `writing(path, hint)`; the error keeps the errno (it is an `OSError`) and crosses
process boundaries (worker processes of a build). What was complete stays complete: the hint says how to resume.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmdata.errors import UserError

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
