"""The builder registry: name → `Builder`, from the Python entry-point group `mmdata.builders`.

A package adds a builder by declaring an entry point that names its `Builder` object; the ones shipped here are
declared in this project's `pyproject.toml` the same way:

    [project.entry-points."mmdata.builders"]
    cambrian = "builders.cambrian:BUILDER"

Nothing is imported until a builder is asked for: `get(name)` loads that one entry point (a worker process imports
only the builder it runs), `discover()` all of them (for `mmdata build --help`). `register` adds one at run time
(tests); it lives only in the process that called it.

A builder is a source format and nothing else: it splits its input into independent units (one output shard each)
and yields `Record | Reject` for a unit, alone or in batches. Sharding, media checks, resume, workers and the
manifest belong to the build driver.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from mmdata.core.schema import Record, Reject

# What a builder's `records` yields: a Record or a Reject per input item, or a list of them (a batch, in order:
# the writer checks and encodes a batch of plain records in a few passes).
Output = Record | Reject | list[Record | Reject]


@dataclass(frozen=True)
class Builder:
    name: str
    help: str
    options: type  # a dataclass; its fields become `mmdata build <name>` flags (see mmdata.core.flags)
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
    # refused with one message (mmdata.build.inputs); else URL inputs are staged locally and a URL media root is read
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


GROUP = "mmdata.builders"


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _load(name: str, ep: EntryPoint) -> Builder:
    builder = ep.load()
    if not isinstance(builder, Builder) or builder.name != name:
        raise TypeError(f"entry point {name} = {ep.value!r} (group {GROUP}) must name a Builder whose name is "
                        f"{name!r}, got {builder!r}")
    return register(builder)


def discover() -> dict[str, Builder]:
    """Every builder: those registered through the entry points, loaded, and those registered at run time."""
    for name, ep in _entry_points().items():
        if name not in BUILDERS:
            _load(name, ep)
    return BUILDERS


def get(name: str) -> Builder:
    """The builder `name`; only its own entry point is loaded."""
    if name not in BUILDERS and name in _entry_points():
        _load(name, _entry_points()[name])
    if name not in BUILDERS:
        known = sorted(set(_entry_points()) | set(BUILDERS))
        raise KeyError(f"unknown builder {name!r}; available: {', '.join(known)}")
    return BUILDERS[name]
