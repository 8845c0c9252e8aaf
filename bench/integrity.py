"""Benchmark: what "nothing stale, damage detected" costs a build.

A text-only Cambrian JSONL of N records, built with 1 worker. Figures, as interleaved repeated pairs (median and
spread over the repeats):
- a fresh build, beside the same build without input fingerprinting (the sha256 of every input, read once);
- a rerun of the complete build (the same command: every shard's sha256, size and index re-checked, inputs
  stat'ed), beside the same rerun trusting each `.done.json` as before (no shard re-check).

    python bench/integrity.py [--records 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mmdata  # noqa: E402
import mmdata.build.freshness as freshness  # noqa: E402
from builders.cambrian import CambrianOptions  # noqa: E402
from mmdata.build.driver import BuildSettings, build  # noqa: E402


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _no_hash(path: Path, span: object = None, known: object = ()) -> dict[str, object]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": "-"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_integrity_"))
    try:
        src = tmp / "src.jsonl"
        with open(src, "w") as f:
            for i in range(args.records):
                f.write(json.dumps({"id": f"r{i}", "conversations": [
                    {"from": "human", "value": f"Question {i}: " + "why " * 20},
                    {"from": "gpt", "value": f"Answer {i}: " + "because " * 40}]}) + "\n")
        options = CambrianOptions(input=[src])
        out = tmp / "out"

        def fresh() -> None:
            shutil.rmtree(out, ignore_errors=True)
            build("cambrian", options, BuildSettings(out=out))

        def fresh_unhashed() -> None:
            with mock.patch.object(freshness, "fingerprint", _no_hash):
                fresh()

        def rerun() -> None:
            build("cambrian", options, BuildSettings(out=out))

        def rerun_trusting() -> None:
            with mock.patch.object(freshness, "check_shard", lambda *a: []):
                rerun()

        pairs: dict[str, list[tuple[float, float]]] = {"fresh build": [], "rerun of a complete build": []}
        for _ in range(args.repeat):
            pairs["fresh build"].append((_timed(fresh), _timed(fresh_unhashed)))
            fresh()
            pairs["rerun of a complete build"].append((_timed(rerun), _timed(rerun_trusting)))
        size = src.stat().st_size / 1e6
        shards = sum(f.bytes for f in mmdata.open(out).shard_files()) / 1e6
        print(f"{args.records:,} records, input {size:.0f} MB, shards {shards:.0f} MB, {args.repeat} interleaved pairs")
        for name, runs in pairs.items():
            ours, base = [r[0] for r in runs], [r[1] for r in runs]
            ratios = [a / b for a, b in runs]
            print(f"{name:28s} checked {statistics.median(ours):6.2f} s (min {min(ours):.2f}, max {max(ours):.2f})"
                  f"   unchecked {statistics.median(base):6.2f} s (min {min(base):.2f}, max {max(base):.2f})"
                  f"   ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
