"""Stage-1 step time with cached vision features vs the live tower, at SigLIP-so400m shape.

Tower: SigLIP so400m-patch14-384's shape (27 layers, width 1152, MLP 4304, 16 heads, 384 px, patch 14 → 729
patches; random weights), reduced to N = 64 tokens; a small random Llama (4 layers, width 256). Stage 1: projector
+ new token rows train. The same micro-batch (`--batch` caption records, one image each) is run live (pixels →
tower → reduction) and from a cache that `trainer.features.build_cache` wrote for it, alternating (interleaved
pairs); prints both step times, the ratio (median, min, max) and the one-off cost of caching an image.

    .venv/bin/python bench/vision_cache.py [--repeats 3] [--batch 2] [--layers 27]
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
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
          "image_size": 384, "patch_size": 14}
SMALL_LM = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--layers", type=int, default=27)
    args = ap.parse_args()
    import torch
    from packing import fake_image

    from mmdata import Media, Record, RecordList, Turn
    from trainer import STAGES, Collator, ConversationDataset, ModelConfig, apply_stage, build_model, make_tiny
    from trainer.engine import param_groups
    from trainer.features import FeatureStore, build_cache
    from trainer.train import model_inputs

    torch.manual_seed(0)
    records = RecordList([Record(f"c{i}", "bench", "t2i", [Turn("human", "Draw a red cat on a tree."),
                                                           Turn("gpt", "<image>")], [Media(f"{i}.png")]).validate()
                          for i in range(args.batch)], fake_image)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        paths = make_tiny(t / "models", llm_shape=SMALL_LM, vision_shape=SO400M | {"num_hidden_layers": args.layers})
        model = build_model(ModelConfig(llm=str(paths.lm), vision_tower=str(paths.vision), num_image_tokens=64,
                                        template="plain")).model
        apply_stage(model, STAGES["stage1"])
        t0 = time.perf_counter()
        build_cache(model, records, t / "cache", batch_size=args.batch, progress=False)
        per_image = (time.perf_counter() - t0) / args.batch
        live = ConversationDataset.for_model(records, model, max_length=512)
        cached = ConversationDataset.for_model(records, model, max_length=512,
                                               features=FeatureStore.open(t / "cache", model))
        collate = Collator(model.pad_token_id)
        batches = {"live": collate([live[i] for i in range(len(records))]),
                   "cached": collate([cached[i] for i in range(len(records))])}
        opt = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-4)
        times: dict[str, list[float]] = {"live": [], "cached": []}
        losses = {}
        for r in range(args.repeats + 1):  # the first pair warms up
            for mode, b in batches.items():
                t0 = time.perf_counter()
                out = model(**model_inputs(b))
                out.loss.backward()
                opt.zero_grad(set_to_none=True)  # no update: every repeat sees the same weights and loss
                dt = time.perf_counter() - t0
                losses[mode] = out.loss.item()
                if r:
                    times[mode].append(dt)
    ratio = [a / b for a, b in zip(times["live"], times["cached"])]
    res = {m: {"median": statistics.median(v), "min": min(v), "max": max(v)} for m, v in times.items()}
    res |= {"live_over_cached": {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)},
            "cache_build_s_per_image": per_image, "loss": losses, "tower_layers": args.layers, "batch": args.batch}
    print(f"stage-1 step, {args.batch} images, tower {args.layers} × 1152 @ 384 px, {args.repeats} interleaved pairs")
    for m in ("live", "cached"):
        print(f"  {m:>6}: {res[m]['median'] * 1e3:,.0f} ms [{res[m]['min'] * 1e3:,.0f}, {res[m]['max'] * 1e3:,.0f}]"
              f"  loss {losses[m]:.6f}")
    q = res["live_over_cached"]
    print(f"  live / cached: {q['median']:.1f}× [{q['min']:.1f}, {q['max']:.1f}]; caching costs "
          f"{per_image:.2f} s per image once")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "vision_cache.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
