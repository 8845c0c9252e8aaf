"""Output directory safety: one writer at a time (the second is told the holder's PID; a dead holder's lock is
taken over), replacements that a kill cannot lose (`--overwrite`, re-mix), leftovers of killed runs cleaned, and
readers of a dataset being replaced keep reading the old one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmdata
import mmdata.build.executors.base as executors
import mmdata.storage.files as outdir
import mmdata.storage.local as local_storage
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.core.errors import StorageError
from mmdata.core.media import NAME_MAX
from mmdata.mix.planner import mix
from mmdata.quality.dedup import DedupOptions, dedup
from mmdata.read.view import Mixture
from mmdata.report.validate import validate
from mmdata.storage.files import temp_path
from mmdata.storage.local import LocalStorage
from mmdata.storage.outdir import Busy, recover, staging
from tests.reliability.conftest import turns, write_jsonl

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from mmdata.storage.outdir import locked
with locked(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def _source(root: Path, n: int, answer: str) -> Path:
    return write_jsonl(root / "src.jsonl", [{"id": f"r{i}", "conversations": turns("Say it.", f"{answer} {i}")}
                                            for i in range(n)])


def _build(src: Path, out: Path, **settings: object) -> mmdata.Dataset:
    build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=out, shard_size=3, **settings))  # type: ignore[arg-type]
    return mmdata.open(out)


def _answers(ds: mmdata.Dataset) -> list[str]:
    return [ds[i].conversations[1].value for i in range(len(ds))]


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_a_second_writer_is_told_the_holders_pid_and_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    src, out = _source(tmp_path, 5, "old"), tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nseed: 1\nsize: 4\nsources:\n  - {{path: {out}, weight: 1}}\n")
    _build(src, out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(Busy, match=rf"another test holder is writing here \(PID {holder.pid}, lock "):
            _build(src, out, overwrite=True)
        mixed = tmp_path / "mixed"
        holder2 = subprocess.Popen([sys.executable, "-c", HOLD, str(mixed)], stdout=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            assert holder2.stdout is not None and holder2.stdout.readline() == b"locked\n"
            with pytest.raises(Busy, match=rf"PID {holder2.pid}"):
                mix(recipe, mixed)
        finally:
            holder2.kill()
            holder2.wait()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead PID
        holder.wait()
    assert _siblings(out) == [".out.mmdata-lock"]
    assert _answers(_build(src, out, overwrite=True))[0] == "old 0"
    assert mix(recipe, mixed).total == 4
    assert _siblings(out) == [] and _siblings(mixed) == []


def test_a_killed_overwrite_keeps_the_old_dataset_and_the_next_run_cleans_up(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    old = _answers(_build(_source(tmp_path, 7, "old"), out))
    src = _source(tmp_path, 7, "new")
    real = executors.write_shard

    def killed_at_shard_2(cfg, index, items, node=None, inputs=None):  # type: ignore[no-untyped-def]
        if index == 2:
            raise KeyboardInterrupt  # as a kill would stop it: no cleanup of its own
        return real(cfg, index, items, node, inputs)

    with monkeypatch.context() as m:
        m.setattr(executors, "write_shard", killed_at_shard_2)
        with pytest.raises(KeyboardInterrupt):
            _build(src, out, overwrite=True)
    assert _answers(mmdata.open(out)) == old  # the old dataset is whole
    assert (staging(out) / "shards" / "000000.jsonl").is_file()  # the new one was being built beside it
    ds = _build(src, out, overwrite=True)
    assert _answers(ds) == [f"new {i}" for i in range(7)]
    assert _siblings(out) == []


@pytest.mark.parametrize("new_complete", [True, False])
def test_a_kill_between_the_two_renames_of_a_swap_is_finished_or_undone(tmp_path: Path, new_complete: bool) -> None:
    out = tmp_path / "out"
    _build(_source(tmp_path, 4, "old"), out)
    _build(_source(tmp_path, 4, "new"), tmp_path / "built")
    if not new_complete:
        (tmp_path / "built" / "dataset.json").unlink()
    os.rename(out, out.with_name(".out.mmdata-old"))  # the state a kill after the first rename leaves
    os.rename(tmp_path / "built", staging(out))
    recover(out, "dataset.json")
    assert _answers(mmdata.open(out))[0] == ("new 0" if new_complete else "old 0")
    assert _siblings(out) == []


def test_readers_of_a_dataset_being_overwritten_keep_reading_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    reader = _build(_source(tmp_path, 7, "old"), out)
    old = _answers(reader)  # maps every shard, loads the index
    _build(_source(tmp_path, 9, "new"), out, overwrite=True)
    assert _answers(reader) == old  # open maps stay on the old files, which are gone from the directory
    assert reader.get_many([6, 0])[0][0].conversations[1].value == "old 6"
    assert _answers(mmdata.open(out)) == [f"new {i}" for i in range(9)]


def test_temp_files_of_killed_runs_are_cleaned_by_the_next_run(tmp_path: Path) -> None:
    src, out = _source(tmp_path, 7, "a"), tmp_path / "out"
    _build(src, out)
    (out / "dataset.json").unlink()  # killed before the manifest ...
    leftovers = [out / "shards" / "000002.jsonl.node-b.4242.tmp", out / "shards" / "000002.idx.node-b.4242.tmp",
                 out / "rejects.jsonl.node-b.4242.tmp",  # ... and while writing these, on another host
                 out / "shards" / "000003.jsonl.4242.tmp"]  # (named as before temp names held the host)
    for p in leftovers:
        p.write_bytes(b"half")
    _build(src, out)
    assert not any(p.exists() for p in leftovers)
    assert validate(mmdata.open(out)).ok


def test_two_hosts_staging_one_shard_with_the_same_pid_do_not_collide(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two attempts at shard 0 (a retry on another node while the first still runs) on one shared --out.
    staged = []
    for host in ("node-a.cluster.local", "node b/2"):
        monkeypatch.setattr(outdir.socket, "gethostname", lambda host=host: host)
        outdir._host.cache_clear()
        staged.append(LocalStorage(tmp_path).create("shards/000000.jsonl"))
    outdir._host.cache_clear()
    a, b = staged
    assert a.tmp != b.tmp and a.tmp.name == f"000000.jsonl.node-a_cluster_local.{os.getpid()}.tmp"
    assert b.tmp.name == f"000000.jsonl.node_b_2.{os.getpid()}.tmp"  # sanitised: one path component
    a.write(b"from a\n")
    b.write(b"from b\n")
    b.abort()  # the loser's cleanup must not touch the winner's file
    a.commit()
    assert (tmp_path / "shards" / "000000.jsonl").read_bytes() == b"from a\n"
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["000000.jsonl"]


def test_temp_names_of_long_file_names_fit_the_filesystem(tmp_path: Path) -> None:
    long = [tmp_path / ("x" * 250 + ext) for ext in (".jpg", ".png")]
    temps = [temp_path(p) for p in long]
    assert temps[0] != temps[1] and all(len(t.name.encode()) <= NAME_MAX and t.name.endswith(".tmp") for t in temps)
    temps[0].write_bytes(b"ok")  # the filesystem accepts the name


def test_a_failed_remix_keeps_the_previous_mixture_and_the_same_command_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _build(_source(tmp_path, 6, "a"), tmp_path / "d")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nseed: 1\nsize: 5\nsources:\n  - {path: d, weight: 1}\n")
    out = tmp_path / "m"
    mix(recipe, out)
    before = [r.id for r in Mixture(out)]
    recipe.write_text("name: r\nseed: 2\nsize: 6\nsources:\n  - {path: d, weight: 1}\n")

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(np, "save", full)
        with pytest.raises(StorageError):
            mix(recipe, out)
    assert [r.id for r in Mixture(out)] == before  # still there, still whole
    assert mix(recipe, out).total == 6
    assert len(Mixture(out)) == 6 and _siblings(out) == []


def test_a_failed_rewrite_of_a_view_keeps_the_previous_view_and_the_same_command_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _build(_source(tmp_path / "a", 6, "a"), tmp_path / "da").root
    b = _build(_source(tmp_path / "b", 4, "b"), tmp_path / "db").root
    out = tmp_path / "v"
    exact = DedupOptions(images="none", text="exact", workers=1, cache=tmp_path / "cache")
    dedup([a, b], out, exact)
    before = [r.conversations[1].value for r in mmdata.open(out)]
    assert len(before) == 10
    real = local_storage.write_bytes

    def full_at_removed(data: bytes, dst: Path) -> None:  # after the new index.npy is written
        if dst.name == "removed.jsonl":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(data, dst)

    with monkeypatch.context() as m:
        m.setattr(local_storage, "write_bytes", full_at_removed)
        with pytest.raises(StorageError, match="No space left on device"):
            dedup([a], out, exact)
    assert [r.conversations[1].value for r in mmdata.open(out)] == before  # still there, still whole
    assert dedup([a], out, exact).counts == {"read": 6, "kept": 6, "removed": 0}
    assert _siblings(out) == [] and sorted(p.name for p in out.iterdir()) == ["index.npy", "removed.jsonl", "view.json"]


def test_a_dataset_writer_holds_the_same_lock(tmp_path: Path) -> None:
    src, out = _source(tmp_path, 3, "a"), tmp_path / "out"
    with mmdata.DatasetWriter(out, name="mine"):
        with pytest.raises(Busy, match=rf"another mmdata DatasetWriter is writing here \(PID {os.getpid()}"):
            _build(src, out, overwrite=True)
    assert _siblings(out) == []
