"""Vision side: the tower (SigLIP / CLIP via transformers), token reductions, and image preprocessing.

Preprocessing follows the tower's own `preprocessor_config.json` with Pillow + numpy (torchvision does not install
beside our torch), so a checkpoint's resize size, resample filter, crop, mean and std are used as published.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mmdata.core.errors import InputError, NotFound

# ---------------------------------------------------------------------------- towers

# model_type → (loader, number of leading non-patch tokens to drop). CLIP prepends a CLS token; SigLIP has none.
_TOWERS: dict[str, tuple[str, int]] = {
    "siglip_vision_model": ("SiglipVisionModel", 0),
    "siglip": ("SiglipVisionModel", 0),
    "clip_vision_model": ("CLIPVisionModel", 1),
    "clip": ("CLIPVisionModel", 1),
}


class VisionTower(nn.Module):
    """Wraps a transformers vision model; returns patch features of one encoder layer (before any post-norm)."""

    def __init__(self, model: nn.Module, select_layer: int, skip_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.select_layer = select_layer
        self.skip_tokens = skip_tokens
        cfg = model.config
        self.hidden_size: int = cfg.hidden_size
        self.grid: int = cfg.image_size // cfg.patch_size
        self.image_size: int = cfg.image_size
        n_layers = cfg.num_hidden_layers
        # hidden_states has n_layers + 1 entries (embeddings first), so -1 is the last layer before post-norm.
        if not -(n_layers + 1) <= select_layer <= n_layers:
            raise InputError(f"mm_vision_select_layer={select_layer} is outside the tower's hidden states "
                             f"[-{n_layers + 1}, {n_layers}]")

    @classmethod
    def from_pretrained(cls, path: str | Path, select_layer: int, dtype: torch.dtype = torch.float32) -> VisionTower:
        import transformers

        path = Path(path)
        if not (path / "config.json").is_file():
            raise NotFound(f"vision tower: no config.json in {path}; pass a local SigLIP/CLIP model dir")
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type not in _TOWERS:
            raise InputError(f"vision tower {path}: model_type {model_type!r} is not supported; "
                             f"expected one of {sorted(_TOWERS)}")
        loader, skip = _TOWERS[model_type]
        model = getattr(transformers, loader).from_pretrained(path, dtype=dtype)
        return cls(model, select_layer, skip)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, self.skip_tokens:]


# ---------------------------------------------------------------------------- reductions

def _grid(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    b, p, d = x.shape
    g = math.isqrt(p)
    if g * g != p:
        raise InputError(f"token reduction needs a square patch grid, got {p} patches")
    return x.transpose(1, 2).reshape(b, d, g, g), g


def _side(n: int) -> int:
    s = math.isqrt(n)
    if s * s != n:
        raise InputError(f"num_image_tokens={n} must be a perfect square (4, 16, 64, …) for this token reduction")
    return s


def reduce_interpolation(x: torch.Tensor, n: int) -> torch.Tensor:
    """MetaMorph: bilinear resize of the patch grid to √n × √n, in fp32, align_corners=False."""
    grid, _ = _grid(x)
    s = _side(n)
    out = F.interpolate(grid.float(), size=(s, s), mode="bilinear", align_corners=False)
    return out.flatten(2).transpose(1, 2).to(x.dtype)


def reduce_avgpool(x: torch.Tensor, n: int) -> torch.Tensor:
    grid, _ = _grid(x)
    s = _side(n)
    return F.adaptive_avg_pool2d(grid.float(), s).flatten(2).transpose(1, 2).to(x.dtype)


def reduce_none(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[1] != n:
        raise InputError(f"token_reduction 'none' keeps all {x.shape[1]} patches, but num_image_tokens={n}; "
                         f"set num_image_tokens to {x.shape[1]}")
    return x


REDUCTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "interpolation": reduce_interpolation,
    "avgpool": reduce_avgpool,
    "none": reduce_none,
}


def image_tokens(features: torch.Tensor, reduction: str, n: int, normalize: bool) -> torch.Tensor:
    """Tower patch features → the N tokens the LLM reads and stage 2 predicts (and the visualizer is conditioned
    on): reduced, then L2-normalised per token when `normalize` (MetaMorph's `normalize_vision`)."""
    x = REDUCTIONS[reduction](features, n)
    if normalize:
        x = F.normalize(x.float(), dim=-1).to(x.dtype)
    return x


# ---------------------------------------------------------------------------- image processor

@dataclass
class ImageProcessor:
    """Resize (+ optional center crop), rescale, normalise: `__call__(image) -> (3, H, W)` float tensor."""

    size: dict[str, int]
    resample: int = 3
    do_resize: bool = True
    do_center_crop: bool = False
    crop_size: dict[str, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    pad_to_square: bool = True  # LLaVA's image_aspect_ratio="pad": pad with the mean colour, keep everything

    CONFIG_NAME = "preprocessor_config.json"

    @classmethod
    def from_pretrained(cls, path: str | Path, *, pad_to_square: bool = True) -> ImageProcessor:
        f = Path(path) / cls.CONFIG_NAME
        if not f.is_file():
            raise NotFound(f"image processor: {f} not found; the vision tower dir must carry its "
                                    "preprocessor_config.json")
        d: dict[str, Any] = json.loads(f.read_text())
        known = {k: d[k] for k in ("size", "resample", "do_resize", "do_center_crop", "crop_size", "do_rescale",
                                   "rescale_factor", "do_normalize", "image_mean", "image_std") if k in d}
        if "size" not in known:
            raise InputError(f"image processor {f}: no 'size' key")
        if isinstance(known["size"], int):
            known["size"] = {"shortest_edge": known["size"]}
        return cls(**known, pad_to_square=pad_to_square)

    def save_pretrained(self, path: str | Path) -> None:
        d = {k: getattr(self, k) for k in ("size", "resample", "do_resize", "do_center_crop", "crop_size",
                                           "do_rescale", "rescale_factor", "do_normalize")}
        d |= {"image_mean": list(self.image_mean), "image_std": list(self.image_std)}
        # Keep a transformers-readable file next to the tower; our own flag lives in mm_config.json.
        Path(path, self.CONFIG_NAME).write_text(json.dumps(d, indent=2))

    @property
    def output_size(self) -> tuple[int, int]:
        if self.do_center_crop and self.crop_size:
            return self.crop_size["height"], self.crop_size["width"]
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        e = self.size["shortest_edge"]
        return e, e

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.pad_to_square and image.width != image.height:
            side = max(image.size)
            fill = tuple(round(m * 255) for m in self.image_mean)
            canvas = Image.new("RGB", (side, side), fill)
            canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            image = canvas
        if self.do_resize:
            image = image.resize(self._resize_to(image.size), resample=Image.Resampling(self.resample))
        if self.do_center_crop and self.crop_size:
            h, w = self.crop_size["height"], self.crop_size["width"]
            left, top = (image.width - w) // 2, (image.height - h) // 2
            image = image.crop((left, top, left + w, top + h))
        arr = np.asarray(image, dtype=np.float32)
        if self.do_rescale:
            arr = arr * np.float32(self.rescale_factor)
        if self.do_normalize:
            arr = (arr - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def _resize_to(self, wh: tuple[int, int]) -> tuple[int, int]:
        if "height" in self.size:
            return self.size["width"], self.size["height"]
        e = self.size["shortest_edge"]
        w, h = wh
        if w <= h:
            return e, max(1, round(h * e / w))
        return max(1, round(w * e / h)), e
