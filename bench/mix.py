"""Benchmark `mmdata mix` and the mixture loader on three datasets totalling 5,000,000 records.

    .venv/bin/python bench/mix.py [--out bench_out/mix] [--records 5000000] [--read 1000000] [--rounds 5]

Reports, from the same run:
- `mix` wall time and peak RSS (in a fresh subprocess, so the figure is the mixer's own), targets ≤ 30 s, ≤ 500 MB;
- records/s (JSON decoded into `Record`, no media) of each reader against the baseline, a sequential scan of the
  largest source (its JSONL shards read front to back, line by line, and decoded): iterating the mixture (target
  ≥ 0.8×), the like-for-like figure (the largest source alone, in the same shuffled order: a one-source mixture),
  random access `mixture[i]`, and the training path (`MixtureLoader(RecordDataset(mixture))`, batches of 64).
  Rounds interleave the baseline and every contender; each figure is the median ratio to its round's baseline,
  with the spread (min–max) over rounds.
The datasets are written through `mmdata.DatasetWriter` rather than a builder: building is not what is measured.
They are reused if present.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mmdata  # noqa: E402
from mmdata import Record, Turn  # noqa: E402

SHARE = {"large": 0.6, "medium": 0.3, "small": 0.1}
SHARD = 100_000


def is_built(path: Path) -> bool:
    try:
        mmdata.open(path)
    except mmdata.NotFound:
        return False
    return True


def write_dataset(out: Path, name: str, n: int) -> None:
    if is_built(out):
        return
    with mmdata.DatasetWriter(out, shard_size=SHARD, name="bench") as w:
        for lo in range(0, n, SHARD):
            w.add_many([Record(f"{name}-{i}", name, "text", [Turn("human", f"Question {i} about {name}?"),
                                                             Turn("gpt", f"The answer to {i} is {i * 7 % 1000}.")],
                               meta={"ref": f"{name}.jsonl:{i + 1}"}) for i in range(lo, min(n, lo + SHARD))])


def scan(root: Path) -> Iterator[Record]:
    """The baseline: a dataset's JSONL shards read front to back and decoded, with nothing of mmdata's reader (the
    files from `shard_files()`)."""
    ds = mmdata.open(root)
    assert isinstance(ds, mmdata.Dataset) and ds.form == "jsonl"
    for shard in ds.shard_files():
        with open(shard.location, "rb") as f:
            for line in f:
                yield Record.from_dict(orjson.loads(line))


def rate(records: Iterable[object], limit: int) -> float:
    t = time.perf_counter()
    n = 0
    for _ in records:
        n += 1
        if n == limit:
            break
    return n / (time.perf_counter() - t)


def mix_to(recipe: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from mmdata.mix.planner import mix; "
                    "mix(Path(sys.argv[1]), Path(sys.argv[2]))", str(recipe), str(out)], check=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "mix")
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--read", type=int, default=1_000_000, help="records read in each iteration measurement")
    ap.add_argument("--rounds", type=int, default=5)
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
    mix_to(recipe, out / "mixture")
    mix_s = time.perf_counter() - t
    mix_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    alone = out / "large-only.yaml"  # the largest source by itself, in a shuffled order: the like-for-like figure
    alone.write_text("name: large-only\nseed: 0\nsources:\n  - {path: large, epochs: 1}\n")
    mix_to(alone, out / "large-only")

    import torch.utils.data  # noqa: F401 - imported before any clock starts

    mixture, shuffled = mmdata.open(out / "mixture"), mmdata.open(out / "large-only")
    assert isinstance(mixture, mmdata.Mixture) and isinstance(shuffled, mmdata.Mixture)
    n = min(args.read, len(shuffled))
    random_n = min(n, 200_000)
    positions = np.random.default_rng(0).integers(0, len(mixture), random_n).tolist()

    def loader() -> Iterator[object]:
        return (r for batch in mmdata.MixtureLoader(mmdata.RecordDataset(mixture), batch_size=64,
                                                    collate_fn=mmdata.collate_list) for r in batch)

    contenders: dict[str, tuple[Callable[[], Iterable[object]], int]] = {
        "iterate the mixture": (lambda: mixture, n),
        "like-for-like: largest alone, shuffled": (lambda: shuffled, n),
        "mixture[i], random i": (lambda: (mixture[i] for i in positions), random_n),
        "MixtureLoader, batch 64, 0 workers": (loader, random_n),
    }
    rate(scan(out / "large"), n), rate(mixture, n), rate(shuffled, n)  # warm the page cache: nobody pays the disk
    # The machine is shared: every round measures the baseline and then each contender, and a contender's figure
    # is its ratio to the baseline of its own round.
    base: list[float] = []
    ratios: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        base.append(rate(scan(out / "large"), n))
        for what, (make, limit) in contenders.items():
            ratios[what].append(rate(make(), limit) / base[-1])

    print(f"\nmmdata mix wall time {mix_s:.1f} s (target <= 30 s), peak RSS {mix_mb:.0f} MB (target <= 500 MB)")
    print(f"{len(mixture):,} samples from {len(mixture.datasets)} datasets; {n:,} records per iteration figure, "
          f"{args.rounds} interleaved rounds; median (min-max) over rounds\n")
    print(f"{'sequential scan of the largest source (baseline)':<50} {statistics.median(base):>10,.0f} rec/s "
          f"({min(base):,.0f}-{max(base):,.0f})")
    for what, values in ratios.items():
        med = statistics.median(values)
        target = "  target >= 0.8x: " + ("ok" if med >= 0.8 else "MISSED") if what == "iterate the mixture" else ""
        print(f"{what:<50} {med * statistics.median(base):>10,.0f} rec/s  {med:.2f}x "
              f"({min(values):.2f}-{max(values):.2f}){target}")


if __name__ == "__main__":
    main()
