"""The training half of `make demo`: tiny models, `mmtrain stage1`, `mmtrain stage2`, the loss curve, then
`mmtrain visualizer` and `mmtrain generate` writing a PNG.

Called by `scripts/demo.py` once the sample datasets are built and mixed. Every step is the real CLI a user types,
with the tiny recipes (`recipes/tiny/`) and the demo's paths as overrides.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from trainer.metrics import loss_table, read, sparkline

DEMO_STEPS = 24  # per stage: enough for a visible curve, a few seconds each on 2 cores


def run(root: Path, out: Path, mixture: Path, *, say: Callable[[str], None],
        run: Callable[[list[str]], None]) -> dict[str, Path]:
    from trainer.tiny import make_tiny

    mmtrain = str(Path(sys.executable).parent / "mmtrain")
    models = out / "models"
    say("create a tiny random LLM + tokenizer + vision tower (stands in for Llama-3 and SigLIP)")
    paths = make_tiny(models)
    print(f"  LM + tokenizer {paths.lm}\n  vision tower   {paths.vision}")
    runs = out / "runs"
    common = ["--data.mixture", str(mixture), "--train.max_steps", str(DEMO_STEPS), "--checkpoint.every", "10",
              "--logging.progress", "false"]

    say("stage 1: projector + new image-token rows (LLM and vision frozen, ZeRO-2)")
    run([mmtrain, "stage1", "--config", str(root / "recipes" / "tiny" / "stage1.yaml"),
         "--model.llm", str(paths.lm), "--model.vision_tower", str(paths.vision),
         "--output_dir", str(runs / "stage1"), *common])
    say("stage 2: LLM + projector + vision head from stage 1's export, vision loss on (ZeRO-3)")
    run([mmtrain, "stage2", "--config", str(root / "recipes" / "tiny" / "stage2.yaml"),
         "--init_from", str(runs / "stage1"), "--output_dir", str(runs / "stage2"), *common])

    say("loss curves (from metrics.jsonl)")
    for stage in ("stage1", "stage2"):
        rows = read(runs / stage)
        losses = [r["loss"] for r in rows]
        print(f"\n{stage}: loss {losses[0]:.3f} → {losses[-1]:.3f}   {sparkline(losses)}")
        print(loss_table(rows))

    say("generate with the exported model (greedy, untrained-size model: expect gibberish)")
    from trainer.generate import generate

    g = generate(runs / "stage2" / "export", "Draw a red cat.", max_new_tokens=12)
    print(f"  prompt 'Draw a red cat.' → {g.text!r} ({len(g.images)} image(s) predicted)")
    found = {"models": models, "stage1": runs / "stage1", "stage2": runs / "stage2",
             "export": runs / "stage2" / "export"}
    return found | visualize(root, out, mmtrain, say=say, run=run)


def visualize(root: Path, out: Path, mmtrain: str, *, say: Callable[[str], None],
              run: Callable[[list[str]], None]) -> dict[str, Path]:
    """A tiny visualizer on stage 2's image tokens (the CC12M sample's images), then text → predicted tokens → PNG,
    with the real CLI."""
    from trainer.visualizer.tiny import make_tiny_diffusion

    say("create a tiny random UNet + VAE (stands in for Stable Diffusion 1.5)")
    diffusion = make_tiny_diffusion(out / "models" / "diffusion")
    print(f"  unet/ vae/ scheduler/ in {diffusion}")
    runs = out / "runs"
    say("visualizer: condition projector + UNet on stage 2's image tokens (VAE and tower frozen)")
    run([mmtrain, "visualizer", "--config", str(root / "recipes" / "tiny" / "visualizer.yaml"),
         "--condition.from_model", str(runs / "stage2"), "--diffusion.pretrained", str(diffusion),
         "--data.source", str(out / "data" / "cc12m"),
         "--output_dir", str(runs / "visualizer"), "--logging.progress", "false"])
    losses = [r["loss"] for r in read(runs / "visualizer")]
    print(f"\nvisualizer: loss {losses[0]:.3f} → {losses[-1]:.3f}   {sparkline(losses)}")

    say("generate a picture: the LLM predicts image tokens, the visualizer renders them (random weights: noise)")
    picture = out / "generated" / "red_cat.png"
    run([mmtrain, "generate", "--model", str(runs / "stage2" / "export"), "--visualizer",
         str(runs / "visualizer" / "export"), "--prompt", "Draw a red cat.", "--start-image",
         "--max-new-tokens", "8", "--steps", "10", "--seed", "0", "--out", str(picture)])
    return {"visualizer": runs / "visualizer", "picture": picture}
