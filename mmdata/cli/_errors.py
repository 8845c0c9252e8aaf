"""User mistakes (`mmdata.errors.UserError`) become one clear line on stderr and exit code 1; anything else is a
bug and keeps its traceback. Shared by `mmdata` and `mmtrain`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mmdata.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as e:
            typer.secho(f"error: {e}", err=True, fg="red")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
