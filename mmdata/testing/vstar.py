"""V* (SEAL) training items in their released shape, on generated scenes with objects at known boxes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from mmdata.testing.visual_cot import write_json_array

BACKGROUND = (90, 160, 90)
OBJECT = (40, 40, 220)


def write_scene(root: Path, rel: str, size: tuple[int, int], boxes: Sequence[Sequence[float]]) -> Path:
    """A flat background with a blue rectangle at each [x, y, w, h] box (clipped to the image)."""
    im = Image.new("RGB", size, BACKGROUND)
    for x, y, w, h in boxes:
        x1, y1 = max(0, int(x)), max(0, int(y))
        x2, y2 = min(size[0], int(x + w)), min(size[1], int(y + h))
        if x2 > x1 and y2 > y1:
            im.paste(OBJECT, (x1, y1, x2, y2))
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=95)
    return path


def vstar_item(item_id: str, image: str, objects: Sequence[tuple[str, Sequence[float]]], question: str,
               answer: str, image_first: bool = True) -> dict[str, Any]:
    """One SEAL search item: the focus line names one `<object>` per target (`; `-separated), boxes x, y, w, h."""
    focus = "Additional visual information to focus on: " + "; ".join("<object>" for _ in objects) + ".\n"
    human = f"<image>\n{focus}{question}" if image_first else f"{focus}{question}\n<image>"
    return {"id": item_id, "image": image, "search": True,
            "target_instances": [{"name": n, "bbox": list(b)} for n, b in objects],
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}


@contextlib.contextmanager
def demo_source(dir: Path) -> Iterator[list[str]]:
    """A small SEAL source with its quirks; yields the `mmdata build vstar` arguments but `--out`."""
    root = dir / "images"
    specs: list[tuple[str, list[tuple[str, list[float]]], tuple[int, int]]] = [
        ("gqa/images/1.jpg", [("cup", [20, 15, 30, 25])], (160, 120)),
        ("gqa/images/2.jpg", [("dog", [10, 10, 40, 30]), ("ball", [100.5, 60.2, 20.0, 20.0])], (160, 120)),
        ("vaw/3.jpg", [("sign", [5, 5, 20, 20]), ("pole", [30, 40, 10, 60]), ("car", [80, 70, 60, 40])], (160, 120)),
        ("gqa/images/4.jpg", [("lamp", [140, 100, 60, 60])], (160, 120)),  # partly outside: clamped
        ("gqa/images/5.jpg", [("ghost", [500, 500, 10, 10])], (160, 120)),  # wholly outside: rejected
    ]
    items: list[Any] = []
    for i, (rel, objects, size) in enumerate(specs):
        write_scene(root, rel, size, [b for _, b in objects])
        names = " and ".join(n for n, _ in objects)
        items.append(vstar_item(f"vstar_gqa_{i}", rel, objects, f"What colour is the {names}?", "Blue.",
                                image_first=i % 2 == 0))
    write_scene(root, "coco/train2017/6.jpg", (64, 48), [])
    items.append({"id": "llava_6", "image": "coco/train2017/6.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture."}, {"from": "gpt", "value": "A green field."}]})
    items.append(vstar_item("vstar_missing", "gqa/images/missing.jpg", [("cup", [1, 1, 5, 5])], "Where?", "Here."))
    yield ["--input", str(write_json_array(dir / "GQA_data.json", items)), "--media-root", str(root)]
