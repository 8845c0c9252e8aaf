"""A tiny random diffusion model in the Stable Diffusion layout (unet/, vae/, scheduler/), for tests and the demo.

Built from config and saved, so the visualizer loads it exactly as it loads Stable Diffusion 1.5. Group norm of 8
(the default 32 does not divide these channel counts); the VAE halves the resolution once (16 px → 8 × 8 latents).
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_diffusion(out_dir: str | Path, *, cross_attention_dim: int = 32, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    out = Path(out_dir)
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=8, attention_head_dim=8,
    ).save_pretrained(out / "unet")
    AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
        sample_size=16,
    ).save_pretrained(out / "vae")
    # Stable Diffusion 1.5's training schedule.
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False).save_pretrained(out / "scheduler")
    return out
