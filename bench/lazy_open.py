"""Memory and random access: loading a whole LLaVA-style file (what LLaVA's train.py does) vs `mmdata.open`.

Makes a 1,000,000-record LLaVA-style JSONL (text-only), builds it, then in separate processes measures
(a) loading every record into a list and (b) `mmdata.open` + 10,000 random `[i]`: peak RSS and wall time.
Targets: peak RSS of (b) <= 1/20 of (a); random access >= 20,000 records/s.
Usage: python bench/lazy_open.py [--records 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from convert import make_text_jsonl

LOAD_ALL = """
import json, resource, sys, time
t = time.perf_counter()
with open(sys.argv[1]) as f:
    records = [json.loads(line) for line in f]  # the whole file in RAM, as json.load of LLaVA's array does
dt = time.perf_counter() - t
print(json.dumps({"records": len(records), "seconds": dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LAZY = """
import json, random, resource, sys, time
t = time.perf_counter()
import mmdata
ds = mmdata.open(sys.argv[1])
t_open = time.perf_counter() - t
rng = random.Random(0)
idx = [rng.randrange(len(ds)) for _ in range(10_000)]
t = time.perf_counter()
for i in idx:
    ds[i]
dt = time.perf_counter() - t
print(json.dumps({"records": len(ds), "open_seconds": t_open, "seconds": dt, "per_s": len(idx) / dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(code: str, arg: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, str(arg)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_lazy_"))
    try:
        src = tmp / "llava.jsonl"
        make_text_jsonl(src, args.records)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmdata.cli", "build", "cambrian", "--input", str(src), "--out",
                        str(tmp / "ds"), "--workers", str(args.workers), "--shard-size", "50000", "--quiet"],
                       check=True)
        print(f"built {args.records:,} records in {time.perf_counter() - t:.1f} s ({args.workers} workers)")
        a = run(LOAD_ALL, src)
        b = run(LAZY, tmp / "ds")
        print(f"{'':28}{'peak RSS':>12}{'time':>10}")
        print(f"{'(a) load whole file':28}{a['peak_rss_mb']:10.0f} MB{a['seconds']:9.2f}s")
        print(f"{'(b) mmdata.open + 10k [i]':28}{b['peak_rss_mb']:10.0f} MB{b['open_seconds'] + b['seconds']:9.2f}s")
        ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
        print(f"peak RSS ratio (b)/(a): 1/{1 / ratio:.1f}  (target <= 1/20)")
        print(f"random access: {b['per_s']:,.0f} records/s  (target >= 20,000)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
