"""InstructPix2Pix and AURORA sources in their released formats: HF parquet shards (image structs with bytes), the
original `seeds.json` release directory, and AURORA's JSON.

Before images are blue-ish, after images red-ish (`BEFORE`, `AFTER`), so a test can tell the direction by colour.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmdata.testing.images import jpeg_bytes

BEFORE = (30, 60, 200)
AFTER = (200, 40, 30)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def edit_image(kind: str, size: tuple[int, int] = (64, 64), seed: int = 0, quality: int = 90) -> bytes:
    """A JPEG that looks like a photo to the encoder (smooth gradient + noise), tinted by `kind`: before|after."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = np.array(BEFORE if kind == "before" else AFTER, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = (xx / max(w, 1) + yy / max(h, 1))[..., None] * 25
    pixels = base + shade + rng.normal(0, 6, (h, w, 3))
    return jpeg_bytes(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), quality)


def hf_row(i: int, size: tuple[int, int] = (64, 64), edit: str | None = None) -> dict[str, Any]:
    """One row of `timbrooks/instructpix2pix-clip-filtered`, image columns as `{bytes, path}` structs."""
    return {
        "original_prompt": f"a photo of a house {i}",
        "original_image": {"bytes": edit_image("before", size, i), "path": None},
        "edit_prompt": f"make it a rainy day {i}" if edit is None else edit,
        "edited_prompt": f"a photo of a house on a rainy day {i}",
        "edited_image": {"bytes": edit_image("after", size, i + 1), "path": None},
    }


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], *, input_column: str = "original_image",
                  row_group_size: int = 16, caption_type: pa.DataType = pa.string(),
                  drop: Sequence[str] = ()) -> Path:
    """Write rows as HF writes them (structs with bytes); `input_column="input_image"` is the sample-set variant,
    `caption_type=pa.binary()` allows captions that are not UTF-8, `drop` removes columns."""
    names = ["original_prompt", "original_image", "edit_prompt", "edited_prompt", "edited_image"]
    columns: dict[str, pa.Array] = {}
    for name in names:
        if name in drop:
            continue
        values = [r.get(name) for r in rows]
        if name.endswith("_image"):
            columns[input_column if name == "original_image" else name] = pa.array(values, IMAGE_STRUCT)
        else:
            columns[name] = pa.array(values, caption_type)
    for extra in sorted({k for r in rows for k in r} - set(names)):
        columns[extra] = pa.array([r.get(extra) for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def write_release(root: Path, folders: Sequence[tuple[str, dict[str, Any] | bytes | None, Sequence[int]]],
                  size: tuple[int, int] = (48, 48), scores: bool = True) -> Path:
    """The original release: `seeds.json`, `<folder>/prompt.json` (a dict, raw bytes, or None for none),
    `<folder>/{seed}_0.jpg`, `{seed}_1.jpg`, `<folder>/metadata.jsonl`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "seeds.json").write_text(json.dumps([[name, list(seeds)] for name, _, seeds in folders]))
    for name, prompt, seeds in folders:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(prompt, dict):
            (folder / "prompt.json").write_text(json.dumps(prompt, ensure_ascii=False), encoding="utf-8")
        elif isinstance(prompt, bytes):
            (folder / "prompt.json").write_bytes(prompt)
        lines = []
        for seed in seeds:
            (folder / f"{seed}_0.jpg").write_bytes(edit_image("before", size, seed))
            (folder / f"{seed}_1.jpg").write_bytes(edit_image("after", size, seed + 1))
            lines.append(json.dumps({"seed": seed, "p2p_threshold": 0.5, "cfg_scale": 7.5, "clip_sim_0": 0.21,
                                     "clip_sim_1": 0.24, "clip_sim_dir": 0.18, "clip_sim_image": 0.8}))
        if scores:
            (folder / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def write_aurora(root: Path, items: Sequence[dict[str, Any]], name: str = "train.json") -> Path:
    """AURORA's JSON array; every image path an item names is created under `root` (direction by colour only)."""
    root.mkdir(parents=True, exist_ok=True)
    for n, item in enumerate(items):
        for key, kind in (("input", "before"), ("output", "after")):
            rel = item.get(key)
            if isinstance(rel, str) and rel and not (root / rel).exists():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(edit_image(kind, (40, 40), n))
    path = root / name
    path.write_text(json.dumps(list(items), indent=1, ensure_ascii=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def demo_source(dir: Path) -> Iterator[list[str]]:
    """A parquet shard (with an empty instruction and a corrupt image) and a release directory; yields the
    `mmdata build instructpix2pix` arguments but `--out`."""
    rows = [hf_row(i) for i in range(6)]
    rows[2]["edit_prompt"] = ""
    rows[3]["edited_image"] = {"bytes": b"\xff\xd8 not a jpeg", "path": None}
    rows[4]["edited_prompt"] = "a house\u00e2\u20ac\u2122s roof in the rain"  # mangled quote: kept verbatim
    shard = write_parquet(dir / "data" / "train-00000-of-00001.parquet", rows, row_group_size=2)
    release = write_release(dir / "clip-filtered-dataset", [
        ("0000000", {"input": "a cat on a sofa", "edit": "turn the cat into a dog", "output": "a dog on a sofa"},
         [111, 222]),
        ("0000001", {"caption": "a red car", "edit": "make it blue", "output": "a blue car"}, [333]),
    ])
    yield ["--input", str(shard), "--input", str(release)]
