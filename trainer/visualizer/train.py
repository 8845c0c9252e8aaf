"""`mmtrain visualizer`: `VisualizerTrainer`, the loop (`trainer.loop.Trainer`) over the condition projector + UNet.

    recipe → condition spec (from the stage-2 export) → UNet, VAE, tower → RecordDataset + MixtureLoader → the
    loop, DeepSpeed on projector + UNet only; each micro-batch: tower tokens (or cached ones), VAE latents, noise,
    timesteps, dropout → the DDPM loss → export/ (`trainer.visualizer.export`)

Process group, run directory, DeepSpeed, checkpoints (exact resume: engine state, loader position, RNG), the
all-skipped fallback, the finite check and metrics are the loop's, as for the stages. What this adds: the parts
and data (`build`), one micro-batch's draws and loss (`forward`), its metrics (loss, grad_norm, samples,
cond_dropped, skipped, samples_per_s, step_time), the constant schedule option and the export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmdata import MixtureLoader, RecordDataset
from mmdata import open as open_dataset
from trainer.engine import cosine_schedule
from trainer.loop import Parts, RunResult, Trainer
from trainer.visualizer.config import VisualizerRecipe, resolve_condition
from trainer.visualizer.data import VisTransform, collate, open_features
from trainer.visualizer.export import build, export
from trainer.visualizer.model import draw, step_generator

__all__ = ["VisualizerTrainer", "train_visualizer"]


def train_visualizer(recipe: VisualizerRecipe) -> RunResult:
    """Run (or resume) a visualizer recipe; collective across all launched ranks. A full or read-only disk is one
    `StorageError` naming the path; a NaN/inf loss stops the run before anything of that step is saved."""
    return VisualizerTrainer.run(recipe)


class VisualizerTrainer(Trainer[VisualizerRecipe]):
    SUMS = ("loss", "samples", "cond_dropped")

    def build(self) -> Parts:
        recipe, d = self.recipe, self.dist
        self.spec = resolve_condition(recipe.condition)
        self.net, self.encoders = build(recipe, self.spec)
        self.timesteps = self.net.scheduler.config.num_train_timesteps
        features = None
        if recipe.data.vision_features is not None:
            features = open_features(recipe.data.vision_features, self.encoders.tower, self.encoders.processor,
                                     self.spec)
        self.source = open_dataset(recipe.data.source)
        self.source.check_media()  # media left on the machine that built a dataset: one message now, not a skip each
        data = RecordDataset(self.source, VisTransform(self.encoders.processor, recipe.diffusion.resolution,
                                                       images=recipe.data.images, on_error=recipe.data.on_error,
                                                       features=features))
        loader = MixtureLoader(data, batch_size=recipe.batch.per_device, rank=d.rank, world_size=d.world_size,
                               seed=recipe.train.seed, shuffle=recipe.data.shuffle, drop_last=True,
                               num_workers=recipe.data.num_workers, collate_fn=collate)
        return Parts(self.net, data, loader, collate)

    def no_full_step(self) -> str:
        return (f"data.source {self.recipe.data.source}: {len(self.source)} records give no full optimizer step at "
                f"a global batch of {self.global_batch}; use more data or a smaller batch")

    def describe(self) -> str:
        r, d = self.recipe, self.dist
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        return (f"[mmtrain] visualizer: {r.projector.type} projector, UNet {r.diffusion.unet} ({trainable:,} "
                f"trainable parameters); condition {self.spec.num_image_tokens} tokens from {self.spec.vision_tower}; "
                f"global batch {self.global_batch} = {r.batch.per_device} × {self.accum} × {d.world_size}; lr "
                f"{self.lr:.3g} {r.optim.schedule}; {self.total} steps; ZeRO-{r.train.zero_stage}, "
                f"{r.train.precision}; run dir {self.run_dir}")

    def lr_factor(self, total: int) -> Callable[[int], float]:
        o = self.recipe.optim
        if o.schedule == "constant":
            return cosine_schedule(total, o.warmup_ratio, 1.0)  # min ratio 1: warmup, then flat
        return super().lr_factor(total)

    def forward(self, batch: dict[str, Any], micro: int) -> tuple[torch.Tensor, Any]:
        """Every random draw (latent sample, noise, offset, timesteps, dropout) from a generator seeded by (seed,
        rank, step, micro-step): a resumed run draws what the uninterrupted one drew."""
        gen = step_generator(self.recipe.train.seed, self.dist.rank, self.step, micro)
        latents = self.encoders.latents(batch["pixels"], gen)
        cached = batch["tokens"]
        tokens = self.encoders.tokens(batch["tower_pixels"]) if cached is None else cached.to(latents.device)
        diffusion = self.recipe.diffusion
        dr = draw(latents, gen, num_train_timesteps=self.timesteps, cond_dropout=diffusion.cond_dropout,
                  noise_offset=diffusion.noise_offset)
        return self.engine(latents, tokens, dr.noise, dr.timesteps, dr.drop), dr

    def micro_metrics(self, batch: dict[str, Any], loss: torch.Tensor, dr: Any) -> dict[str, float]:
        return {"loss": loss.item(), "samples": len(batch["ids"]), "cond_dropped": int(dr.drop.sum())}

    def step_metrics(self, s: dict[str, float], dt: float, grad_norm: float | None) -> dict[str, Any]:
        return {"loss": s["loss"] / s["used"] if s["used"] else None, "grad_norm": grad_norm,
                "samples": int(s["samples"]), "cond_dropped": int(s["cond_dropped"]), "skipped": int(s["skipped"]),
                "samples_per_s": s["samples"] / dt, "step_time": dt}

    def export(self) -> Path:
        return export(self.net, self.encoders, self.recipe, self.run_dir, rank=self.dist.rank)

    def done_message(self, out: Path, summary: dict[str, Any] | None) -> str:
        return f"[mmtrain] done: {self.step} steps; exported visualizer in {out}"
