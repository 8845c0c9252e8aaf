"""The project's error types. A `UserError` is a mistake the user can fix (a flag, an input file, a recipe, a
model directory): the command lines print its message as one line and exit 1. Any other exception is a bug and
keeps its traceback, so raise a `UserError` (or a subclass) for everything a user can cause, naming what, where
and how to fix it.
"""

from __future__ import annotations


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
