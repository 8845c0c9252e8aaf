"""Generated images: valid ones of known content, and the broken kinds real datasets contain."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def random_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_image(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes(random_image(width, height, seed)) if path.suffix.lower() == ".png" else \
        jpeg_bytes(random_image(width, height, seed))
    path.write_bytes(data)
    return path


def write_truncated_jpeg(path: Path, seed: int = 0) -> Path:
    """A JPEG cut in half: its header is fine (Pillow's `verify` passes), a full decode fails."""
    data = jpeg_bytes(random_image(64, 48, seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_byte(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_wrong_extension(path: Path, seed: int = 0) -> Path:
    """A PNG saved under a `.jpg` name: it decodes, so it is valid media (the extension is not trusted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(random_image(40, 30, seed)))
    return path
