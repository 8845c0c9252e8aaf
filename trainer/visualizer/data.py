"""Records → visualizer samples: one image per record, prepared twice (for the VAE and for the tower).

Items come from the project's loader (`mmdata.RecordDataset` over a built dataset or a mixture, then
`MixtureLoader`), so ranks, workers, shuffling and the exact resume position are the stages' own. Which image:
`target`, the first generation target (an `<image>` in a gpt turn: CC12M text-to-image, the edited image of an
edit pair); `any`, the record's first image. A record without one, or whose image does not load, is a `Skip`
(counted and logged by the loop) in `on_error: skip` mode and an error in `raise` mode.

With `data.vision_features` (a `trainer.features` cache made for the same tower, reduction, N, normalisation and
aspect mode as the stage-2 model: checked by `open_features`), a sample carries the cached condition tokens of its
image instead of the tower's input, and the tower does not run; the VAE still reads the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from mmdata.core.errors import InputError
from mmdata.core.schema import Record
from trainer.features import FeatureStore, feature_settings
from trainer.vision import ImageProcessor


@dataclass
class VisSample:
    id: str
    pixels: torch.Tensor  # (3, R, R) in [-1, 1]: the VAE's input
    tower_pixels: torch.Tensor | None  # (3, H, W): the tower's input, preprocessed exactly as in stage 2
    tokens: torch.Tensor | None = None  # (N, D): the condition tokens from a feature cache, instead of tower_pixels


@dataclass(frozen=True)
class Skip:
    id: str
    reason: str


def vae_pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """Shorter side to `resolution` (bilinear), centre crop to a square, scale to [-1, 1]."""
    w, h = image.size
    s = resolution / min(w, h)
    image = image.convert("RGB").resize((max(resolution, round(w * s)), max(resolution, round(h * s))),
                                        Image.Resampling.BILINEAR)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def pick_image(record: Record, images: Literal["target", "any"]) -> int | None:
    if images == "any":
        return 0 if record.media else None
    return next((j for j, role in enumerate(record.media_roles()) if role == "target"), None)


class VisTransform:
    """`transform(record, dataset)` for `RecordDataset`: → `VisSample`, or `Skip` when the record has no image."""

    def __init__(self, processor: ImageProcessor, resolution: int, *, images: Literal["target", "any"] = "target",
                 on_error: Literal["raise", "skip"] = "skip", features: FeatureStore | None = None) -> None:
        self.processor, self.resolution, self.images, self.on_error = processor, resolution, images, on_error
        self.features = features

    def __call__(self, record: Record, dataset: Any) -> VisSample | Skip:
        j = pick_image(record, self.images)
        if j is None:
            what = "generation target (an <image> in a gpt turn)" if self.images == "target" else "image"
            return self._fail(record, f"no {what}; set data.images: any to use input images too")
        try:
            image = dataset.image(record, j)
        except (OSError, ValueError) as e:  # a missing or corrupt file; programming errors still propagate
            return self._fail(record, f"media[{j}] ({record.media[j].path}): {type(e).__name__}: {e}")
        if self.features is None:
            return VisSample(record.id, vae_pixels(image, self.resolution), self.processor(image))
        try:
            tokens = self.features.load(record, dataset, j + 1)[j]
        except (OSError, ValueError) as e:  # not cached, or its image failed when the cache was built
            return self._fail(record, f"features: {type(e).__name__}: {e}")
        return VisSample(record.id, vae_pixels(image, self.resolution), None, tokens)

    def _fail(self, record: Record, reason: str) -> Skip:
        if self.on_error == "raise":
            raise InputError(f"record {record.id!r}: {reason}")
        return Skip(record.id, reason)


def open_features(root: str, tower: Any, processor: ImageProcessor, spec: Any) -> FeatureStore:
    """The feature cache at `root`, refused unless it was built with the condition spec's tower (weights),
    layer, reduction, N, normalisation, aspect mode and preprocessing: the stages' own manifest check."""
    expected = feature_settings(tower, processor, select_layer=spec.mm_vision_select_layer,
                                reduction=spec.token_reduction, num_image_tokens=spec.num_image_tokens,
                                normalize=spec.normalize_vision, aspect=spec.image_aspect_ratio)
    return FeatureStore.open_for(root, expected, fix="the visualizer's condition is the stage-2 model's "
                                 "(condition.from_model): build the cache with `mmtrain cache-features --config "
                                 "<that model's stage-2 recipe>`, or drop data.vision_features")


def _stack(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return torch.stack(tensors) if tensors and all(t is not None for t in tensors) else None  # type: ignore[misc]


def collate(items: Sequence[VisSample | Skip]) -> dict[str, Any]:
    samples = [s for s in items if isinstance(s, VisSample)]
    return {
        "pixels": _stack([s.pixels for s in samples]),
        "tower_pixels": _stack([s.tower_pixels for s in samples]),
        "tokens": _stack([s.tokens for s in samples]),
        "ids": [s.id for s in samples],
        "skipped": [s for s in items if isinstance(s, Skip)],
    }
