"""Downloading with img2dataset: the download folder's identity (a rerun with the same settings resumes it),
img2dataset's Python API in a child process of its own (its spawn workers never re-import the caller's script, its
SIGINT handler stays out of ours) that waits for a line "go" on its stdin once its input is ready, stopping it with the
build, and telling when each of its shards is done (`ready`)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from builders.cc12m.options import CC12MOptions, Unit
from mmdata.build import ray_address
from mmdata.core.errors import InputError


class DownloadError(InputError):
    """img2dataset did not finish: a ValueError so the CLI shows the one-line fix (rerun to resume)."""


def download_identity(options: CC12MOptions, tsv: Path, shard_size: int, limit: int | None) -> dict[str, Any]:
    """What a download depends on: a rerun with the same identity resumes it."""
    st = tsv.stat()
    return {"input": str(tsv.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "columns": options.columns, "limit": limit, "shard_size": shard_size,
            "image_size": options.image_size, "resize_mode": options.resize_mode}


def check_download_dir(dl: Path, identity: dict[str, Any]) -> bool:
    """True when `dl` holds a download made with `identity`, False when it is new or empty; else an InputError."""
    marker = dl / "download.json"
    if marker.is_file():
        found = json.loads(marker.read_text())
        if found != identity:
            diff = sorted(k for k in identity.keys() | found.keys() if found.get(k) != identity.get(k))
            raise InputError(f"--download-dir {dl}: holds a download made with other settings "
                             f"({', '.join(diff)} differ: a changed TSV or flag); pass another "
                             "--download-dir or delete it to start over")
        return True
    if dl.is_dir() and any(dl.iterdir()):
        raise InputError(f"--download-dir {dl}: not empty and not made by `mmdata build cc12m`; choose an "
                         "empty or new folder (for an existing img2dataset output use --from-img2dataset)")
    return False


# Runs in the child: img2dataset's download(), then an exit note the shard writers read. If the build dies
# (even by SIGKILL) the child sees its parent change and kills its own process group (pool workers included),
# so a rerun never races a stray download.
_CHILD = """
import json, os, signal, sys, threading, time
kwargs, exit_dir, ray_address, parent = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], os.getppid()
def orphaned():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=orphaned, daemon=True).start()
status = "failed"
try:
    from img2dataset import download
    if ray_address:
        import ray
        ray.init(address=ray_address)
    if sys.stdin.readline() != "go\\n":  # the build stopped before the input was ready (the TSV split failed)
        sys.exit("img2dataset not started: the build stopped before its input was ready")
    print("img2dataset distributor:", kwargs.get("distributor", "multiprocessing"), flush=True)
    download(**kwargs)
    status = "ok"
finally:
    with open(os.path.join(exit_dir, f"img2dataset.{os.getpid()}.exit"), "w") as f:
        f.write(status)
"""


RUNNING: dict[Path, subprocess.Popen[bytes]] = {}  # download folder → the img2dataset this process started


def start_download(options: CC12MOptions, dl: Path, shard_size: int, n_shards: int) -> subprocess.Popen[bytes]:
    """Start img2dataset in the background (its output in `img2dataset.log`): it imports, then waits for a line
    "go" on its stdin (its input, `rows.parquet`, is ready) to download `n_shards` shards. The shard writers wait
    for each shard's `_stats.json`, so conversion overlaps the download."""
    kwargs = {
        "url_list": str((dl / "rows.parquet").resolve()), "output_folder": str((dl / "shards").resolve()),
        "input_format": "parquet", "url_col": "url", "caption_col": "caption",
        "save_additional_columns": ["line", "issue"], "output_format": "webdataset",
        "image_size": options.image_size, "resize_mode": options.resize_mode, "encode_format": "jpg",
        "processes_count": options.processes or os.cpu_count() or 1, "thread_count": options.threads,
        "number_sample_per_shard": shard_size, "oom_shard_count": 5, "timeout": options.timeout,
        "extract_exif": False, "incremental_mode": "incremental", "enable_wandb": False,
    }
    cluster = ray_address()
    if cluster is not None:  # a `--engine ray` build: img2dataset's own Ray distributor, on the same cluster
        kwargs["distributor"] = "ray"
    previous = RUNNING.get(dl.resolve())
    if previous is not None:
        # A download this process started may still be tidying up: its final rm of `shards/_tmp` would delete
        # the new run's input splits.
        _stop(previous, dl / "shards", n_shards)
    for old in dl.glob("img2dataset.*.exit"):
        old.unlink()
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    with open(dl / "img2dataset.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(kwargs), str(dl), cluster or ""],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
                                # Its own process group, so it and its pool can be stopped as one.
                                start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it, so "not alive" is observable
    RUNNING[dl.resolve()] = proc
    atexit.register(_stop, proc, dl / "shards", n_shards)
    print(f"img2dataset: downloading into {dl / 'shards'} (progress: tail -f {dl / 'img2dataset.log'})",
          file=sys.stderr)
    return proc


def _stop(proc: subprocess.Popen[bytes], shards: Path, n_shards: int) -> None:
    """At exit: let a finished download tidy up (the build ends with the last `_stats.json`, img2dataset a
    moment later); stop an unfinished one (an error or Ctrl-C in the build), pool included."""
    if proc.poll() is None and len(list(shards.glob("*_stats.json"))) >= n_shards:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def ready(options: CC12MOptions, unit: Unit) -> bool:
    """Whether img2dataset has finished the unit's shard (its `_stats.json`): the build converts a shard only
    then, so conversion overlaps the download without a worker waiting. Runs in the build's driver, where the
    download process lives."""
    stats = Path(unit.shard + "_stats.json")
    if not unit.pid or stats.is_file():
        return True
    dl = Path(unit.shard).parent.parent
    ended = (dl / f"img2dataset.{unit.pid}.exit").is_file() or not _alive(unit.pid)
    if ended and not stats.is_file():
        raise DownloadError(f"{dl / 'shards'}: img2dataset stopped before finishing shard "
                            f"{Path(unit.shard).name} (see {dl / 'img2dataset.log'}); rerun the same "
                            "command to retry the unfinished shards only")
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
