"""User mistakes become one clear line on stderr and exit code 1; bugs keep their traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, NotADirectoryError, IsADirectoryError, PermissionError)


def user_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            typer.secho(f"error: {message}", err=True, fg="red")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
