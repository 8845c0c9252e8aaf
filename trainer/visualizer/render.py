"""Condition tokens → pictures (DPM-Solver++ multistep, classifier-free guidance, seeded), and the end-to-end path
`mmtrain generate` runs: the LLM answers, each image it predicts is rendered to a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmdata.core.errors import InputError, NotFound
from mmdata.core.schema import IMAGE
from trainer.visualizer.export import Visualizer, check_compatible, load_visualizer


@torch.no_grad()
def render(vis: Visualizer, tokens: torch.Tensor, *, cfg: float = 3.0, steps: int = 25,
           seed: int = 0) -> list[Image.Image]:
    """(N, D) or (B, N, D) condition tokens → B RGB images of the visualizer's resolution.

    Guidance mixes the conditional and the all-zero (unconditional) context: eps = u + cfg × (c − u); cfg 1 is
    plain conditional sampling. The same seed gives the same pictures.
    """
    from diffusers import DPMSolverMultistepScheduler

    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    net, vae = vis.net, vis.vae
    tokens = tokens[None] if tokens.dim() == 2 else tokens
    sched = DPMSolverMultistepScheduler.from_config(net.scheduler.config)
    sched.set_timesteps(steps)
    cond = net.condition(tokens)
    guided = cfg != 1.0
    context = torch.cat([torch.zeros_like(cond), cond]) if guided else cond
    side = vis.resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn((tokens.shape[0], net.unet.config.in_channels, side, side), generator=gen,
                          dtype=net.dtype) * sched.init_noise_sigma
    for t in sched.timesteps:
        x = torch.cat([latents, latents]) if guided else latents
        eps = net.unet(sched.scale_model_input(x, t), t, encoder_hidden_states=context).sample
        if guided:
            u, c = eps.chunk(2)
            eps = u + cfg * (c - u)
        latents = sched.step(eps, t, latents).prev_sample
    pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


@dataclass
class Pictures:
    text: str
    images: list[Path] = field(default_factory=list)
    predicted: int = 0  # image runs the LLM produced (rendered only with a visualizer)


def generate_pictures(model_dir: str | Path, prompt: str, *, out: str | Path | None,
                      visualizer: str | Path | None = None, image: str | Path | None = None, cfg: float = 3.0,
                      steps: int = 25, seed: int = 0, max_new_tokens: int = 64,
                      start_image: bool = False) -> Pictures:
    """The exported model answers `prompt` (with `image` for an edit); each predicted image becomes a PNG.

    The first goes to `out`, later ones to `out` with `-1`, `-2`, … before the suffix. `start_image` begins the
    answer with `<image_start>` (text-to-image / edit prompts: the picture comes first, text may follow).
    """
    from trainer.engine import resolve_init_from
    from trainer.generate import generate
    from trainer.model import load

    model_dir = resolve_init_from(str(model_dir))
    model = load(model_dir).model
    vis = None
    if visualizer is not None:
        vis = load_visualizer(visualizer)
        check_compatible(vis, model, model_dir)  # before the LLM spends time generating
    images = []
    if image is not None:
        if not Path(image).is_file():
            raise NotFound(f"--image {image}: no such file")
        with Image.open(image) as im:
            images.append(im.convert("RGB"))
        if IMAGE not in prompt:
            prompt = f"{IMAGE}\n{prompt}"
    torch.manual_seed(seed)
    g = generate(model, prompt, images, max_new_tokens=max_new_tokens, start_image=start_image)
    result = Pictures(g.text, predicted=len(g.images))
    if vis is None or not g.images or out is None:
        return result
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pictures = render(vis, torch.stack(g.images).float(), cfg=cfg, steps=steps, seed=seed)
    for i, pic in enumerate(pictures):
        path = out if i == 0 else out.with_name(f"{out.stem}-{i}{out.suffix}")
        pic.save(path)
        result.images.append(path)
    return result
