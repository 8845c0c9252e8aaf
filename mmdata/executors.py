"""Executors: who runs a build's units (one unit → one shard). The driver (`mmdata.build`) plans the units, skips
the finished shards and hands the rest to an executor, which yields each `ShardResult` as it completes.

- `LocalExecutor`: this machine, in-line or a spawn process pool of `--workers` processes (today's default).
- `RayExecutor`: one Ray task per unit on a Ray cluster (`--engine ray --ray-address auto|HOST:PORT`). Every node
  reaches the inputs and `--out` at the same path (a shared filesystem); this is checked before any work starts.

Both run the same `run_unit`, so what a shard holds never depends on the executor, the node or the worker count;
only its `.done.json` says where it was written (`node`). While a unit runs, `<out>/.running/NNNNNN.json` names the
node and process writing it (`ls <out>/.running` shows a cluster's stragglers); the driver removes the folder.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

from mmdata.errors import InputError
from mmdata.freshness import fingerprint_spans
from mmdata.layout import SHARDS, ShardResult, shard_name
from mmdata.orphans import exit_with_parent
from mmdata.registry import get
from mmdata.storage import LocalStorage, Location, Storage, is_url, open_storage
from mmdata.writer import ShardConfig, write_shard

ENGINES = ("local", "ray")
RUNNING = ".running"
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
    marker = f"{RUNNING}/{shard_name(index)}.json"
    storage.write_bytes(marker, orjson.dumps({**node, "started": time.time()}))
    try:
        # Hashed beside the conversion (reading and sha256 release the GIL); `.done.json` waits for it.
        with ThreadPoolExecutor(1, thread_name_prefix="fingerprint") as pool:
            inputs = pool.submit(fingerprint_spans, todo.inputs)
            return write_shard(job.cfg, index, get(job.builder).records(job.options, todo.unit), node=node,
                               inputs=inputs.result)
    finally:
        storage.remove(marker)


def tidy(storage: Storage) -> None:
    """After every unit is done: drop the running markers and the temporary files of processes killed mid-shard
    (their retries wrote the shard under its final name; an object store has no such files)."""
    if not isinstance(storage, LocalStorage):
        for name in storage.list(RUNNING, ".json"):
            storage.remove(name)
        return
    shutil.rmtree(storage.root / RUNNING, ignore_errors=True)
    for tmp in (storage.root / SHARDS).glob("*.tmp"):
        tmp.unlink(missing_ok=True)


def local_node() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class Executor(Protocol):
    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: Any) -> None: ...

    def check_paths(self, paths: list[tuple[str, Path]]) -> None:
        """Fail before any work if a worker cannot see one of `paths` ((flag, path) pairs)."""

    def run(self, job: Job, todo: list[Todo], ready: Ready | None) -> Iterator[ShardResult]:
        """Run each (index, unit) once it is `ready`; yield the results as they complete, in any order."""


def make_executor(engine: str, workers: int = 1, ray_address: str = "auto") -> Executor:
    if engine == "local":
        return LocalExecutor(workers)
    if engine == "ray":
        return RayExecutor(ray_address)
    raise ExecutorError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


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


class LocalExecutor:
    """This machine: the driver itself for one worker (or one unit); for N workers, the driver and a spawn pool of
    N - 1 processes."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def check_paths(self, paths: list[tuple[str, Path]]) -> None:
        pass  # the driver is the only machine; the builders report a missing path themselves

    def run(self, job: Job, todo: list[Todo], ready: Ready | None) -> Iterator[ShardResult]:
        pending = _Pending(todo, ready)
        if self.workers == 1 or len(todo) <= 1:
            while pending:
                batch = pending.take(1)
                if not batch:
                    time.sleep(_POLL)
                for item in batch:
                    yield run_unit(job, item, local_node())
            return
        ctx = multiprocessing.get_context("spawn")
        helpers = self.workers - 1  # the driver is a worker too: N workers are N processes, none of them idle
        # exit_with_parent: a `kill -9` of the build must not leave its workers running on.
        with ProcessPoolExecutor(helpers, mp_context=ctx, initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for _ in range(helpers):  # start them now, while units may still be waiting to become ready
                pool.submit(_warm, job)
            running: set[Future[ShardResult]] = set()
            while pending or running:
                for item in pending.take(2 * helpers - len(running)):
                    running.add(pool.submit(_run_local, job, item))
                finished = {fut for fut in running if fut.done()}
                running -= finished
                for fut in finished:
                    yield fut.result()
                mine = pending.take(1)
                if mine:  # the pool has its next units queued meanwhile
                    yield run_unit(job, mine[0], local_node())
                elif running:
                    done, running = wait(running, timeout=_POLL if pending else None, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
                else:
                    time.sleep(_POLL)  # units that are not ready yet


def _warm(job: Job) -> None:
    """A helper's start-up (its imports, the builder's included), done as the pool starts: while the driver waits
    for units to become ready (cc12m: img2dataset's first shard, when the two cores are still free), not when its
    first unit is due."""
    get(job.builder)


def _run_local(job: Job, todo: Todo) -> ShardResult:
    # Module-level so the pool's processes can unpickle it; they find the builder by name (registry import).
    return run_unit(job, todo, local_node())


# --------------------------------------------------------------------------------------------------------- Ray
_ACTIVE_RAY: list[str] = []  # the cluster address of the Ray build running in this process, if any


def ray_address() -> str | None:
    """The address of the Ray cluster the current build runs on (None for a local build): a builder that starts
    distributed work of its own (cc12m's img2dataset) runs it on the same cluster."""
    return _ACTIVE_RAY[-1] if _ACTIVE_RAY else None


class RayExecutor:
    """One Ray task per unit. Tasks whose worker process or node dies are retried (`max_retries`); a unit that
    raises fails the build with the builder's own error. At most `2 × cluster CPUs` tasks are in flight, so the
    driver holds results and object refs for a bounded number of units."""

    def __init__(self, address: str = "auto", max_retries: int = 3) -> None:
        self.address, self.max_retries = address, max_retries
        self._owned = False

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--engine ray needs Ray: pip install 'mmdata[ray]'") from None
        if not ray.is_initialized():
            import logging

            _check_gcs(self.address)
            try:
                # Workers' output would tear through the progress bar; a failing unit's error comes back raised.
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except ConnectionError as e:
                raise ExecutorError(f"--ray-address {self.address}: no Ray cluster there ({e}); start one with "
                                    "`ray start --head` (see DATA.md) or pass its HOST:PORT") from None
            self._owned = True
        _ACTIVE_RAY.append(ray.get_runtime_context().gcs_address)
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        _ACTIVE_RAY.pop()
        if self._owned:
            ray.shutdown()

    def check_paths(self, paths: list[tuple[str, Path]]) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        probe = ray.remote(num_cpus=0, max_retries=self.max_retries)(_probe)
        wanted = [(flag, str(p)) for flag, p in paths]
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(wanted) for n in nodes]
        missing = [(where, i) for where, indexes in ray.get(refs) for i in indexes]
        if missing:
            where, i = missing[0]
            more = f" ({len(missing) - 1} more missing path(s) on this or other nodes)" if len(missing) > 1 else ""
            raise ExecutorError(f"Ray node {where} cannot see {paths[i][0]} {paths[i][1]}: every node must reach the "
                                "inputs and --out at the same path (a shared filesystem); mount it there, or run "
                                f"with --engine local{more}")

    def run(self, job: Job, todo: list[Todo], ready: Ready | None) -> Iterator[ShardResult]:
        import ray

        # SPREAD: units read and write a shared filesystem, so no node is closer to a unit's data than another,
        # and short units (a cc12m shard as its download lands) would otherwise all go to the driver's node.
        task = ray.remote(num_cpus=1, max_retries=self.max_retries, scheduling_strategy="SPREAD")(_run_ray)
        job_ref = ray.put(job)  # options and config go to the object store once, not once per task
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending = _Pending(todo, ready)
        running: list[Any] = []
        while pending or running:
            running += [task.remote(job_ref, item) for item in pending.take(limit - len(running))]
            if not running:
                time.sleep(_POLL)
                continue
            done, running = ray.wait(running, num_returns=1, timeout=_POLL if pending else None)
            for ref in done:
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    # The builder's own exception (ValueError, FileNotFoundError, ...) with its message.
                    raise (e.cause if isinstance(e.cause, Exception) else e) from None


_GCS_PROBE_S = 3.0  # a cluster's GCS answers in milliseconds; ray.init would retry a wrong address for minutes


def _check_gcs(address: str) -> None:
    """Fail within seconds, naming the address, unless a Ray cluster's GCS answers at the address `ray.init` will
    dial for `address` (auto and RAY_ADDRESS resolved as Ray does). Any reply of the GCS's own service, even a
    refusal (a cluster with token auth), passes; nothing listening, an HTTP server (the dashboard's port) or
    another gRPC service fails."""
    import grpc

    if "://" in address:
        return  # a Ray Client address (ray://): it has its own connection timeout
    try:  # Ray's own resolution (the call ray.init makes): the probe dials what ray.init would
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return  # another Ray: leave the connection to ray.init
    try:
        target = canonicalize_bootstrap_address(address)
    except ConnectionError:
        raise ExecutorError(f"--ray-address {address}: no Ray cluster found from this machine (RAY_ADDRESS is unset "
                            "and no `ray start` ran here); start one with `ray start --head` (see DATA.md) or pass "
                            "the head node's HOST:PORT") from None
    except ValueError:
        raise ExecutorError(f"--ray-address {address}: expected auto or HOST:PORT (the head node's GCS address, "
                            "as `ray start --head` prints it)") from None
    if target is None:
        return  # ray.init starts a local instance
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:  # GetClusterIdRequest has no fields: its encoding is b""; the reply is not decoded
            channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(b"", timeout=_GCS_PROBE_S)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.UNIMPLEMENTED):
                seen = "" if target == address else f" (dialled as {target})"
                raise ExecutorError(
                    f"--ray-address {address}{seen}: no Ray cluster answers there ({e.code().name}: {e.details()}); "
                    "pass the GCS address of the head node (`ray start --head` prints it, port 6379 by default, not "
                    "the dashboard's 8265), check that the cluster is up and the port reachable from here, or "
                    "start one (see DATA.md)") from None


def _ray_node() -> dict[str, Any]:
    import ray

    return {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "ray_node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def _run_ray(job: Job, todo: Todo) -> ShardResult:
    return run_unit(job, todo, _ray_node())


def _probe(paths: list[tuple[str, str]]) -> tuple[str, list[int]]:
    """On one node: which of `paths` it cannot see (their positions). `--out` must hold the driver's
    `.build.json`, so a same-named local folder on the node does not pass for the shared one."""
    node = _ray_node()
    where = f"{node['ip']} ({node['host']}, node id {node['ray_node_id'][:12]})"
    missing = []
    for i, (flag, p) in enumerate(paths):
        seen = (Path(p) / ".build.json").is_file() if flag == "--out" else os.path.exists(p)
        if not seen:
            missing.append(i)
    return where, missing


def shared_paths(options: Any, out: Location) -> list[tuple[str, Path]]:
    """The paths every worker must see, as (flag, path): each path-valued builder option that exists on the
    driver, and --out (unless it is a URL: every node reaches an object store by itself)."""
    paths: list[tuple[str, Path]] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, Path) and v.exists():
                paths.append((flag, v.resolve()))
    return paths if is_url(out) else [*paths, ("--out", Path(out).resolve())]
