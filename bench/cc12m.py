"""Benchmark: `mmdata build cc12m` beside img2dataset alone, same images, same settings, same run.

2,000 generated images (plus a few dead links) on a loopback server. The baseline is img2dataset's
`download()` in a fresh process on the parquet our builder makes from the TSV (img2dataset cannot read the
released TSV itself: no header, quotes); `mmdata build cc12m` is the real CLI in a fresh process, from the TSV
to a finished dataset (TSV split, download, conversion, manifest). Runs alternate so both see the same machine
state.

    python bench/cc12m.py [--images 2000] [--repeat 4] [--workers 2]

Target: mmdata ≤ 1.1 × img2dataset. On a shared machine the load average moves the figures: each run prints
it, the pairs alternate which goes first, and the ratio is the median of the per-run ratios (each pair ran back to
back) with its spread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

sys.path.insert(0, str(ROOT / "bench"))
from _pairs import rate, ratio  # noqa: E402

import mmdata  # noqa: E402
from builders.cc12m import convert_tsv  # noqa: E402
from mmdata.testing.cc12m import world  # noqa: E402

SETTINGS = {"image_size": 256, "resize_mode": "keep_ratio", "processes": 2, "threads": 32, "timeout": 5}
SHARD_SIZE = 500


def run_img2dataset(rows: Path, out: Path) -> tuple[float, float]:
    kwargs = {
        "url_list": str(rows), "output_folder": str(out), "input_format": "parquet", "url_col": "url",
        "caption_col": "caption", "save_additional_columns": ["line", "issue"], "output_format": "webdataset",
        "image_size": SETTINGS["image_size"], "resize_mode": SETTINGS["resize_mode"], "encode_format": "jpg",
        "processes_count": SETTINGS["processes"], "thread_count": SETTINGS["threads"],
        "number_sample_per_shard": SHARD_SIZE, "oom_shard_count": 5, "timeout": SETTINGS["timeout"],
        "extract_exif": False, "incremental_mode": "incremental", "enable_wandb": False,
    }
    code = "import json, sys; from img2dataset import download; download(**json.loads(sys.argv[1]))"
    return _timed([sys.executable, "-c", code, json.dumps(kwargs)])


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant: img2dataset's pool included
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process tree)."""
    t0, c0 = time.perf_counter(), _cpu()
    _run(cmd, cwd)
    return time.perf_counter() - t0, _cpu() - c0


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")


def run_mmdata(tsv: Path, out: Path, download: Path, workers: int) -> tuple[float, float]:
    exe = Path(sys.executable).with_name("mmdata")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "mmdata.cli"]),
           "build", "cc12m", "--input", str(tsv), "--out", str(out), "--download-dir", str(download),
           "--shard-size", str(SHARD_SIZE), "--workers", str(workers), "--quiet",
           *(a for k, v in SETTINGS.items() for a in (f"--{k.replace('_', '-')}", str(v)))]
    return _timed(cmd, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_cc12m_") as tmp:
        d = Path(tmp)
        with world(d, n_ok=args.images, n_missing=20, n_not_image=5, n_truncated=5, n_slow=0,
                   size=(400, 300)) as w:
            rows = d / "rows.parquet"
            convert_tsv(w.tsv, rows, "url-caption", None)
            base: list[tuple[float, float]] = []
            ours: list[tuple[float, float]] = []
            for i in range(args.repeat):  # alternate which goes first, so neither always follows the other
                runs = [lambda: base.append(run_img2dataset(rows, d / f"i2d_{i}")),
                        lambda: ours.append(run_mmdata(w.tsv, d / f"out_{i}", d / f"dl_{i}", args.workers))]
                for run in runs[i % 2:] + runs[:i % 2]:
                    run()
                (bw, bc), (ow, oc) = base[-1], ours[-1]
                print(f"run {i + 1}: img2dataset {bw:6.2f} s ({bc:5.1f} CPU-s)   mmdata build cc12m "
                      f"{ow:6.2f} s ({oc:5.1f} CPU-s)   ratio {ow / bw:.2f}   "
                      f"(load average {os.getloadavg()[0]:.1f})",
                      flush=True)
                shutil.rmtree(d / f"i2d_{i}")
            counts = mmdata.open(d / "out_0").manifest.counts
        print(f"\n{len(w.rows)} TSV rows ({args.images} images), {SETTINGS}, shard size {SHARD_SIZE}, "
              f"{args.workers} writer workers, {os.cpu_count()} cores, {args.repeat} interleaved runs")
        print(f"counts: {counts}")
        rate("img2dataset alone", len(w.rows), [x[0] for x in base], "rows/s")
        rate("mmdata build cc12m", len(w.rows), [x[0] for x in ours], "rows/s")
        bc, oc = statistics.median(x[1] for x in base), statistics.median(x[1] for x in ours)
        print(f"    CPU-s (median): img2dataset {bc:.1f}, mmdata {oc:.1f}")
        # mmdata's time over img2dataset's, per run: the target is a ceiling.
        ratio("mmdata time / img2dataset time", [x[0] for x in base], [x[0] for x in ours], "<= 1.10x")


if __name__ == "__main__":
    main()
