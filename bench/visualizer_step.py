"""Step time of `mmtrain visualizer` (DeepSpeed engine, images through the project's loader) beside a bare diffusers
training loop on the same tiny UNet, projector, tower, VAE and images.

Both copies start from the same weights (built twice with one seed) and run in one process, as interleaved pairs
(ours then bare, then bare then ours, …) after a warm-up, so load on the machine hits both alike. The bare loop is
the one in diffusers' text-to-image example: open the image files with Pillow, the same two preprocessings (VAE
crop, tower processor), tower and VAE under no_grad, projector → context (dropped rows zeroed), add_noise, UNet,
MSE, backward, clip, AdamW. Ours is the real step: records through `RecordDataset` + `MixtureLoader`, the same math
through the engine. Run at ZeRO-2 (the MetaMorph recipe) and ZeRO-0 (the tiny recipe: one process has nothing to
shard). Target: ≤ 1.1×. Writes bench_out/visualizer_step.json.

    .venv/bin/python bench/visualizer_step.py [--pairs 40]
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
    """Tiny LM + tower saved as a unified model (the condition's source), 256 text → image records over the test
    world's pictures (an epoch long enough that the loader's per-epoch start is not what is measured), a tiny UNet/VAE.
    """
    import torch

    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import BuildSettings, build
    from mmdata.testing.llava import make_world as llava_world
    from trainer import ModelConfig, build_model
    from trainer.tiny import make_tiny
    from trainer.visualizer.tiny import make_tiny_diffusion

    w = llava_world(root / "src")
    gen = root / "src" / "t2i.jsonl"
    gen.write_text("".join(json.dumps({"id": f"g{i}", "image": f"coco/{i % 12:06d}.jpg", "conversations": [
        {"from": "human", "value": "Draw the picture."}, {"from": "gpt", "value": "<image>"}]}) + "\n"
        for i in range(256)))
    build("cambrian", CambrianOptions(input=[gen], media_root=w.media_root), BuildSettings(out=root / "t2i"))
    models = make_tiny(root / "models")
    torch.manual_seed(0)
    cfg = ModelConfig(llm=str(models.lm), vision_tower=str(models.vision), num_image_tokens=4)
    build_model(cfg).model.save_pretrained(root / "model")
    return {"condition.from_model": str(root / "model"), "data.source": str(root / "t2i"),
            "diffusion.pretrained": str(make_tiny_diffusion(root / "diffusion"))}


class Bare:
    """diffusers' example loop on a copy of the same parts, reading the same image files."""

    def __init__(self, recipe, files: list[Path]) -> None:
        import torch

        from trainer.engine import param_groups
        from trainer.visualizer.config import resolve_condition
        from trainer.visualizer.export import build

        torch.manual_seed(recipe.train.seed)
        self.net, self.enc = build(recipe, resolve_condition(recipe.condition))
        self.opt = torch.optim.AdamW(param_groups(self.net, recipe.optim.weight_decay), lr=recipe.optim.lr)
        self.files, self.recipe = files, recipe
        self.net.train()

    def batch(self, k: int):
        import torch
        from PIL import Image

        from trainer.visualizer.data import vae_pixels

        per = self.recipe.batch.per_device
        images = []
        for i in range(k * per, (k + 1) * per):
            with Image.open(self.files[i % len(self.files)]) as im:
                images.append(im.convert("RGB"))
        return (torch.stack([vae_pixels(im, self.recipe.diffusion.resolution) for im in images]),
                torch.stack([self.enc.processor(im) for im in images]))

    def step(self, k: int) -> float:
        import torch
        import torch.nn.functional as F

        from trainer.visualizer.model import draw, step_generator

        t0 = time.perf_counter()
        pixels, tower_pixels = self.batch(k)
        gen = step_generator(self.recipe.train.seed, 0, k, 0)
        with torch.no_grad():
            latents = self.enc.vae.encode(pixels).latent_dist.sample(generator=gen) * \
                self.enc.vae.config.scaling_factor
            tokens = self.enc.tokens(tower_pixels)
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


def measure(world: dict[str, str], out: Path, pairs: int, zero: int) -> dict[str, float]:
    from mmdata import open as open_dataset
    from trainer.visualizer.config import load_visualizer_recipe
    from trainer.visualizer.train import VisualizerTrainer

    n = WARMUP + pairs
    recipe = load_visualizer_recipe(ROOT / "recipes" / "tiny" / "visualizer.yaml", world | {
        "output_dir": str(out), "train.max_steps": n, "logging.progress": False, "data.images": "target",
        "checkpoint.every": 10**6, "train.zero_stage": zero})
    ours = VisualizerTrainer(recipe)  # set up as `mmtrain visualizer` sets it up; steps 0, 1, … as the loop
    ds = open_dataset(recipe.data.source)
    bare = Bare(recipe, [ds.media_path(r, 0) for r in ds])
    ours_t, bare_t = [], []
    for k in range(n):
        if k % 2 == 0:
            a = ours.train_step()["step_time"]
            b = bare.step(k)
        else:
            b = bare.step(k)
            a = ours.train_step()["step_time"]
        if k >= WARMUP:
            ours_t.append(a)
            bare_t.append(b)
    del ours
    ratios = sorted(a / b for a, b in zip(ours_t, bare_t))
    q = statistics.quantiles(ratios, n=4)
    return {"zero_stage": zero, "pairs": len(ratios),
            "ours_step_ms": 1e3 * statistics.median(ours_t), "bare_step_ms": 1e3 * statistics.median(bare_t),
            "ratio_median": statistics.median(ratios), "ratio_p25": q[0], "ratio_p75": q[2],
                    "ratio_min": ratios[0], "ratio_max": ratios[-1], "batch": recipe.batch.per_device,
            "resolution": recipe.diffusion.resolution}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=40)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        world = make_world(t)
        for zero in (2, 0):
            results.append(measure(world, t / f"z{zero}", args.pairs, zero))
    r0 = results[0]
    print(f"visualizer step, batch {r0['batch']} at {r0['resolution']} px, {r0['pairs']} interleaved pairs each "
          "(data loading included on both sides):")
    print(f"{'ZeRO':>5} {'mmtrain':>9} {'bare':>9} {'ratio':>6} {'IQR':>13} {'range':>13}")
    for r in results:
        print(f"{r['zero_stage']:>5} {r['ours_step_ms']:>7.1f}ms {r['bare_step_ms']:>7.1f}ms "
              f"{r['ratio_median']:>6.3f} {r['ratio_p25']:>6.3f}–{r['ratio_p75']:<6.3f} "
              f"{r['ratio_min']:>6.3f}–{r['ratio_max']:<6.3f}")
    out = ROOT / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "visualizer_step.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
