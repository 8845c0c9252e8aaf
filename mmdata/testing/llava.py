"""A small Cambrian / LLaVA-format world with every quirk of the real releases (DATA.md, cambrian)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.testing.images import write_image, write_truncated_jpeg, write_wrong_extension, write_zero_byte

QUESTIONS = [
    "What is the color of the object in the center?",
    "How many people are visible in this picture?",
    "Describe the scene in one sentence.",
    "What is written on the sign?",
    "Is this photo taken indoors or outdoors?",
]
ANSWERS = ["Red.", "Three.", "A street market at dusk, crowded with stalls.", "OPEN 24 HOURS", "Outdoors."]


def _turns(question: str, answer: str, image: str | None = "start") -> list[dict[str, str]]:
    if image == "start":
        question = "<image>\n" + question
    elif image == "end":
        question = question + "\n<image>"
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@dataclass
class World:
    root: Path
    media_root: Path
    jsonl: Path  # Cambrian-style JSONL, one record per line, with a corrupt line
    json_array: Path  # LLaVA-665K-style JSON array
    expected_written: int
    expected_rejected: int


def make_world(root: Path, n_good: int = 12) -> World:
    """Images (valid, truncated, zero-byte, wrong extension, wrong letter case) and both annotation formats.

    Every quirk appears in both files; `expected_*` are the counts a correct build of the two files gives.
    """
    media = root / "images"
    for i in range(n_good):
        write_image(media / "coco" / f"{i:06d}.jpg", 64 + 8 * (i % 3), 48, seed=i)
    write_image(media / "ocr_vqa" / "Mixed_Case.JPG", 32, 32, seed=99)
    write_truncated_jpeg(media / "coco" / "truncated.jpg")
    write_zero_byte(media / "coco" / "empty.jpg")
    write_wrong_extension(media / "sam" / "really_a_png.jpg")

    records: list[Any] = []
    for i in range(n_good):
        where = "start" if i % 2 == 0 else "end"
        records.append({"id": f"{i:06d}", "image": f"coco/{i:06d}.jpg",
                        "conversations": _turns(QUESTIONS[i % 5], ANSWERS[i % 5], where)})
    records += [
        # text-only, however it is spelled
        {"id": "t1", "conversations": _turns("Tell me a joke.", "Why did the chicken cross the road?", None)},
        {"id": "t2", "image": "", "conversations": _turns("Say hi.", "Hi!", None)},
        {"id": "t3", "image": None, "conversations": _turns("Count to 3.", "1, 2, 3.", None)},
        {"id": "t4", "image": "None", "conversations": _turns("Name a color.", "Blue.", None)},
        {"id": "t5", "image": "nan", "conversations": _turns("Name a fruit.", "Apple.", None)},
        # duplicate id, int-like id, extra keys
        {"id": "000000", "image": "coco/000001.jpg", "model": "gpt-4v",
         "conversations": _turns("Again?", "Yes.")},
        {"id": 42, "image": "coco/000002.jpg", "conversations": _turns("Int id?", "Yes.")},
        # a leading gpt turn, an odd length
        {"id": "lead", "image": "coco/000003.jpg", "conversations": [
            {"from": "gpt", "value": "Hello."}, *_turns("What now?", "This.")]},
        {"id": "odd", "conversations": [*_turns("Q1", "A1", None), {"from": "human", "value": "Q2 unanswered"}]},
        # letter case differs from the file on disk; a PNG under a .jpg name (it decodes: valid)
        {"id": "case", "image": "OCR_VQA/mixed_case.jpg", "conversations": _turns("Title?", "A Book.")},
        {"id": "png", "image": "sam/really_a_png.jpg", "conversations": _turns("Shape?", "Square.")},
        # rejects: missing, truncated, zero-byte image; placeholder count mismatch; empty turn value
        {"id": "missing", "image": "coco/does_not_exist.jpg", "conversations": _turns("Q", "A")},
        {"id": "trunc", "image": "coco/truncated.jpg", "conversations": _turns("Q", "A")},
        {"id": "empty", "image": "coco/empty.jpg", "conversations": _turns("Q", "A")},
        {"id": "twice", "image": "coco/000004.jpg", "conversations": _turns("<image> two <image>", "A")},
        {"id": "blank", "conversations": _turns("Q", "  ", None)},
    ]
    good = n_good + 5 + 3 + 3  # good images, text-only spellings, id quirks, turn/path repairs
    bad = 5
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(3, '{"id": "corrupt", "conversations": [')  # a corrupt JSONL line: a reject, not a crash
    jsonl = root / "cambrian_sample.jsonl"
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    array = root / "llava_sample.json"
    array.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    return World(root, media, jsonl, array, expected_written=2 * good, expected_rejected=2 * bad + 1)


@contextlib.contextmanager
def demo_source(root: Path) -> Iterator[list[str]]:
    """Generate the sample world and yield the `mmdata build cambrian` arguments (all but --out)."""
    w = make_world(root)
    yield ["--input", str(w.jsonl), "--input", str(w.json_array), "--media-root", str(w.media_root)]
