"""The builder registry: one dict, name → `Builder`. Every module in `builders/` registers itself on import.

A builder is a source format and nothing else: it splits its input into independent units (one output shard each)
and yields `Record | Reject` for a unit, alone or in batches. Sharding, media checks, resume, workers and the
manifest belong to `mmdata.build`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.schema import Record, Reject

# What a builder's `records` yields: a Record or a Reject per input item, or a list of them (a batch, in order:
# the writer checks and encodes a batch of plain records in a few passes).
Output = Record | Reject | list[Record | Reject]


@dataclass(frozen=True)
class Builder:
    name: str
    help: str
    options: type  # a dataclass; its fields become `mmdata build <name>` flags (see mmdata.cli)
    # units(options, shard_size, limit) -> picklable units, in a stable order; unit k becomes shard k.
    units: Callable[[Any, int, int | None], Sequence[Any]]
    # records(options, unit) -> the unit's records and rejects, alone or in batches; every input item yields
    # exactly one of them.
    records: Callable[[Any, Any], Iterator[Output]]
    # Where the source's media live, referenced in place unless --copy-media (None: the builder makes its media).
    media_root: Callable[[Any], Path | None] = lambda options: None
    # True when records carry media bytes (crops, frames, parquet images): they are stored under <out>/media.
    generates_media: bool = False
    # False when the builder opens its inputs or media with local-only tools (decord, folders): URL options are
    # refused with one message (mmdata.inputs); else URL inputs are staged locally and a URL media root is read
    # through the storage.
    reads_urls: bool = True
    # start(options, shard_size, limit, units) -> units: in the build's main process after planning, before any shard
    # is written: background work the shards wait for (cc12m's download). Planning itself has no side effects.
    start: Callable[[Any, int, int | None, list[Any]], list[Any]] | None = None
    # ready(options, unit) -> whether the unit's input is complete (cc12m: its download shard); the build starts
    # a unit only once it is, so workers never wait. Raises when it never will be (the download died).
    ready: Callable[[Any, Any], bool] | None = None
    # finish(options, out): after every shard is written, before the manifest; e.g. to keep a tool's own reports.
    # `out` is the dataset's `mmdata.storage.Storage` (a local folder or a URL prefix).
    finish: Callable[[Any, Any], None] | None = None


BUILDERS: dict[str, Builder] = {}


def register(builder: Builder) -> Builder:
    if builder.name in BUILDERS and BUILDERS[builder.name] is not builder:
        raise ValueError(f"builder {builder.name!r} is registered twice")
    BUILDERS[builder.name] = builder
    return builder


def discover() -> dict[str, Builder]:
    """Import every module of the `builders` package (each registers itself) and return the registry."""
    import builders

    for info in pkgutil.iter_modules(builders.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"builders.{info.name}")
    return BUILDERS


def get(name: str) -> Builder:
    """The builder `name`. Its module is imported alone when it is named after it (every shipped builder is), so a
    worker process does not import every other builder's dependencies; otherwise all modules are searched."""
    if name not in BUILDERS:
        try:
            importlib.import_module(f"builders.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"builders.{name}":
                raise
    if name in BUILDERS:
        return BUILDERS[name]
    found = discover()
    if name not in found:
        raise KeyError(f"unknown builder {name!r}; available: {', '.join(sorted(found))}")
    return found[name]
