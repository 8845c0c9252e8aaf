"""Benchmark `mmdata mix` and the mixture loader on three datasets totalling 5,000,000 records.

    .venv/bin/python bench/mix.py [--out bench_out/mix] [--records 5000000] [--read 1000000] [--rounds 3]

Reports, side by side and from the same run:
- `mix` wall time and peak RSS (in a fresh subprocess, so the figure is the mixer's own), targets ≤ 30 s, ≤ 500 MB;
- records/s (JSON decoded into `Record`, no media) iterating the mixture vs iterating its largest source dataset
  alone front to back (the baseline), target ≥ 0.8×; plus random access `mixture[i]` and the MixtureLoader.
The datasets are written straight in the built layout (JSONL shards + uint64 index + dataset.json) rather than
through a builder: building is not what is measured, and it keeps the setup to seconds. They are reused if present.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmdata.dataset import Dataset  # noqa: E402
from mmdata.manifest import SCHEMA_VERSION, Manifest  # noqa: E402

SHARE = {"large": 0.6, "medium": 0.3, "small": 0.1}
SHARD = 100_000


def write_dataset(out: Path, name: str, n: int) -> None:
    if (out / "dataset.json").is_file():
        return
    (out / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for s, lo in enumerate(range(0, n, SHARD)):
        lines = [orjson.dumps({"id": f"{name}-{i}", "source": name, "task": "text", "media": [],
                               "conversations": [{"from": "human", "value": f"Question {i} about {name}?"},
                                                 {"from": "gpt", "value": f"The answer to {i} is {i * 7 % 1000}."}],
                               "meta": {"ref": f"{name}.jsonl:{i + 1}"}}) + b"\n" for i in range(lo, min(n, lo + SHARD))]
        offsets = np.cumsum([0] + [len(x) for x in lines[:-1]], dtype="<u8")
        data = b"".join(lines)
        (out / "shards" / f"{s:06d}.jsonl").write_bytes(data)
        (out / "shards" / f"{s:06d}.idx").write_bytes(offsets.tobytes())
        shards.append({"name": f"{s:06d}", "count": len(lines), "read": len(lines), "rejected": 0,
                       "files": {"jsonl": {"name": f"shards/{s:06d}.jsonl", "bytes": len(data), "sha256": ""}}})
    Manifest(schema_version=SCHEMA_VERSION, builder="bench", args={}, formats=["jsonl"], shard_size=SHARD,
             media_root=None, counts={"read": n, "written": n, "rejected": 0}, tasks={"text": n},
             sources={name: n}, shards=shards).save(out)


def rate(records: object, limit: int) -> float:
    t = time.perf_counter()
    n = 0
    for _ in records:  # type: ignore[attr-defined]
        n += 1
        if n == limit:
            break
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "mix")
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--read", type=int, default=1_000_000, help="records read in each iteration measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out: Path = args.out
    t = time.perf_counter()
    for name, share in SHARE.items():
        write_dataset(out / name, name, int(args.records * share))
    print(f"datasets ready in {time.perf_counter() - t:.1f} s: "
          + ", ".join(f"{k} {int(args.records * v):,}" for k, v in SHARE.items()))
    # Weights unlike the sizes, so every source is sampled, and one is repeated.
    recipe = out / "bench.yaml"
    recipe.write_text(f"name: bench\nseed: 0\nsize: {args.records}\nsources:\n  - {{path: large, weight: 0.5}}\n"
                      "  - {path: medium, weight: 0.3}\n  - {path: small, weight: 0.2}\n")

    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from mmdata.mix import mix; "
                    "mix(Path(sys.argv[1]), Path(sys.argv[2]))", str(recipe), str(out / "mixture")],
                   check=True, cwd=ROOT)
    mix_s = time.perf_counter() - t
    mix_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    import torch.utils.data  # noqa: F401 - imported before any clock starts

    from mmdata.loader import MixtureLoader, RecordDataset
    from mmdata.mixture import Mixture

    mixture = Mixture(out / "mixture")
    largest = Dataset(out / "large")
    n = min(args.read, len(largest))
    random_n = min(n, 200_000)
    positions = np.random.default_rng(0).integers(0, len(mixture), random_n).tolist()
    rate(largest, n), rate(mixture, n)  # warm the page cache for both, so neither pays the disk
    # The machine is shared: rounds alternate baseline and contenders, and each keeps its best round.
    single = mixed = random_rate = loader_rate = 0.0
    for _ in range(args.rounds):
        single = max(single, rate(largest, n))
        mixed = max(mixed, rate(mixture, n))
        random_rate = max(random_rate, rate((mixture[i] for i in positions), random_n))
        loader = MixtureLoader(RecordDataset(mixture), batch_size=64, collate_fn=list)
        loader_rate = max(loader_rate, rate((r for batch in loader for r in batch), random_n))

    rows = [
        ("mmdata mix wall time", f"{mix_s:.1f} s", "<= 30 s", mix_s <= 30),
        ("mmdata mix peak RSS", f"{mix_mb:.0f} MB", "<= 500 MB", mix_mb <= 500),
        ("iterate largest dataset alone (baseline)", f"{single:,.0f} rec/s", "", True),
        ("iterate the mixture", f"{mixed:,.0f} rec/s ({mixed / single:.2f}x)", ">= 0.8x", mixed >= 0.8 * single),
        ("mixture[i], random i", f"{random_rate:,.0f} rec/s ({random_rate / single:.2f}x)", "", True),
        ("MixtureLoader, batch 64, 0 workers", f"{loader_rate:,.0f} rec/s ({loader_rate / single:.2f}x)", "", True),
    ]
    print(f"\n{len(mixture):,} samples from {len(mixture.datasets)} datasets; {n:,} records per iteration figure\n")
    for what, value, target, ok in rows:
        print(f"{what:<42} {value:>26}  {target:>9}  {'' if not target else 'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
