"""Step time of `mmtrain stage2` (DeepSpeed engine) beside a bare PyTorch loop on the same model and batches.

Both on the tiny recipe (`recipes/tiny/stage2.yaml`), in one process, one after the other: the loop's
`metrics.jsonl` step times (data loading included, warm-up steps dropped) against plain AdamW on the same
micro-batches, pre-collated (so the bare loop is the lower bound: no data loading at all). Run for the recipe's
ZeRO-3 and for ZeRO-2. Target: ≤ 1.1× the bare loop. Writes bench_out/train_step.json.

    .venv/bin/python bench/train_step.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
WARMUP = 3


def make_world(root: Path) -> tuple[Path, Path]:
    from mmdata.testing.train import make_train_world

    return make_train_world(root, size=800)


def bare_loop(recipe, steps: int) -> list[float]:
    """Same model (loaded the same way), same micro-batches, plain AdamW: what the engine must not slow down much."""
    import torch

    from mmdata.loader import MixtureLoader
    from mmdata.mixture import Mixture
    from trainer.data import Collator, ConversationDataset
    from trainer.engine import param_groups, prepare_model
    from trainer.train import TENSOR_KEYS

    torch.manual_seed(recipe.train.seed)
    model = prepare_model(recipe).model
    mixture = Mixture(recipe.data.mixture)
    data = ConversationDataset.for_model(mixture, model, max_length=recipe.data.max_length,
                                         on_error="skip")
    accum = recipe.batch.resolve(1)
    loader = MixtureLoader(data, batch_size=recipe.batch.per_device, collate_fn=Collator(model.pad_token_id))
    batches = [b for _, b in zip(range(steps * accum), loader)]
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=recipe.optim.lr)
    model.train()
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        for b in batches[s * accum:(s + 1) * accum]:
            out = model(**{k: b[k] for k in TENSOR_KEYS})
            (out.loss / accum).backward()
        if recipe.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], recipe.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times[WARMUP:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    import torch

    from trainer.metrics import read
    from trainer.recipe import load_recipe
    from trainer.train import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        models, mixture = make_world(t)
        tiny = ROOT / "recipes" / "tiny"
        quiet = {"logging.progress": False, "logging.tensorboard": False, "data.mixture": str(mixture)}
        train(load_recipe(tiny / "stage1.yaml", quiet | {
            "model.llm": str(models / "lm"), "model.vision_tower": str(models / "vision"),
            "output_dir": str(t / "s1"), "train.max_steps": 2}))
        results = {}
        for zero in (3, 2):
            recipe = load_recipe(tiny / "stage2.yaml", quiet | {
                "init_from": str(t / "s1"), "output_dir": str(t / f"s2z{zero}"), "train.max_steps": args.steps,
                "train.zero_stage": zero, "checkpoint.every": 10**6})
            train(recipe)
            rows = read(t / f"s2z{zero}")[WARMUP:]
            engine = statistics.median(r["step_time"] for r in rows)
            bare = statistics.median(bare_loop(recipe, args.steps))
            samples = recipe.batch.per_device * recipe.batch.resolve(1)
            results[f"zero{zero}"] = {"engine_step_s": engine, "bare_step_s": bare, "ratio": engine / bare,
                                      "engine_samples_per_s": samples / engine, "bare_samples_per_s": samples / bare}
    print(f"{'':>6} {'mmtrain step':>13} {'bare step':>10} {'ratio':>6} {'mmtrain samples/s':>18} "
          f"{'bare samples/s':>15}")
    for k, r in results.items():
        print(f"{k:>6} {r['engine_step_s'] * 1e3:>11.1f}ms {r['bare_step_s'] * 1e3:>8.1f}ms {r['ratio']:>6.2f} "
              f"{r['engine_samples_per_s']:>18.1f} {r['bare_samples_per_s']:>15.1f}")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "train_step.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
