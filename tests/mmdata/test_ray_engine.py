"""`--engine ray` on a real two-node Ray cluster (both nodes on 127.0.0.1, one CPU each, no dashboard), shared by
the module: every builder's world gives the same bytes as a local build, tasks run on both nodes, a killed worker
process is retried and a killed driver resumes, a node that cannot see a path stops the build with its name."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import ray._private.ray_constants as ray_constants
from ray.cluster_utils import Cluster
from typer.testing import CliRunner

from mmdata.build.executors.base import ExecutorError
from mmdata.build.executors.ray import RayExecutor
from mmdata.build.registry import discover
from mmdata.cli import app
from mmdata.testing.images import jpeg_bytes, random_image
from mmdata.testing.instructpix2pix import write_aurora

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with pytest.MonkeyPatch.context() as mp:
        # Ray turns a 127.0.0.1 address into this machine's outward IP before connecting, unless multi-node
        # clusters are off for the process; the nodes themselves listen on 127.0.0.1 only. The variable reaches
        # the CLI and img2dataset processes the tests start.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                          "include_dashboard": False})
        try:
            c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            yield c
        finally:
            c.shutdown()


def _node_ids(c: Cluster) -> set[str]:
    return {n.node_id for n in [c.head_node, *c.worker_nodes]}


def _files(out: Path) -> dict[str, bytes]:
    """Every output file but the `.done.json` markers (they name the node that wrote the shard)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.endswith(".done.json")}


def _done(out: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_bytes()) for p in sorted((out / "shards").glob("*.done.json"))}


def _build(name: str, args: list[str], out: Path, *extra: str) -> None:
    result = runner.invoke(app, ["build", name.replace("_", "-"), *args, "--out", str(out), "--format", "both", "-q",
                                 *extra])
    assert result.exit_code == 0, result.output


@contextlib.contextmanager
def _aurora(dir: Path) -> Iterator[list[str]]:
    src = write_aurora(dir, [{"instruction": f"edit {i}", "input": f"ag/{i}_0.png", "output": f"ag/{i}_1.png"}
                             for i in range(8)])
    (dir / "ag/3_1.png").unlink()
    yield ["--input", str(src), "--media-root", str(dir)]


def _source(module: str, **kwargs: Any) -> Any:
    import importlib

    return lambda dir: importlib.import_module(module).demo_source(dir, **kwargs)


# (builder, world, --shard-size): small shards, so every world has units for both nodes.
WORLDS = {
    "cambrian": ("cambrian", _source("mmdata.testing.llava"), 6),
    "visual_cot": ("visual_cot", _source("mmdata.testing.visual_cot"), 2),
    "vstar": ("vstar", _source("mmdata.testing.vstar"), 2),
    "instructpix2pix": ("instructpix2pix", _source("mmdata.testing.instructpix2pix"), 1),
    "aurora": ("aurora", _aurora, 2),
    "video_qa": ("video", _source("mmdata.testing.video", task="video_qa"), 1),
    "frame_pred": ("video", _source("mmdata.testing.video", task="frame_pred"), 1),
    "cc12m": ("cc12m", _source("mmdata.testing.cc12m"), 10),
}


def test_every_registered_builder_has_a_world_here() -> None:
    shipped = {name for name, b in discover().items() if b.records.__module__.startswith("builders.")}
    assert {name for name, _, _ in WORLDS.values()} == shipped


@pytest.mark.parametrize("world", list(WORLDS))
def test_every_builder_gives_the_same_bytes_on_ray(cluster: Cluster, tmp_path: Path, world: str) -> None:
    name, source, shard_size = WORLDS[world]
    size = ["--shard-size", str(shard_size)]
    with source(tmp_path / "src") as args:
        if name == "cc12m":  # each build downloads on its own: img2dataset's pool, then its Ray distributor
            dl = args.index("--download-dir") + 1
            local_args = [*args[:dl], str(tmp_path / "dl_local"), *args[dl + 1:]]
            ray_args = [*args[:dl], str(tmp_path / "dl_ray"), *args[dl + 1:]]
        else:
            local_args = ray_args = args
        _build(name, local_args, tmp_path / "local", *size, "--workers", "2")
        _build(name, ray_args, tmp_path / "ray", *size, "--engine", "ray", "--ray-address", cluster.address)
    local, on_ray = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert on_ray.keys() == local.keys()
    if name == "cc12m":
        # The two builds differ by --download-dir, and img2dataset's own reports hold its timings.
        for files in (local, on_ray):
            manifest = json.loads(files.pop("dataset.json"))
            assert manifest["args"].pop("download_dir")
            files["dataset.json"] = json.dumps(manifest).encode()
            for k in [k for k in files if k.startswith("img2dataset/") or k == ".build.json"]:
                del files[k]
    assert [k for k in local if on_ray[k] != local[k]] == []
    nodes = [d["node"] for d in _done(tmp_path / "ray").values()]
    assert len(nodes) >= 2
    used = {n["ray_node_id"] for n in nodes}
    if name == "cc12m":  # its shards arrive one by one as downloads finish; one node may convert them all
        assert used <= _node_ids(cluster)
    else:
        assert used == _node_ids(cluster)  # both nodes wrote shards
    assert not (tmp_path / "ray" / ".running").exists()
    if name == "cc12m":
        assert "img2dataset distributor: ray" in (tmp_path / "dl_ray" / "img2dataset.log").read_text()


# ------------------------------------------------------------------------------------- faults
SLOW_SHARD = 8  # records per shard; each decodes a 1600 px noise JPEG (~70 ms): shards take ~0.5 s


def _slow_world(root: Path, n: int = 8 * SLOW_SHARD) -> list[str]:
    (root / "images").mkdir(parents=True)
    (root / "images" / "big.jpg").write_bytes(jpeg_bytes(random_image(1600, 1600)))
    lines = [json.dumps({"id": f"r{i}", "image": "big.jpg", "conversations": [
        {"from": "human", "value": f"<image>\nQuestion {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]})
        for i in range(n)]
    (root / "slow.jsonl").write_text("\n".join(lines) + "\n")
    return ["--input", str(root / "slow.jsonl"), "--media-root", str(root / "images"), "--shard-size",
            str(SLOW_SHARD)]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "mmdata.cli", "build", "cambrian", *args, "--format", "both", "-q"]


def _wait_for(what: str, found: Any, timeout: float = 120.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = found()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_process_is_retried_and_the_output_is_identical(cluster: Cluster, tmp_path: Path) -> None:
    args = _slow_world(tmp_path / "src")
    _build("cambrian", args, tmp_path / "local")
    out = tmp_path / "ray"
    driver = subprocess.Popen(_cli([*args, "--out", str(out), "--engine", "ray", "--ray-address", cluster.address]),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # A running unit names its process in <out>/.running/<shard>.json: kill that Ray worker mid-shard.
        marker = _wait_for("a running shard", lambda: next(iter(sorted((out / ".running").glob("*.json"))), None)
                           if (out / ".running").is_dir() else None)
        victim = json.loads(marker.read_bytes())
        assert victim["ray_node_id"] in _node_ids(cluster)
        os.kill(victim["pid"], signal.SIGKILL)
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, output.decode()
    with pytest.raises(ProcessLookupError):
        os.kill(victim["pid"], 0)
    done = _done(out)
    assert done[marker.name.replace(".json", ".done.json")]["node"]["pid"] != victim["pid"]  # written by the retry
    assert _files(out) == _files(tmp_path / "local")


def test_a_killed_driver_resumes_on_rerun(cluster: Cluster, tmp_path: Path) -> None:
    args = _slow_world(tmp_path / "src")
    _build("cambrian", args, tmp_path / "local")
    out = tmp_path / "ray"
    command = _cli([*args, "--out", str(out), "--engine", "ray", "--ray-address", cluster.address])
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for("a finished shard", lambda: list((out / "shards").glob("*.done.json")) if out.is_dir() else None)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    assert not (out / "dataset.json").exists()
    # The killed driver's tasks may still finish a shard or two; those count as done for the rerun too.
    time.sleep(1.0)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.done.json")}
    assert 0 < len(before) < 8
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.done.json")
            if p.name in before} == before  # finished shards were skipped
    assert len(_done(out)) == 8
    assert _files(out) == _files(tmp_path / "local")


def test_a_node_that_cannot_see_a_path_stops_the_build_naming_node_and_path(cluster: Cluster,
                                                                            tmp_path: Path) -> None:
    # One machine cannot hide a path from one node; a path missing on every node shows the check and its message.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".build.json").write_text("{}")
    missing = tmp_path / "not_mounted" / "cambrian.jsonl"
    with ray.init(address=cluster.address), RayExecutor(cluster.address) as executor:
        executor.check_paths([("--out", tmp_path / "out")])  # every node sees it: passes
        with pytest.raises(ExecutorError) as e:
            executor.check_paths([("--out", tmp_path / "out"), ("--input", missing)])
    message = str(e.value)
    assert f"cannot see --input {missing}" in message and "127.0.0.1" in message
    assert any(f"node id {n[:12]}" in message for n in _node_ids(cluster))
    assert "1 more missing path(s)" in message  # the other node: one message for the build, not one per node
