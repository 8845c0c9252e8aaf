"""`LocalExecutor`: this machine, in-line for one worker, else the driver and a spawn pool of N - 1 processes. Pool
workers exit when the process that started them is gone (a `kill -9` of a build leaves no workers): a daemon thread
polls the parent PID and ends the worker when it changes (it was re-parented to init or a subreaper). Polling
rather than `PR_SET_PDEATHSIG`, which fires when the parent *thread* that started the worker ends, and a pool may
start workers from a helper thread."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from mmdata.build.executors.base import _POLL, Job, Ready, Todo, _Pending, local_node, run_unit
from mmdata.build.registry import get
from mmdata.format.shards import ShardResult


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


POLL_SECONDS = 0.5


def exit_with_parent(parent: int | None = None, poll: float = POLL_SECONDS) -> None:
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)  # no cleanup: the parent that would collect the result is gone; staged files are temp names

    threading.Thread(target=watch, name="mmdata-exit-with-parent", daemon=True).start()
