"""What every command line of the project shares (`mmdata` and `mmtrain`): user mistakes
(`mmdata.core.errors.UserError`) become one clear line on stderr and exit code 1, anything else is a bug and keeps
its traceback; `--storage-options` parsed without ever echoing a secret."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mmdata.core.errors import InputError, UserError

STORAGE_OPTIONS_HELP = ('fsspec options for URLs, e.g. \'{"endpoint_url": "http://minio:9000", "key": "…", '
                        '"secret": "…"}\' (default: the AWS environment and config); never written anywhere')
STORAGE_OPTIONS: Any = typer.Option(None, "--storage-options", metavar="JSON", help=STORAGE_OPTIONS_HELP)


def parse_storage_options(text: str | None) -> dict[str, Any] | None:
    """`--storage-options` JSON → a dict. The message never echoes the text: it may hold a secret."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise InputError("--storage-options: not valid JSON; expected an object such as "
                         '\'{"endpoint_url": "http://host:9000"}\'') from None
    if not isinstance(value, dict):
        raise InputError(f"--storage-options: expected a JSON object, got {type(value).__name__}")
    return value


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
