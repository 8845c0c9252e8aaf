"""The letterbox check: a download made with img2dataset's `resize_mode=border` pads every image onto a white square,
and the bands would become part of every generation target."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from builders.cc12m.conversion import tar_index


def letterbox_evidence(folder: Path, shards: list[str], samples: int = 8) -> str | None:
    """Why this img2dataset output looks made with resize_mode=border, or None. The download's own record of its
    config wins (newer img2dataset writes it into the stats); otherwise a few images stored as squares although
    their originals are not are checked for the white bands `border` pads with."""
    for name in shards:
        config = json.loads((folder / f"{name}_stats.json").read_text()).get("config")
        if isinstance(config, dict) and "resize_mode" in config:
            mode = config["resize_mode"]
            return f"{name}_stats.json records resize_mode={mode}" if mode == "border" else None
    checked = banded = 0
    for name in shards[:3]:
        cols = ["key", "status", "width", "height", "original_width", "original_height"]
        try:
            rows = pq.read_table(folder / f"{name}.parquet", columns=cols).to_pylist()
        except (pa.ArrowInvalid, KeyError):
            return None  # not the columns img2dataset writes: nothing to tell
        squares = [r for r in rows if r["status"] == "success" and r["width"] and r["width"] == r["height"]
                   and r["original_width"] and r["original_height"]
                   and abs(r["original_width"] / r["original_height"] - 1) > 0.1]
        if not squares:
            continue
        with open(folder / f"{name}.tar", "rb") as tar:
            index, _ = tar_index(tar, str(folder / f"{name}.tar"))
            for r in squares[: samples - checked]:
                if r["key"] not in index:
                    continue
                offset, size, _ = index[r["key"]]
                tar.seek(offset)
                checked += 1
                banded += _white_bands(tar.read(size), r["original_width"], r["original_height"])
        if checked >= samples:
            break
    if checked and banded * 2 > checked:
        return f"{banded} of {checked} sampled images are squares with white bands around non-square originals"
    return None


def _white_bands(data: bytes, original_width: int, original_height: int) -> bool:
    """True when the square image has the near-white bands `border` pads a non-square original with."""
    try:
        gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    side = gray.shape[0]
    long, short = max(original_width, original_height), min(original_width, original_height)
    band = (side - round(side * short / long)) // 2 - 1  # one pixel less: JPEG blurs the edge
    if band < 1:
        return False
    bands = (gray[:band], gray[-band:]) if original_width > original_height else (gray[:, :band], gray[:, -band:])
    return all(b.mean() > 240 and b.std() < 12 for b in bands)
