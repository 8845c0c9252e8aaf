"""Padding unpacked vs packed, and a stage-2 step's real tokens/s packed vs unpacked at equal max_length.

Lengths are the exact expanded lengths the trainer uses (`ConversationDataset.lengths()`, llama3 template, N = 64
image tokens per image, so an image is 66 positions), on two mixtures:
- demo: `make demo`'s sources mixed with recipes/demo_mix.yaml, built here in a temporary directory (~30 s), or
  `--demo-mixture DIR` for one already built;
- metamorph-like: 45-frame video QA (~3,060 tokens), edits (~190: two images + instruction), captions (~95: a
  short caption + one image), 10 / 30 / 60 %.
Padding: batches of `--batch` rows, each batch padded to its longest row; unpacked = one sample per row in mixture
order, packed = `trainer.packing.plan_packs` rows of max_length. Step: forward + backward + AdamW of a stage-2
model (small random Llama, 2 layers, width 128; tiny tower; vision loss on) on `--batch` rows, unpacked and packed
alternating (interleaved pairs), the same max_length; reports real (non-pad) tokens/s, median and spread.

    .venv/bin/python bench/packing.py [--repeats 5] [--demo-mixture DIR] [--max-length 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
N = 64


def demo_mixture(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    import demo

    demo.OUT = tmp / "demo_out"
    demo.OUT.mkdir()
    demo.build_sources()
    recipe = (ROOT / "recipes" / "demo_mix.yaml").read_text().replace("../demo_out/", f"{demo.OUT}/")
    (tmp / "demo_mix.yaml").write_text(recipe)
    subprocess.run([str(Path(sys.executable).parent / "mmdata"), "mix", str(tmp / "demo_mix.yaml"), "--out",
                    str(tmp / "mixture")], check=True, capture_output=True)
    return tmp / "mixture"


def metamorph_like(n: int, seed: int = 0) -> list:
    from mmdata.core.schema import Media, Record, Turn

    rng = random.Random(seed)
    words = ["a", "the", "red", "cat", "dog", "sky", "tree", "house", "car", "runs", "left", "small", "bright"]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    out = []
    for i in range(n):
        u = rng.random()
        if u < 0.1:
            human, gpt, k = "<image>" * 45 + "\nWhat happens in the video?", text(rng.randint(10, 40)), 45
        elif u < 0.4:
            human, gpt, k = "<image>\n" + text(rng.randint(5, 30)), "<image>", 2
        else:
            human, gpt, k = text(rng.randint(4, 12)), "<image>", 1
        out.append(Record(f"m{i}", "bench", "mixed", [Turn("human", human), Turn("gpt", gpt)],
                          [Media(f"{i}/{j}.png") for j in range(k)]).validate())
    return out


def fake_image(record, j):
    from PIL import Image

    s = sum(map(ord, record.id)) + 31 * j
    return Image.new("RGB", (40, 32), (s % 256, (3 * s) % 256, (7 * s) % 256))


def padding_table(name: str, lengths: list[int], max_length: int, batch: int) -> dict:
    from trainer.packing import padding, plan_packs

    unpacked = padding(lengths, [[i] for i in range(len(lengths))], batch)
    packs = plan_packs(lengths, max_length)
    packed = padding(lengths, packs, batch)
    row = {"samples": len(lengths), "mean_length": statistics.mean(lengths), "max_length": max(lengths),
           "unpacked_padding": unpacked[1] / sum(unpacked), "packed_padding": packed[1] / sum(packed),
           "packs": len(packs), "samples_per_pack": len(lengths) / len(packs)}
    print(f"{name:>15} {row['samples']:>8} {row['mean_length']:>9.0f} {row['max_length']:>7} "
          f"{100 * row['unpacked_padding']:>15.1f}% {100 * row['packed_padding']:>13.1f}% "
          f"{row['samples_per_pack']:>13.1f}")
    return row


def step_bench(model, data, lengths: list[int], max_length: int, batch: int, repeats: int) -> dict:
    import torch

    from trainer.data import Collator
    from trainer.engine import param_groups
    from trainer.packing import plan_packs
    from trainer.train import model_inputs

    packs = plan_packs(lengths, max_length)
    rows = {"unpacked": [[i] for i in range(len(lengths))], "packed": packs}
    collate = {"unpacked": Collator(model.pad_token_id), "packed": Collator(model.pad_token_id, packed=True)}
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-4)
    rates: dict[str, list[float]] = {"unpacked": [], "packed": []}
    for r in range(repeats + 1):  # the first pair warms up
        for mode in ("unpacked", "packed"):
            chosen = rows[mode][r * batch % len(rows[mode]):][:batch]
            items = [[data[i] for i in row] for row in chosen] if mode == "packed" else [data[row[0]]
                                                                                         for row in chosen]
            b = collate[mode](items)
            t0 = time.perf_counter()
            out = model(**model_inputs(b))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            if r:
                rates[mode].append(int(b["attention_mask"].sum()) / dt)
    res = {m: {"median": statistics.median(v), "min": min(v), "max": max(v)} for m, v in rates.items()}
    ratio = [p / u for p, u in zip(rates["packed"], rates["unpacked"])]
    res["ratio"] = {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--demo-mixture", type=Path)
    args = ap.parse_args()
    import torch

    from mmdata import Mixture, RecordList
    from trainer import STAGES, ConversationDataset, ModelConfig, apply_stage, build_model, make_tiny

    torch.manual_seed(0)
    torch.set_num_threads(2)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        paths = make_tiny(t / "models", llm_shape={"hidden_size": 128, "intermediate_size": 256,
                                                   "num_attention_heads": 4, "max_position_embeddings": 8192})
        model = build_model(ModelConfig(llm=str(paths.lm), vision_tower=str(paths.vision), num_image_tokens=N)).model
        apply_stage(model, STAGES["stage2"])
        mixture = Mixture(args.demo_mixture or demo_mixture(t))
        sets = {"demo": mixture, "metamorph-like": RecordList(metamorph_like(2000), fake_image)}
        print(f"padding at max_length {args.max_length}, {args.batch} rows per batch, N = {N}")
        print(f"{'mixture':>15} {'samples':>8} {'mean len':>9} {'longest':>7} {'unpacked padding':>16} "
              f"{'packed padding':>14} {'samples/pack':>13}")
        datasets = {}
        for name, source in sets.items():
            ds = ConversationDataset.for_model(source, model, max_length=args.max_length, on_error="skip")
            lengths = ds.lengths()
            results[name] = {"padding": padding_table(name, lengths, args.max_length, args.batch)}
            datasets[name] = (ds, lengths)
        print(f"\nstage-2 step, real tokens/s ({args.repeats} interleaved pairs; median [min, max])")
        for name, (ds, lengths) in datasets.items():
            r = step_bench(model, ds, lengths, args.max_length, args.batch, args.repeats)
            results[name]["step"] = r
            fmt = "{median:,.0f} [{min:,.0f}, {max:,.0f}]"
            print(f"{name:>15}  unpacked {fmt.format(**r['unpacked'])}  packed {fmt.format(**r['packed'])}  "
                  f"packed/unpacked {r['ratio']['median']:.2f}× [{r['ratio']['min']:.2f}, {r['ratio']['max']:.2f}]")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "packing.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
