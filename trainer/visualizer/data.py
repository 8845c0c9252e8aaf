"""Records → visualizer samples: one image per record, prepared twice (for the VAE and for the tower).

Items come from the project's loader (`mmdata.loader.RecordDataset` over a built dataset or a mixture, then
`MixtureLoader`), so ranks, workers, shuffling and the exact resume position are the stages' own. Which image:
`target`, the first generation target (an `<image>` in a gpt turn: CC12M text-to-image, the edited image of an
edit pair); `any`, the record's first image. A record without one, or whose image does not load, is a `Skip`
(counted and logged by the loop) in `on_error: skip` mode and an error in `raise` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from mmdata.errors import InputError
from mmdata.schema import Record
from trainer.vision import ImageProcessor


@dataclass
class VisSample:
    id: str
    pixels: torch.Tensor  # (3, R, R) in [-1, 1]: the VAE's input
    tower_pixels: torch.Tensor  # (3, H, W): the tower's input, preprocessed exactly as in stage 2


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
                 on_error: Literal["raise", "skip"] = "skip") -> None:
        self.processor, self.resolution, self.images, self.on_error = processor, resolution, images, on_error

    def __call__(self, record: Record, dataset: Any) -> VisSample | Skip:
        j = pick_image(record, self.images)
        if j is None:
            what = "generation target (an <image> in a gpt turn)" if self.images == "target" else "image"
            return self._fail(record, f"no {what}; set data.images: any to use input images too")
        try:
            image = dataset.image(record, j)
        except (OSError, ValueError) as e:  # a missing or corrupt file; programming errors still propagate
            return self._fail(record, f"media[{j}] ({record.media[j].path}): {type(e).__name__}: {e}")
        return VisSample(record.id, vae_pixels(image, self.resolution), self.processor(image))

    def _fail(self, record: Record, reason: str) -> Skip:
        if self.on_error == "raise":
            raise InputError(f"record {record.id!r}: {reason}")
        return Skip(record.id, reason)


def collate(items: Sequence[VisSample | Skip]) -> dict[str, Any]:
    samples = [s for s in items if isinstance(s, VisSample)]
    return {
        "pixels": torch.stack([s.pixels for s in samples]) if samples else None,
        "tower_pixels": torch.stack([s.tower_pixels for s in samples]) if samples else None,
        "ids": [s.id for s in samples],
        "skipped": [s for s in items if isinstance(s, Skip)],
    }
