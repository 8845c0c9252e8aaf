"""The loop's step under DeepSpeed (ZeRO-2, ZeRO-3) beside a bare PyTorch loop, tiny and ~100 M-parameter LLMs.

For each size and ZeRO stage, in one process: the training loop's own step (`StageTrainer.train_step`: data
loading and collation, engine forward / backward / step, metrics reduction) on a trainer set up exactly as
`mmtrain` sets it up, and a bare loop (same model and parts, plain AdamW, no DeepSpeed) on the same micro-batches
pre-collated (so the bare loop is the lower bound: no data loading at all). The two alternate step by step
(interleaved pairs, the same batch in both), after warm-up; printed: median step times and the ratio's median and
[min, max] over the pairs. Stage-2 parts (LLM + projector + vision head, vision loss on), fp32, one rank, CPU.

Sizes: `tiny` is the test model (2 layers, width 64); `100m` is a Llama of 12 layers, width 768, MLP 3072
(~115 M parameters) with the tiny tower, on packed rows of 1,024 tokens. Targets at 100 M: ZeRO-2 ≤ 1.1×, ZeRO-3
≤ 1.3× the bare loop.
Writes bench_out/train_step.json.

    .venv/bin/python bench/train_step.py [--steps 8] [--sizes tiny,100m]
"""

from __future__ import annotations

import argparse
import gc
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
WARMUP = 2
SIZES = {
    "tiny": ({}, {"batch.per_device": 4, "batch.grad_accum": 2, "train.cpu_threads": 1}),
    # Packed rows of 1,024 tokens: a realistic amount of work per step, the same in every pair.
    "100m": ({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "num_key_value_heads": 12}, {"batch.per_device": 1, "batch.grad_accum": 1, "train.cpu_threads": 2,
                                           "data.packing": True, "data.max_length": 1024}),
}


def make_world(root: Path, llm_shape: dict) -> tuple[Path, Path]:
    from tests.worlds import make_train_world
    from trainer.tiny import make_tiny

    models, mixture = make_train_world(root, size=400)
    if llm_shape:
        make_tiny(models, llm_shape=llm_shape)  # same tokenizer and tower, a bigger LM in place of the tiny one
    return models, mixture


def setup(recipe, d):
    """The recipe's model (stage parts applied), dataset, loader and collator, built as `mmtrain` builds them."""
    import torch

    from mmdata import Mixture
    from trainer.data import ConversationDataset
    from trainer.engine import prepare_model
    from trainer.train import make_loader

    torch.manual_seed(recipe.train.seed)
    model = prepare_model(recipe).model
    mixture = Mixture(recipe.data.mixture)
    data = ConversationDataset.for_model(mixture, model, max_length=recipe.data.max_length,
                                         on_error="skip")
    return model, data, *make_loader(recipe, data, model.pad_token_id, d)


def interleaved(recipe, steps: int) -> dict:
    """Loop step vs bare step, alternating on the same micro-batches; step times and their ratio per pair."""
    import torch

    from trainer.engine import param_groups
    from trainer.train import StageTrainer, model_inputs

    trainer = StageTrainer(recipe)  # set up as `mmtrain` sets it up; its steps run without checkpoints or export
    accum = trainer.accum
    bare, _, bare_loader, _, _ = setup(recipe, trainer.dist)
    batches = [b for _, b in zip(range(steps * accum), bare_loader)]
    bare_opt = torch.optim.AdamW(param_groups(bare, 0.0), lr=recipe.optim.lr)
    bare.train()

    def bare_step(s: int) -> float:
        t0 = time.perf_counter()
        for b in batches[s * accum:(s + 1) * accum]:
            (bare(**model_inputs(b)).loss / accum).backward()
        if recipe.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in bare.parameters() if p.requires_grad], recipe.optim.grad_clip)
        bare_opt.step()
        bare_opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    pairs = []
    for s in range(steps):
        row = trainer.train_step()
        pairs.append((row["step_time"], bare_step(s), row["tokens"]))
    pairs = pairs[WARMUP:]
    ratios = [e / b for e, b, _ in pairs]
    out = {"engine_step_s": statistics.median(e for e, _, _ in pairs),
           "bare_step_s": statistics.median(b for _, b, _ in pairs),
           "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
           "tokens_per_step": statistics.median(t for _, _, t in pairs), "pairs": len(pairs),
           "params": sum(p.numel() for p in bare.parameters())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8, help="pairs per case, the first 2 are warm-up")
    ap.add_argument("--sizes", default="tiny,100m")
    args = ap.parse_args()
    from trainer.recipe import load_recipe

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for size in args.sizes.split(","):
            shape, batch = SIZES[size]
            models, mixture = make_world(t / size, shape)
            for zero in (2, 3):
                recipe = load_recipe(ROOT / "recipes" / "tiny" / "stage1.yaml", batch | {
                    "model.llm": str(models / "lm"), "model.vision_tower": str(models / "vision"),
                    "data.mixture": str(mixture), "output_dir": str(t / f"{size}-z{zero}"),
                    "trainable": ["llm", "projector", "vision_head"], "vision_loss": True,
                    "train.zero_stage": zero, "train.gradient_checkpointing": True,
                    "logging.progress": False, "logging.tensorboard": False})
                results[f"{size}/zero{zero}"] = r = interleaved(recipe, args.steps)
                gc.collect()  # the engine and both models go before the next case builds its own
                print(f"{size:>5} ZeRO-{zero}: mmtrain {r['engine_step_s'] * 1e3:8.0f} ms  bare "
                      f"{r['bare_step_s'] * 1e3:8.0f} ms  ratio {r['ratio']:.2f} [{r['ratio_min']:.2f}, "
                      f"{r['ratio_max']:.2f}]  ({r['params'] / 1e6:.0f} M params, {r['tokens_per_step']:.0f} "
                      f"tokens/step, {r['pairs']} pairs)", flush=True)
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "train_step.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
