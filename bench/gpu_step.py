"""Stage-2 step on one GPU at a real shape: a 1 B-class Llama with a SigLIP-so400m-shape tower, bf16, ZeRO-2, packing.

Random weights, synthetic data (the generated LLaVA world, 64 image tokens per image, packed into rows of
`--max-length`), run through the loop's own step on an engine set up as `mmtrain` does it (no checkpoint or export:
a 1 B model's optimizer state is ~17 GB on disk); prints the median step time, real
tokens/s and MFU = model FLOPs / (step time × the GPU's peak dense bf16 FLOP/s). Model FLOPs per step: 6 × LLM
parameters × real tokens + causal attention 6 × layers × width × Σ(sample length²) + the frozen tower's forward
(2 × tower parameters × 729 patches per image); gradient-checkpointing recompute is not counted (the usual MFU).
Flash-attention 2 is used when installed (varlen through position ids), else SDPA with the block-diagonal mask.
On a machine without a CUDA GPU it prints why and exits 0. Under 5 minutes on one recent GPU.

    .venv/bin/python bench/gpu_step.py [--steps 12] [--max-length 4096] [--per-device 2] [--peak-tflops N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "max_position_embeddings": 8192, "vocab_size": 128256}
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
          "image_size": 384, "patch_size": 14}
PEAK_BF16_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "A100": 312, "A800": 312, "L40S": 362, "L40": 181,
                    "A6000": 155, "RTX 6000 Ada": 365, "RTX 4090": 165, "RTX 3090": 71, "A10": 125, "L4": 121}
WARMUP = 3


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    hit = next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in name.lower()), None)
    return None if hit is None else hit * 1e12


def expanded_lengths(mixture: Path, lm: Path, max_length: int) -> list[int]:
    """The samples' exact expanded lengths (tokenizer only, no image read)."""
    from transformers import AutoTokenizer

    from mmdata import Mixture
    from trainer.data import ConversationDataset

    ds = ConversationDataset(Mixture(mixture), tokenizer=AutoTokenizer.from_pretrained(lm), processor=None,
                             template="llama3", num_image_tokens=64, max_length=max_length, on_error="skip")
    return [n for n in ds.lengths() if n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--per-device", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the built-in table")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, runs on CPU: checks the script itself")
    args = ap.parse_args()
    import torch

    llm_shape, vision_shape = LLAMA_1B, SO400M
    if args.smoke:
        llm_shape = {"max_position_embeddings": 8192}
        vision_shape = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "image_size": 64, "patch_size": 16}
        args.steps, args.max_length = WARMUP + 2, 512
    elif not torch.cuda.is_available():
        print("bench/gpu_step.py: no CUDA GPU on this machine; skipped (it measures a bf16 ZeRO-2 stage-2 step of a "
              "1 B Llama + so400m tower, packed, on one GPU)")
        return
    import importlib.util

    from train_step import loop_stepper

    from tests.worlds import make_train_world
    from trainer.recipe import load_recipe
    from trainer.tiny import make_tiny

    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke run)"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        models, mixture = make_train_world(t, size=2000)
        paths = make_tiny(t / "big", llm_shape=llm_shape, vision_shape=vision_shape)
        recipe = load_recipe(ROOT / "recipes" / "tiny" / "stage1.yaml", {
            "model.llm": str(paths.lm), "model.vision_tower": str(paths.vision), "model.num_image_tokens": 64,
            "model.dtype": "bfloat16", "model.attn_implementation": attn, "data.mixture": str(mixture),
            "data.packing": True, "data.max_length": args.max_length, "data.num_workers": 2,
            "batch.per_device": args.per_device, "batch.grad_accum": 1, "trainable": ["llm", "projector", "vision_head"],
            "vision_loss": True, "train.precision": "bf16", "train.zero_stage": 2, "train.max_steps": args.steps,
            "train.gradient_checkpointing": True, "train.cpu_threads": None, "checkpoint.every": 10**6,
            "output_dir": str(t / "run"), "logging.progress": False, "logging.tensorboard": False})
        stepper, _ = loop_stepper(recipe, args.steps)
        rows = [stepper.step() for _ in range(args.steps)][WARMUP:]
        lengths = expanded_lengths(mixture, paths.lm, args.max_length)
    step = statistics.median(r["step_time"] for r in rows)
    tokens = statistics.median(r["tokens"] for r in rows)
    cfg, v = LLAMA_1B, SO400M  # the smoke run's FLOPs are those of the full shapes: only the pipeline is checked
    d, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    kv = d * cfg["num_key_value_heads"] // cfg["num_attention_heads"]
    llm_params = layers * (2 * d * d + 2 * d * kv + 3 * d * cfg["intermediate_size"]) + 2 * cfg["vocab_size"] * d
    tower_params = v["num_hidden_layers"] * (4 * v["hidden_size"] ** 2 + 2 * v["hidden_size"] * v["intermediate_size"])
    images = statistics.median(r["images"] for r in rows)
    attn_flops = 6 * layers * d * tokens * sum(x * x for x in lengths) / sum(lengths)  # E[L²]/E[L] per token
    flops = 6 * llm_params * tokens + attn_flops + 2 * tower_params * 729 * images
    peak = peak_flops(gpu, args.peak_tflops)
    mfu = f"{100 * flops / step / peak:.1f}%" if peak else "unknown (pass --peak-tflops)"
    print(f"{gpu}, {attn}: stage-2 step {step:.3f} s, {tokens / step:,.0f} real tokens/s "
          f"({tokens:.0f} tokens/step, padding {100 * statistics.median(r['padding'] for r in rows):.1f}%), "
          f"MFU {mfu}")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "gpu_step.json").write_text(json.dumps({"gpu": gpu, "attn": attn, "step_s": step, "tokens": tokens,
                                                   "tokens_per_s": tokens / step, "model_flops": flops,
                                                   "mfu": None if not peak else flops / step / peak}, indent=2))


if __name__ == "__main__":
    main()
