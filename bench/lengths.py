"""Start-up cost of packing / length grouping: the expanded-length table, tokenized every launch vs cached.

    .venv/bin/python bench/lengths.py [--records 100000] [--repeats 3] [--out bench_out/lengths]

A text-only mixture of `--records` conversations (1-3 exchanges of 10-120 words each; two built datasets, mixed 2:1)
and the tiny model's tokenizer (llama3 template, max_length 4,096). Each round runs, interleaved:
- before: what every rank did at each launch until now, `ConversationDataset.length(i)` for every position (one
  record read and tokenized at a time);
- cold: `trainer.lengths.expanded_lengths` into an empty cache on one rank (batched reads; with R ranks each
  tokenizes 1/R of the rows), which also writes the tables;
- warm: the same call with the cache in place, what every later launch (and every rank) pays.
Prints the median and spread (min-max) of each and the before/warm ratio. The datasets are reused if present.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORDS = ["the", "a", "red", "cat", "dog", "sky", "tree", "house", "car", "runs", "left", "small", "bright", "what",
         "where", "how", "many", "is", "are", "of", "on", "in", "with", "and", "picture", "photo", "answer", "look"]


def build_world(out: Path, n: int) -> Path:
    """Two text datasets built by the cambrian builder and a `mmdata mix` of them: `out/mixture`."""
    import mmdata

    try:
        mmdata.open(out / "mixture")
        return out / "mixture"
    except mmdata.NotFound:
        pass
    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import BuildSettings, build
    from mmdata.mix.planner import mix

    rng = random.Random(0)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    out.mkdir(parents=True, exist_ok=True)
    for name, count in (("chat", n * 2 // 3), ("qa", n - n * 2 // 3)):
        src = out / f"{name}.jsonl"
        with src.open("w") as f:
            for i in range(count):
                turns = []
                for _ in range(rng.randint(1, 3)):
                    turns += [{"from": "human", "value": text(10, 60) + "?"}, {"from": "gpt", "value": text(10, 120)}]
                f.write(json.dumps({"id": f"{name}{i}", "conversations": turns}) + "\n")
        build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=out / name))
    (out / "mix.yaml").write_text(f"seed: 0\nsize: {n}\nsources:\n  - {{path: chat, weight: 2}}\n"
                                  "  - {path: qa, weight: 1}\n")
    mix(out / "mix.yaml", out / "mixture")
    return out / "mixture"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "lengths")
    args = ap.parse_args()

    from mmdata import Mixture
    from trainer import ConversationDataset, ModelConfig, build_model, make_tiny
    from trainer.lengths import expanded_lengths

    mixture_dir = build_world(args.out / f"world-{args.records}", args.records)
    if not (args.out / "models" / "lm").is_dir():
        make_tiny(args.out / "models")
    model = build_model(ModelConfig(llm=str(args.out / "models" / "lm"),
                                    vision_tower=str(args.out / "models" / "vision"), num_image_tokens=64)).model

    def data() -> ConversationDataset:  # a fresh dataset per launch, as a new process would have
        return ConversationDataset.for_model(Mixture(mixture_dir), model, max_length=4096, on_error="skip")

    cache = args.out / "cache"
    times: dict[str, list[float]] = {"before": [], "cold": [], "warm": []}
    reference = None
    for r in range(args.repeats):
        d = data()
        t0 = time.perf_counter()
        before = [d.length(i) for i in range(len(d))]
        times["before"].append(time.perf_counter() - t0)
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        cold, stats = expanded_lengths(data(), cache)
        times["cold"].append(time.perf_counter() - t0)
        assert stats.computed > 0
        t0 = time.perf_counter()
        warm, stats = expanded_lengths(data(), cache)
        times["warm"].append(time.perf_counter() - t0)
        assert stats.computed == 0 and before == cold == warm
        reference = reference or before
        print(f"round {r + 1}: before {times['before'][-1]:.2f}s  cold {times['cold'][-1]:.2f}s  "
              f"warm {times['warm'][-1]:.3f}s", flush=True)
    assert reference is not None
    fmt = {k: f"{statistics.median(v):.3f}s [{min(v):.3f}, {max(v):.3f}]" for k, v in times.items()}
    ratio = [b / w for b, w in zip(times["before"], times["warm"])]
    du = subprocess.run(["du", "-sh", str(cache)], capture_output=True, text=True).stdout.split()[0]
    print(f"\nexpanded lengths of {len(reference):,} samples (mean {statistics.mean(reference):.0f} tokens), "
          f"{args.repeats} interleaved rounds, median [min, max]:")
    print(f"  before (every rank, every launch): {fmt['before']}")
    print(f"  cold cache (one rank; 1/R each on R ranks): {fmt['cold']}")
    print(f"  warm cache (every later launch, every rank): {fmt['warm']}; cache {du}")
    print(f"  before / warm: {statistics.median(ratio):.0f}× [{min(ratio):.0f}, {max(ratio):.0f}]")


if __name__ == "__main__":
    main()
