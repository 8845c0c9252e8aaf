"""Step time of `mmtrain visualizer` (DeepSpeed engine, data through the project's loader) beside a bare diffusers
training loop on the same tiny UNet, projector, tower, VAE and images.

Both copies start from the same weights (built twice with one seed) and run in one process, as interleaved pairs
(ours then bare, then bare then ours, …) after a warm-up, so load on the machine hits both alike. The bare loop is
the one in diffusers' text-to-image example: pre-collated batches (no data loading at all), tower and VAE under
no_grad, projector → context (dropped rows zeroed), add_noise, UNet, MSE, backward, clip, AdamW. Ours is the real
step: loader (image decoding, VAE and tower preprocessing), the same math through the engine. Target: ≤ 1.1×.
Writes bench_out/visualizer_step.json.

    .venv/bin/python bench/visualizer_step.py [--pairs 30]
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
os.environ.setdefault("MMTRAIN_SHM_COMM", "0")
WARMUP = 3


def make_world(root: Path) -> dict[str, str]:
    """Tiny LM + tower saved as a unified model (the condition's source), 8 text → image records, a tiny UNet/VAE."""
    import torch

    from trainer import ModelConfig, build_model
    from trainer.tiny import make_train_world
    from trainer.visualizer.tiny import make_tiny_diffusion

    models, _ = make_train_world(root, size=16)
    torch.manual_seed(0)
    cfg = ModelConfig(llm=str(models / "lm"), vision_tower=str(models / "vision"), num_image_tokens=4)
    build_model(cfg).model.save_pretrained(root / "model")
    return {"condition.from_model": str(root / "model"), "data.source": str(root / "t2i"),
            "diffusion.pretrained": str(make_tiny_diffusion(root / "diffusion"))}


class Bare:
    """diffusers' example loop on a copy of the same parts."""

    def __init__(self, recipe, batches) -> None:
        import torch

        from trainer.visualizer.config import resolve_condition
        from trainer.visualizer.export import build
        from trainer.visualizer.train import param_groups

        torch.manual_seed(recipe.train.seed)
        self.net, self.enc = build(recipe, resolve_condition(recipe.condition))
        self.opt = torch.optim.AdamW(param_groups(self.net, recipe.optim.weight_decay), lr=recipe.optim.lr)
        self.batches, self.recipe = batches, recipe
        self.net.train()

    def step(self, k: int) -> float:
        import torch
        import torch.nn.functional as F

        from trainer.visualizer.model import draw, step_generator

        t0 = time.perf_counter()
        b = self.batches[k % len(self.batches)]
        gen = step_generator(self.recipe.train.seed, 0, k, 0)
        with torch.no_grad():
            latents = self.enc.vae.encode(b["pixels"]).latent_dist.sample(generator=gen) * self.enc.vae.config.scaling_factor
            tokens = self.enc.tokens(b["tower_pixels"])
        d = draw(latents, gen, num_train_timesteps=1000, cond_dropout=self.recipe.diffusion.cond_dropout,
                 noise_offset=self.recipe.diffusion.noise_offset)
        ctx = self.net.projector(tokens)
        ctx = torch.where(d.drop[:, None, None], torch.zeros_like(ctx), ctx)
        noisy = self.net.scheduler.add_noise(latents, d.noise, d.timesteps)
        pred = self.net.unet(noisy, d.timesteps, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(pred.float(), d.noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad],
                                       self.recipe.optim.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=30)
    args = ap.parse_args()
    import torch

    from trainer.visualizer.config import load_visualizer_recipe
    from trainer.visualizer.data import collate
    from trainer.visualizer.train import prepare

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        world = make_world(t)
        n = WARMUP + args.pairs
        recipe = load_visualizer_recipe(ROOT / "recipes" / "tiny" / "visualizer.yaml", world | {
            "output_dir": str(t / "run"), "train.max_steps": n, "logging.progress": False,
            "data.images": "target", "checkpoint.every": 10**6})
        ours = prepare(recipe)
        data = ours.loader.data
        per = recipe.batch.per_device
        batches = [collate([data[i] for i in range(j, j + per)]) for j in range(0, len(data) - per + 1, per)]
        bare = Bare(recipe, batches)
        ours_t, bare_t = [], []
        for k in range(n):
            if k % 2 == 0:
                a = ours.stepper.step(k)["step_time"]
                b = bare.step(k)
            else:
                b = bare.step(k)
                a = ours.stepper.step(k)["step_time"]
            if k >= WARMUP:
                ours_t.append(a)
                bare_t.append(b)
    ratios = sorted(a / b for a, b in zip(ours_t, bare_t))
    q = statistics.quantiles(ratios, n=4)
    res = {"pairs": len(ratios), "ours_step_ms": 1e3 * statistics.median(ours_t),
           "bare_step_ms": 1e3 * statistics.median(bare_t), "ratio_median": statistics.median(ratios),
           "ratio_p25": q[0], "ratio_p75": q[2], "ratio_min": ratios[0], "ratio_max": ratios[-1],
           "batch": per, "resolution": recipe.diffusion.resolution}
    print(f"visualizer step, batch {per} at {res['resolution']} px, {res['pairs']} interleaved pairs:")
    print(f"  mmtrain visualizer {res['ours_step_ms']:.1f} ms   bare diffusers loop {res['bare_step_ms']:.1f} ms   "
          f"ratio median {res['ratio_median']:.3f} (IQR {q[0]:.3f}–{q[2]:.3f}, range {ratios[0]:.3f}–{ratios[-1]:.3f})")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "visualizer_step.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
