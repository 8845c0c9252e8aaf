"""`--engine ray` beside `--engine local` on one machine, and how a build's cost grows with its size.

(a) Same worker count (`--workers N` vs a Ray instance of N CPUs started here), a text world and an image world,
    interleaved repeated pairs: local time / ray time, median and spread. Target: >= 0.9x.
(b) Build wall time and the driver's peak RSS at 10k, 100k and 1M text records and 1k and 10k image records, both
    engines, each build a fresh `mmdata build` process: the per-record time and the marginal slope between sizes
    should stay level (linear time) and the RSS flat (planning holds spans, never records).
Usage: python bench/scale.py [--workers 2] [--pairs 5] [--pair-text 400000] [--pair-images 8000]
                             [--text 10000,100000,1000000] [--images 1000,10000]
"""

from __future__ import annotations

import os

# Ray would advertise this machine's outward IP; the bench keeps its Ray instance on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from convert import make_text_jsonl, sentence
from PIL import Image

from mmdata.testing.images import jpeg_bytes

# Runs `mmdata build` in this process and reports its peak RSS (the driver's; local workers are other processes).
_DRIVER = """
import resource, sys
from mmdata.cli import main
sys.argv = ["mmdata", *sys.argv[1:]]
try:
    main()
finally:
    print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def make_image_world(root: Path, n: int, distinct: int = 64) -> list[str]:
    """`n` records over `distinct` 320x240 photo-like JPEGs (each record decodes its image in full)."""
    media = root / "images"
    media.mkdir(parents=True, exist_ok=True)
    for s in range(distinct):
        arr = np.clip(np.random.default_rng(s).normal(128, 50, (240, 320, 3)), 0, 255).astype("uint8")
        (media / f"{s:03d}.jpg").write_bytes(jpeg_bytes(Image.fromarray(arr), quality=88))
    rng = random.Random(1)
    with open(root / "img.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "image": f"{i % distinct:03d}.jpg", "conversations": [
                {"from": "human", "value": "<image>\n" + sentence(rng, 6, 15)},
                {"from": "gpt", "value": sentence(rng, 5, 30)}]}) + "\n")
    return ["--input", str(root / "img.jsonl"), "--media-root", str(media)]


def make_text_world(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    make_text_jsonl(root / "text.jsonl", n)
    return ["--input", str(root / "text.jsonl")]


def run_build(args: list[str], out: Path, engine: list[str]) -> tuple[float, float]:
    """(wall seconds, driver peak RSS MB) of one `mmdata build cambrian` process."""
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _DRIVER, "build", "cambrian", *args, "--out", str(out), "-q",
                        *engine], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"build failed: {p.stderr[-2000:]}")
    rss = int(p.stderr.rsplit("peak_rss_kb", 1)[1].split()[0]) / 1024
    return wall, rss


def pairs(label: str, args: list[str], tmp: Path, local: list[str], ray: list[str], n: int) -> None:
    ratios, lt, rt = [], [], []
    for _ in range(n):
        a = run_build(args, tmp / "local", local)[0]
        b = run_build(args, tmp / "ray", ray)[0]
        lt.append(a)
        rt.append(b)
        ratios.append(a / b)
    print(f"  {label:<34} local {statistics.median(lt):6.2f} s   ray {statistics.median(rt):6.2f} s   "
          f"local/ray {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}, {n} pairs)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--pair-text", type=int, default=400_000)
    ap.add_argument("--pair-images", type=int, default=8_000)
    ap.add_argument("--text", default="10000,100000,1000000")
    ap.add_argument("--images", default="1000,10000")
    a = ap.parse_args()

    import ray

    ray.init(address="local", num_cpus=a.workers, include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    local = ["--engine", "local", "--workers", str(a.workers)]
    on_ray = ["--engine", "ray", "--ray-address", address]
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        # Shards small enough that both engines keep N workers busy: 20 units per world.
        print(f"(a) --engine ray vs --engine local, {a.workers} workers each (Ray instance of {a.workers} CPUs "
              "already running); target >= 0.9x")
        text = make_text_world(tmp / "pair_text", a.pair_text)
        pairs(f"{a.pair_text:,} text records", [*text, "--shard-size", str(a.pair_text // 20)], tmp, local, on_ray,
              a.pairs)
        images = make_image_world(tmp / "pair_images", a.pair_images)
        pairs(f"{a.pair_images:,} image records", [*images, "--shard-size", str(a.pair_images // 20)], tmp, local,
              on_ray, a.pairs)

        print("\n(b) cost by size (default --shard-size 10000 for text, 500 for images; one build each)")
        print(f"  {'world':<22}{'engine':<8}{'wall s':>8}{'us/record':>11}{'marginal us/rec':>17}{'driver MB':>11}")
        for kind, sizes, shard in (("text", a.text, 10_000), ("image", a.images, 500)):
            prev: dict[str, tuple[int, float]] = {}
            for n in [int(s) for s in sizes.split(",") if s]:  # --text "" skips the text sizes
                root = tmp / f"{kind}_{n}"
                args = make_text_world(root, n) if kind == "text" else make_image_world(root, n)
                for name, engine in (("local", local), ("ray", on_ray)):
                    wall, rss = run_build([*args, "--shard-size", str(shard)], tmp / "out", engine)
                    marginal = ""
                    if name in prev:
                        pn, pw = prev[name]
                        marginal = f"{(wall - pw) / (n - pn) * 1e6:.1f}"
                    prev[name] = (n, wall)
                    print(f"  {f'{n:,} {kind}':<22}{name:<8}{wall:8.2f}{wall / n * 1e6:11.1f}{marginal:>17}"
                          f"{rss:11.0f}", flush=True)
                shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
