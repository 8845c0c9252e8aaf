"""Worker processes exit when the process that started them is gone (a `kill -9` of a build leaves no workers).

`exit_with_parent` is a process-pool initializer: a daemon thread polls the parent PID and ends the worker when
it changes (the worker was re-parented to init or a subreaper). Polling rather than `PR_SET_PDEATHSIG`, which
fires when the parent *thread* that started the worker ends, and a pool may start workers from a helper thread.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def exit_with_parent(parent: int | None = None, poll: float = POLL_SECONDS) -> None:
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)  # no cleanup: the parent that would collect the result is gone; staged files are temp names

    threading.Thread(target=watch, name="mmdata-exit-with-parent", daemon=True).start()
