"""Building the visualizer from a recipe, exporting it (`<run>/export/`), and `load_visualizer` reading it back.

    export/unet/  export/vae/  export/scheduler/   diffusers directories (Stable Diffusion layout)
    export/projector.safetensors                    the condition projector
    export/probe.safetensors                        the condition tokens of a fixed probe image (tower identity)
    export/visualizer.json                          format version, condition spec, projector and image settings
    export/recipe.yaml                              the recipe that produced it

A stage-2 model and a visualizer go together only when they agree on the condition tokens: same tower (config
and, through the probe tokens, weights), layer, reduction, token count, normalisation and aspect mode.
`check_compatible` refuses anything else with what differs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from mmdata.core.errors import InputError, NotFound
from trainer.visualizer.config import ConditionSpec, VisualizerRecipe
from trainer.visualizer.model import (
    MIN_PROBE_COS,
    FrozenEncoders,
    VisualizerNet,
    probe_image,
    token_cosine,
)
from trainer.visualizer.projector import build_condition_projector

EXPORT = "export"
VIS_CONFIG = "visualizer.json"
FORMAT_VERSION = 1
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Visualizer:
    net: VisualizerNet
    vae: Any
    spec: ConditionSpec
    probe: torch.Tensor  # (N, vision_dim)
    resolution: int
    path: Path | None = None

    def eval(self) -> Visualizer:
        self.net.eval()
        self.vae.eval()
        return self


def _diffusion_dirs(root: Path) -> dict[str, Path]:
    dirs = {k: root / k for k in ("unet", "vae", "scheduler")}
    missing = [k for k, p in dirs.items() if not p.is_dir()]
    if missing:
        raise NotFound(f"diffusion.pretrained {root}: no {', '.join(missing)}/ subfolder; point it at a "
                                "local diffusers directory in the Stable Diffusion layout (unet/, vae/, scheduler/)")
    return dirs


def build(recipe: VisualizerRecipe, spec: ConditionSpec) -> tuple[VisualizerNet, FrozenEncoders]:
    """The trainable net (fp32; DeepSpeed casts it for bf16) and the frozen encoders (in the run's precision)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    dirs = _diffusion_dirs(Path(recipe.diffusion.pretrained))
    mode = recipe.diffusion.unet
    if mode == "scratch":
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(dirs["unet"]))
    else:
        unet = UNet2DConditionModel.from_pretrained(dirs["unet"])
    unet.requires_grad_(mode != "frozen")
    if recipe.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    encoders = FrozenEncoders.load(spec, dirs["vae"], _DTYPES[recipe.train.precision])
    p = recipe.projector
    projector = build_condition_projector(p.type, encoders.tower.hidden_size, unet.config.cross_attention_dim,
                                          hidden_dim=p.hidden_dim, num_layers=p.num_layers, num_heads=p.num_heads,
                                          context_tokens=p.context_tokens)
    return VisualizerNet(projector, unet, DDPMScheduler.from_pretrained(dirs["scheduler"])), encoders


def projector_meta(recipe: VisualizerRecipe, net: VisualizerNet, encoders: FrozenEncoders) -> dict[str, Any]:
    p = recipe.projector
    return {"kind": p.type, "vision_dim": encoders.tower.hidden_size,
            "context_dim": net.unet.config.cross_attention_dim, "hidden_dim": p.hidden_dim,
            "num_layers": p.num_layers, "num_heads": p.num_heads, "context_tokens": p.context_tokens}


def export(net: VisualizerNet, encoders: FrozenEncoders, recipe: VisualizerRecipe, run_dir: Path, *,
           rank: int) -> Path:
    """Collective: rank 0 writes `<run_dir>/export` (replacing a previous one). ZeRO 0-2: every rank holds the net."""
    out = run_dir / EXPORT
    if rank == 0:
        tmp = run_dir / (EXPORT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        net.unet.save_pretrained(tmp / "unet")
        shutil.copytree(Path(recipe.diffusion.pretrained) / "vae", tmp / "vae")  # frozen: the original files
        net.scheduler.save_pretrained(tmp / "scheduler")
        save_file({k: v.detach().contiguous() for k, v in net.projector.state_dict().items()},
                  str(tmp / "projector.safetensors"))
        probe = encoders.tokens(encoders.processor(probe_image())[None])[0].float()
        save_file({"tokens": probe.contiguous()}, str(tmp / "probe.safetensors"))
        meta = {"format_version": FORMAT_VERSION, "condition": encoders.spec.to_dict(),
                "projector": projector_meta(recipe, net, encoders), "resolution": recipe.diffusion.resolution,
                "cond_dropout": recipe.diffusion.cond_dropout, "noise_offset": recipe.diffusion.noise_offset}
        (tmp / VIS_CONFIG).write_text(json.dumps(meta, indent=2))
        if (run_dir / "recipe.yaml").is_file():
            shutil.copy(run_dir / "recipe.yaml", tmp / "recipe.yaml")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)  # an export/ that exists is complete
    if dist.is_initialized():
        dist.barrier()
    return out


def load_visualizer(path: str | Path) -> Visualizer:
    """An exported visualizer (or a visualizer run directory with export/), in fp32, ready for `render`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    path = Path(path)
    if not (path / VIS_CONFIG).is_file() and (path / EXPORT / VIS_CONFIG).is_file():
        path = path / EXPORT
    meta_file = path / VIS_CONFIG
    if not meta_file.is_file():
        raise NotFound(f"{meta_file} not found: {path} is not an exported visualizer; train one with "
                                "`mmtrain visualizer --config recipes/tiny/visualizer.yaml` and pass RUN/export")
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{meta_file}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
    p = dict(meta["projector"])
    projector = build_condition_projector(p.pop("kind"), p.pop("vision_dim"), p.pop("context_dim"), **p)
    projector.load_state_dict({k: v.float() for k, v in load_file(str(path / "projector.safetensors")).items()})
    unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch.float32)
    net = VisualizerNet(projector, unet, DDPMScheduler.from_pretrained(path / "scheduler"))
    vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=torch.float32)
    probe = load_file(str(path / "probe.safetensors"))["tokens"]
    return Visualizer(net, vae, ConditionSpec.from_dict(meta["condition"]), probe, int(meta["resolution"]),
                      path).eval()


def check_compatible(vis: Visualizer, model: Any, model_dir: str | Path) -> None:
    """Refuse a stage-2 model whose condition tokens are not the ones this visualizer was trained on."""
    theirs = ConditionSpec.of_model(model_dir)
    diff = vis.spec.mismatches(theirs)
    fix = (f"train a visualizer for this model (`condition.from_model: {model_dir}` in the visualizer recipe) or "
           "pass the model it was trained for")
    if diff:
        raise InputError(f"the visualizer {vis.path} and the model {model_dir} disagree on the image tokens "
                         f"(visualizer vs model): {'; '.join(diff)}; {fix}")
    with torch.no_grad():
        tokens = model.encode_images(model.processor(probe_image())[None].to(model.vision.model.dtype))[0]
    cos = token_cosine(vis.probe, tokens)
    if cos < MIN_PROBE_COS:
        raise InputError(f"the visualizer {vis.path} was trained on another vision tower than the model "
                         f"{model_dir} uses (same architecture, different weights: probe tokens agree at cosine "
                         f"{cos:.3f} < {MIN_PROBE_COS}); {fix}")
