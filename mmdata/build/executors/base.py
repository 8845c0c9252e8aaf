"""What every executor shares: a build's `Job`, a unit to run (`Todo`), and `run_unit`, the one function that
writes a shard from a unit wherever it runs, so what a shard holds never depends on the executor, the node or the
worker count; only its `.done.json` says where it was written (`node`). While a unit runs, `<out>/.running/
NNNNNN.json` names the node and process writing it (`ls <out>/.running` shows a cluster's stragglers); the driver
removes the folder."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import typing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import orjson

from mmdata.build.freshness import fingerprint_spans
from mmdata.build.registry import get
from mmdata.build.writer import ShardConfig, write_shard
from mmdata.core.errors import InputError
from mmdata.format.names import RUNNING, SHARDS, running_name
from mmdata.format.shards import ShardResult
from mmdata.storage.base import open_storage
from mmdata.storage.output import Destination

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = typing.get_args(Engine)


_POLL = 0.2  # seconds between checks of units that are not ready yet (cc12m: download shards still arriving)


Ready = Callable[[Any], bool]


class ExecutorError(InputError):
    """The executor cannot run the build (no cluster, a node that cannot see a path); the message says the fix."""


@dataclass(frozen=True)
class Job:
    """What every unit of one build shares; plain data so it crosses process and machine boundaries."""

    builder: str
    options: Any
    cfg: ShardConfig


class Todo(NamedTuple):
    """One unit to run: its shard index, the unit, and its inputs for `.done.json` (`Provenance.pending`)."""

    index: int
    unit: Any
    inputs: dict[str, Any]


def run_unit(job: Job, todo: Todo, node: dict[str, Any]) -> ShardResult:
    """Write shard `todo.index` from its unit, wherever this runs (`node` says where, for `.done.json`)."""
    index = todo.index
    storage = open_storage(job.cfg.out, job.cfg.storage_options)
    marker = running_name(index)
    storage.write_bytes(marker, orjson.dumps({**node, "started": time.time()}))
    try:
        # Hashed beside the conversion (reading and sha256 release the GIL); `.done.json` waits for it.
        with ThreadPoolExecutor(1, thread_name_prefix="fingerprint") as pool:
            inputs = pool.submit(fingerprint_spans, todo.inputs)
            return write_shard(job.cfg, index, get(job.builder).records(job.options, todo.unit), node=node,
                               inputs=inputs.result)
    finally:
        storage.remove(marker)


def tidy(dest: Destination) -> None:
    """After every unit is done: drop the running markers and the temporary files of processes killed mid-shard
    (their retries wrote the shard under its final name)."""
    dest.discard(RUNNING)
    dest.discard_temp((SHARDS,))


def local_node() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class Executor(Protocol):
    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: Any) -> None: ...

    def check_paths(self, paths: list[tuple[str, Path]]) -> None:
        """Fail before any work if a worker cannot see one of `paths` ((flag, path) pairs)."""

    def run(self, job: Job, todo: list[Todo], ready: Ready | None) -> Iterator[ShardResult]:
        """Run each (index, unit) once it is `ready`; yield the results as they complete, in any order."""


class _Pending:
    """The units not submitted yet, handed out as they become ready, in plan order among the ready ones."""

    def __init__(self, todo: list[Todo], ready: Ready | None) -> None:
        self.todo, self.ready = deque(todo), ready

    def __bool__(self) -> bool:
        return bool(self.todo)

    def take(self, n: int) -> list[Todo]:
        if self.ready is None:  # popleft: a build of 100k per-video units must not copy its list per task
            return [self.todo.popleft() for _ in range(min(n, len(self.todo)))]
        out: list[Todo] = []
        keep: deque[Todo] = deque()
        for item in self.todo:
            (out if len(out) < n and self.ready(item.unit) else keep).append(item)
        self.todo = keep
        return out


def shared_paths(options: Any, out: Path | None) -> list[tuple[str, Path]]:
    """The paths every worker must see, as (flag, path): each path-valued builder option that exists on the
    driver, and `out` (`Destination.shared_folder`: None for a URL, which every node reaches by itself)."""
    paths: list[tuple[str, Path]] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, Path) and v.exists():
                paths.append((flag, v.resolve()))
    return paths if out is None else [*paths, ("--out", out)]
