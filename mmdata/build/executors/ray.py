"""`RayExecutor`: one Ray task per unit on a Ray cluster (`--engine ray --ray-address auto|HOST:PORT`). Every node
reaches the inputs and `--out` at the same path (a shared filesystem); this is checked on every node before any work
starts."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata.build.executors.base import _POLL, ExecutorError, Job, Ready, Todo, _Pending, run_unit
from mmdata.format.names import BUILD
from mmdata.format.shards import ShardResult

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
        seen = (Path(p) / BUILD).is_file() if flag == "--out" else os.path.exists(p)
        if not seen:
            missing.append(i)
    return where, missing
