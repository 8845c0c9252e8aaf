"""A `kill -9` of a build's main process leaves no worker behind: each worker notices within seconds that its
parent is gone and exits. The test records the PIDs it kills and checks, never a name-based kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import turns, write_jsonl

REPO = Path(__file__).resolve().parents[2]
# Loaded by every interpreter of the build (main process and spawned workers): records are written slowly, so the
# workers are surely busy when the main process is killed.
SLOW = """
import time
import mmdata.build.writer as w
_add, _add_many = w.ShardWriter.add, w.ShardWriter.add_many
def add(self, item):
    time.sleep(0.05)
    return _add(self, item)
def add_many(self, items):
    time.sleep(0.05 * len(items))
    return _add_many(self, items)
w.ShardWriter.add, w.ShardWriter.add_many = add, add_many
"""


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat fields after the command name (state first), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children(pid: int) -> dict[int, str]:
    """{child PID: its start time} of `pid`."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None and st[1] == str(pid):
            out[int(d.name)] = st[19]
    return out


def _alive(pid: int, started: str) -> bool:
    st = _stat(pid)
    return st is not None and st[19] == started and st[0] != "Z"  # same process (not a reused PID), not a zombie


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_kill_9_of_a_build_leaves_no_worker(tmp_path: Path) -> None:
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(SLOW)
    src = write_jsonl(tmp_path / "src.jsonl", [{"id": f"r{i}", "conversations": turns("Say it.", f"answer {i}")}
                                               for i in range(400)])
    main = subprocess.Popen([sys.executable, "-m", "mmdata.cli", "build", "cambrian", "--input", str(src),
                             "--out", str(tmp_path / "out"), "--workers", "3", "--shard-size", "20", "-q"],
                            env={**os.environ, "PYTHONPATH": f"{tmp_path / 'hooks'}{os.pathsep}{REPO}"})
    workers: dict[int, str] = {}
    others: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and main.poll() is None:
            workers = {p: s for p, s in _children(main.pid).items()
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}
            time.sleep(0.05)
        assert len(workers) == 2, "the build's two pool processes (3 workers: the driver is one) never started"
        while not list((tmp_path / "out" / "shards").glob("*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main.poll() is None, "the build ended before the workers were busy"
        others = _children(main.pid)  # the workers and multiprocessing's resource tracker
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        killed = time.monotonic()
        while any(_alive(p, s) for p, s in others.items()) and time.monotonic() - killed < 15:
            time.sleep(0.1)
        survivors = [p for p, s in others.items() if _alive(p, s)]
        assert not survivors, f"processes left running {time.monotonic() - killed:.1f} s after the kill: {survivors}"
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
        for pid, started in {**workers, **others}.items():  # only what this test started, by PID
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
