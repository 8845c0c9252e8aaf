"""The visualizer's parts: the trainable net (condition projector + UNet) and the frozen encoders (tower, VAE).

Only the net goes through DeepSpeed: the tower and the VAE are frozen feature extractors, run under no_grad before
each forward (in the run's precision), so checkpoints hold just what trains. Every random draw of a step (latent
sample, noise, noise offset, timesteps, condition dropout) comes from one generator seeded by (seed, rank, step,
micro-step): a resumed run draws exactly what the uninterrupted one drew, whatever else consumed the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from trainer.vision import ImageProcessor, VisionTower, image_tokens
from trainer.visualizer.config import ConditionSpec


class VisualizerNet(nn.Module):
    """projector(tokens) → UNet context; forward = the DDPM noise-prediction loss for given noise and timesteps."""

    def __init__(self, projector: nn.Module, unet: nn.Module, scheduler: Any) -> None:
        super().__init__()
        self.projector, self.unet = projector, unet
        self.scheduler = scheduler  # DDPMScheduler: add_noise / get_velocity only (no state that trains)

    def condition(self, tokens: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, vision_dim) → (B, T, context_dim); rows where `drop` is True become the all-zero context, which
        is also the unconditional context at sampling time (MetaMorph's classifier-free guidance)."""
        ctx = self.projector(tokens.to(self.dtype))
        if drop is not None:
            ctx = ctx * (~drop).to(ctx.dtype)[:, None, None]
        return ctx

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                drop: torch.Tensor) -> torch.Tensor:
        ctx = self.condition(tokens, drop)
        latents, noise = latents.to(self.dtype), noise.to(self.dtype)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        pred = self.unet(noisy, timesteps, encoder_hidden_states=ctx).sample
        kind = self.scheduler.config.prediction_type
        target = noise if kind == "epsilon" else self.scheduler.get_velocity(latents, noise, timesteps)
        return F.mse_loss(pred.float(), target.float())


@dataclass
class Draws:
    noise: torch.Tensor
    timesteps: torch.Tensor
    drop: torch.Tensor


def step_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    key = np.random.SeedSequence([seed, rank, step, micro]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(key))


def draw(latents: torch.Tensor, gen: torch.Generator, *, num_train_timesteps: int, cond_dropout: float,
         noise_offset: float) -> Draws:
    """A step's noise (plus the per-channel offset of "noise offset" training), timesteps and dropout mask."""
    b, c = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=gen)
    if noise_offset > 0:
        noise = noise + noise_offset * torch.randn((b, c, 1, 1), generator=gen)
    t = torch.randint(0, num_train_timesteps, (b,), generator=gen)
    drop = torch.rand(b, generator=gen) < cond_dropout
    return Draws(noise, t, drop)


class FrozenEncoders:
    """The tower (+ its reduction, as stage 2 does it) and the VAE: images → condition tokens and latents."""

    def __init__(self, tower: VisionTower, processor: ImageProcessor, spec: ConditionSpec, vae: Any) -> None:
        self.tower, self.processor, self.spec, self.vae = tower, processor, spec, vae

    @classmethod
    def load(cls, spec: ConditionSpec, vae_dir: str | Path, dtype: torch.dtype) -> FrozenEncoders:
        from diffusers import AutoencoderKL

        tower = VisionTower.from_pretrained(spec.vision_tower, spec.mm_vision_select_layer, dtype).eval()
        processor = ImageProcessor.from_pretrained(spec.vision_tower,
                                                   pad_to_square=spec.image_aspect_ratio == "pad")
        vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dtype).eval()
        for m in (tower, vae):
            m.requires_grad_(False)
        return cls(tower, processor, spec, vae)

    @torch.no_grad()
    def tokens(self, tower_pixels: torch.Tensor) -> torch.Tensor:
        s = self.spec
        return image_tokens(self.tower(tower_pixels), s.token_reduction, s.num_image_tokens, s.normalize_vision)

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return dist.sample(generator=gen) * self.vae.config.scaling_factor


def probe_image() -> Image.Image:
    """A fixed synthetic picture: its tokens identify a tower (stored in the export, compared at generation)."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    rgb = np.stack([x / 127 * 255, y / 95 * 255, (np.sin(x / 9) * np.cos(y / 7) * 0.5 + 0.5) * 255], -1)
    return Image.fromarray(rgb.astype(np.uint8))


MIN_PROBE_COS = 0.98  # a bf16 copy of a tower agrees at > 0.99; a different tower does not come close


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-token cosine of two (N, D) token sets; -1 when their shapes differ."""
    if a.shape != b.shape:
        return -1.0
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean())
