"""Executors: who runs a build's units (one unit → one shard). The driver (`mmdata.build.driver`) plans the units,
skips the finished shards and hands the rest to an executor, which yields each `ShardResult` as it completes.

- `base`: what every executor shares (`Job`, `Todo`, `run_unit`: the same unit function wherever it runs).
- `local`: this machine, in-line or a spawn process pool of `--workers` processes (the default).
- `ray`: one Ray task per unit on a Ray cluster (`--engine ray --ray-address auto|HOST:PORT`).
"""

from __future__ import annotations

from mmdata.build.executors.base import ENGINES, Executor, ExecutorError
from mmdata.build.executors.local import LocalExecutor
from mmdata.build.executors.ray import RayExecutor


def make_executor(engine: str, workers: int = 1, ray_address: str = "auto") -> Executor:
    if engine == "local":
        return LocalExecutor(workers)
    if engine == "ray":
        return RayExecutor(ray_address)
    raise ExecutorError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
