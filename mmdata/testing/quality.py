"""A world for dedup and decontamination: two LLaVA-style sources and eval sets, with planted duplicates and leaks.

Every plant is listed with the record it copies, so a test can check that each one is found and nothing else is.
Images are drawn shapes (not noise): a perceptual hash is meant for pictures, and shapes survive resizing and
re-encoding the way photos do.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmdata.testing.images import jpeg_bytes

SUBJECTS = ["tram", "lighthouse", "violin", "glacier", "bakery", "canoe", "windmill", "parrot", "satellite", "cactus",
            "harbor", "library", "volcano", "carousel", "orchard", "bridge", "museum", "tractor", "waterfall", "kite"]
VERBS = ["stands beside", "is painted near", "appears behind", "is parked under", "leans against"]


def shapes_image(seed: int, width: int = 160, height: int = 120) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x1, y1 = x0 + int(rng.integers(15, width // 2)), y0 + int(rng.integers(15, height // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.integers(0, 2) else draw.rectangle)((x0, y0, x1, y1), fill=color)
    return im


def question(i: int) -> str:
    """A question of 20+ words, long enough for 13-gram matching; every 13 words of it name `i`, so questions
    of different `i` share no 13-gram."""
    a, b = SUBJECTS[i % len(SUBJECTS)], SUBJECTS[(7 * i + 3) % len(SUBJECTS)]
    return (f"Looking at picture {i}, which object {VERBS[i % len(VERBS)]} the {a} in scene {i} and what colour is "
            f"the {b} in part {i} on the left?")


def answer(i: int) -> str:
    return f"The {SUBJECTS[(3 * i + 1) % len(SUBJECTS)]} is number {i} and it is {['red', 'blue', 'green'][i % 3]}."


def _conv(q: str, a: str, image: bool = True) -> list[dict[str, str]]:
    return [{"from": "human", "value": ("<image>\n" if image else "") + q}, {"from": "gpt", "value": a}]


@dataclass
class QualityWorld:
    root: Path
    media_root: Path
    a: Path  # source A annotations (originals)
    b: Path  # source B annotations (plants + its own originals)
    evals: Path  # eval set: a folder of images + questions.jsonl + llava.json
    duplicates: dict[str, str] = field(default_factory=dict)  # B or A record id → the A record id it copies
    distinct: list[str] = field(default_factory=list)  # near misses that must be kept
    leaks: dict[str, str] = field(default_factory=dict)  # training record id → what it leaks ("image" / "question")


def make_quality_world(root: Path, n: int = 24) -> QualityWorld:
    media = root / "images"
    media.mkdir(parents=True, exist_ok=True)

    def save(name: str, data: bytes) -> str:
        (media / name).write_bytes(data)
        return name

    originals = {i: jpeg_bytes(shapes_image(i), quality=92) for i in range(n + 12)}
    a = [{"id": f"a{i}", "image": save(f"a{i}.jpg", originals[i]), "conversations": _conv(question(i), answer(i))}
         for i in range(n)]
    a += [{"id": f"at{i}", "conversations": _conv(question(100 + i), answer(100 + i), image=False)} for i in range(4)]
    w = QualityWorld(root, media, root / "a.json", root / "b.jsonl", root / "evals")

    b: list[dict] = [{"id": f"b{i}", "image": save(f"b{i}.jpg", originals[n + i]),
                      "conversations": _conv(question(n + i), answer(n + i))} for i in range(8)]

    def plant(rid: str, of: str, image: bytes | None, q: str, ans: str, into: list[dict]) -> None:
        rec = {"id": rid, "conversations": _conv(q, ans, image is not None)}
        if image is not None:
            rec["image"] = save(f"{rid}.jpg", image)
        into.append(rec)
        w.duplicates[rid] = of

    with Image.open(io.BytesIO(originals[0])) as im:
        small = im.resize((96, 72), Image.Resampling.LANCZOS)
    plant("dup_reencoded", "a1", jpeg_bytes(Image.open(io.BytesIO(originals[1])), quality=55), question(1), answer(1), b)
    plant("dup_resized", "a0", jpeg_bytes(small, quality=85), question(0), answer(0), b)
    plant("dup_bytes", "a2", originals[2], question(2), answer(2), b)
    plant("dup_spaces", "a3", originals[3], "  " + question(3).replace(" ", "   ", 4) + "\n",
          answer(3).replace(" ", "\t", 2), b)
    plant("dup_text_only", "at1", None, question(101).replace(" ", "  "), " " + answer(101), b)
    plant("dup_within_a", "a5", originals[5], question(5), answer(5) + "  ", a)
    # Near misses: the same image with another question, the same question on another image; kept.
    b.append({"id": "same_image_new_question", "image": save("sameimg.jpg", originals[4]),
              "conversations": _conv(question(300), answer(300))})
    b.append({"id": "same_question_new_image", "image": save("sameq.jpg", originals[n + 9]),
              "conversations": _conv(question(6), answer(6))})
    w.distinct = ["same_image_new_question", "same_question_new_image"]

    # Eval sets: an image leak (re-encoded copy of a7's image), a question leak (a9's question inside a longer
    # prompt), and eval items that match nothing.
    ev = w.evals
    (ev / "images").mkdir(parents=True, exist_ok=True)
    (ev / "images" / "leak.jpg").write_bytes(jpeg_bytes(Image.open(io.BytesIO(originals[7])), quality=70))
    (ev / "images" / "clean.png").write_bytes(jpeg_bytes(shapes_image(999)))
    (ev / "questions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [
        {"question_id": 1, "image": "images/clean.png", "question": "Answer briefly. " + question(9)},
        {"question_id": 2, "image": "images/clean.png", "text": question(500)},
        {"question_id": 3, "question": "What is this?"}]))  # too short to mean anything: skipped
    (ev / "llava.json").write_text(json.dumps([{"id": "e1", "image": "images/clean.png",
                                                "conversations": _conv(question(501), "x")}]))
    w.leaks = {"a7": "image", "a9": "question"}

    w.a.write_text(json.dumps(a))
    w.b.write_text("".join(json.dumps(r) + "\n" for r in b))
    return w
