"""Helpers for builder option dataclasses: a field's help text and flag name become the CLI flag."""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def opt(default: Any = MISSING, *, help: str, flag: str | None = None, factory: Any = MISSING) -> Any:
    """A builder option: `default` (or `factory`) and the help text `mmdata build <name> --help` shows."""
    metadata = {"help": help, "flag": flag}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)
