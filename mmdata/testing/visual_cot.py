"""Visual-CoT sources in their released formats: `viscot_*.json` arrays, `metadata/*.jsonl`, images with known regions.

Images are two flat colours: a background and one rectangle, so a test can check a crop pixel by pixel.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

BOX_PROMPT = "Please provide the bounding box coordinate of the region that can help you answer the question better."
BACKGROUND = (20, 40, 200)
REGION = (230, 30, 30)


def region_image(width: int, height: int, box: Sequence[int], color: tuple[int, int, int] = REGION,
                 background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """`box` = pixel x1, y1, x2, y2 (x2, y2 exclusive) filled with `color` on `background`."""
    im = Image.new("RGB", (width, height), background)
    x1, y1, x2, y2 = box
    if x2 > x1 and y2 > y1:
        im.paste(color, (x1, y1, x2, y2))
    return im


def write_region_image(root: Path, rel: str, width: int, height: int, box: Sequence[int]) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    im = region_image(width, height, box)
    # PNG keeps the colours exact; the release's files are JPEGs, which the builder reads the same way.
    im.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=95)
    return path


def padded_square_box(box: Sequence[float], width: int, height: int) -> str:
    """The box as the release's second gpt turn states it: shifted by the (integer) centre padding, normalised to
    the square's side, three decimals (`[0.542, 0.686, 0.592, 0.786]`)."""
    side = max(width, height)
    dx, dy = (side - width) // 2, (side - height) // 2
    x1, y1, x2, y2 = box
    values = ((x1 + dx) / side, (y1 + dy) / side, (x2 + dx) / side, (y2 + dy) / side)
    return "[" + ", ".join(f"{v:0.3f}" for v in values) + "]"


def viscot_item(question_id: Any, dataset: str, image: str, box: str | Sequence[float], question: str, answer: str,
                size: tuple[int, int] = (100, 80), split: str = "train") -> dict[str, Any]:
    """One item of `viscot_363k.json`. `box` as a list is written `[x1, y1, x2, y2]`; a string is used verbatim."""
    box_text = box if isinstance(box, str) else "[" + ", ".join(str(v) for v in box) + "]"
    try:
        padded = padded_square_box([float(v) for v in json.loads(box_text)], *size)
    except (ValueError, TypeError):
        padded = "[0.000, 0.000, 1.000, 1.000]"
    return {
        "question_id": question_id,
        "dataset": dataset,
        "split": split,
        "image": [image, f"{image}###{box_text}"],
        "conversations": [
            {"from": "human", "value": f"<image>\n{question} {BOX_PROMPT}"},
            {"from": "gpt", "value": padded},
            {"from": "human", "value": "<image>"},
            {"from": "gpt", "value": answer},
        ],
    }


def metadata_row(image: str, bboxs: list[list[float]], question: str, answer: str, size: tuple[int, int],
                 dataset: str = "gqa", split: str = "train") -> dict[str, Any]:
    """One line of `metadata/<dataset>_cot_<split>.jsonl`."""
    return {"question": question, "answer": answer, "image": image, "width": size[0], "height": size[1],
            "bboxs": bboxs, "dataset": dataset, "split": split}


def write_json_array(path: Path, items: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@contextlib.contextmanager
def demo_source(dir: Path) -> Iterator[list[str]]:
    """A small Visual-CoT source with every quirk: yields the `mmdata build visual_cot` arguments but `--out`."""
    root = dir / "viscot_images"
    items: list[Any] = []
    specs: list[tuple[str, str | list[float], tuple[int, int]]] = [
        ("gqa", [20, 10, 60, 50], (100, 80)),              # pixel ints
        ("textvqa", [20.5, 10.0, 60.25, 50.0], (120, 90)),  # pixel floats
        ("docvqa", [0.2, 0.125, 0.6, 0.625], (100, 80)),    # normalised
        ("flickr30k", [70, 60, 140, 120], (100, 80)),       # partly outside: clamped
        ("vsr", [30, 30, 30, 60], (100, 80)),               # zero width: rejected
    ]
    for i, (dataset, box, size) in enumerate(specs):
        rel = f"cot/{dataset}/{1000 + i}.jpg"
        write_region_image(root, rel, size[0], size[1], (20, 10, 60, 50))
        items.append(viscot_item(1000 + i, dataset, rel, box, f"What is in region {i}?", f"answer {i}", size))
    items.append({"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A test image."}]})
    write_region_image(root, "coco/train2017/000000033471.jpg", 64, 48, (0, 0, 10, 10))
    items.append(viscot_item(2000, "gqa", "cot/gqa/missing.jpg", [1, 1, 5, 5], "Missing?", "yes"))
    array = write_json_array(dir / "viscot_363k.json", items)
    write_region_image(root, "cot/gqa/3000.jpg", 100, 80, (10, 10, 30, 30))
    meta = write_jsonl(dir / "metadata" / "gqa_cot_train.jsonl", [
        metadata_row("3000.jpg", [[10, 10, 20, 20], [25, 25, 30, 30]], "Which colour?", "red", (100, 80)),
    ])
    yield ["--input", str(array), "--input", str(meta), "--media-root", str(root)]
