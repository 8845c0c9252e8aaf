"""V* (SEAL) visual-search training data → `visual_cot` records whose visual thought is the image with the target
objects boxed.

Where to get it: `craigwu/seal_vqa_data` on the HF hub (the instruction-tuning JSON arrays of github.com/penghao-wu/vstar:
`GQA_data.json`, `vaw_attribute_data.json`, `spatial_relation_data.json`, `llava_focus_data.json`,
`negative_data.json`, `llava_instruct_data.json`) and their images (COCO, GQA, …) under one root: `image` is relative
to it. A search item:

    {"id", "image", "search": …, "target_instances": [{"name": "cup", "bbox": [x, y, w, h]}, …],
     "conversations": [{"from": "human", "value": "<image>\\nAdditional visual information to focus on: <object>;
                        <object>.\\n{question}"}, {"from": "gpt", "value": "{answer}"}]}

Boxes are pixel x, y, **width, height** of the original image. SEAL fills each `<object>` with the object's name, a
crop and its location; MetaMorph instead removes that line, keeps question and answer, and draws the boxes onto a copy
of the image: the original is the input, the boxed copy a generated "visual thought". So does this builder:
human `{prefix} <image>\\n{question}` → gpt `{names the key objects} <image> {answer}`, phrasings from the pools below
drawn with `Draws(seed, id, "random")`. Only the first exchange is used (MetaMorph's), later turns are counted in
`meta.turns_dropped`.

Quirks: 1 to 3 objects, the focus line spelled with `;` separators (or absent); `<image>` at either end; float boxes;
boxes partly outside the image (clamped, noted) or empty after clamping (a reject when none is left). Items without
target instances (LLaVA instructions, negative samples) pass through as `vqa` records (`--non-search reject`: rejects).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw

from builders._common import Draws, InputSpan, convert_llava, plan_inputs, safe_name, span_records
from mmdata.build import Builder, Output, read_media
from mmdata.core.media import decode_image
from mmdata.core.options import opt
from mmdata.core.schema import IMAGE, Media, Record, RecordError, Turn

HUMAN_PREFIXES: tuple[str, ...] = (
    "Search the image for what matters, then answer:",
    "Locate the relevant objects first:",
    "Find the key objects before answering,",
    "Look for the objects the question is about:",
    "Point out what you need to see, then answer:",
    "Think visually and find the targets:",
    "",
)
# `{objects}`: "the cup", "the cup and the table", "the cup, the table, and the lamp".
GPT_TEMPLATES: tuple[str, ...] = (
    "The key objects are {objects}. Here they are, boxed: <image> With them in view: {answer}",
    "I need to find {objects}. Marking them in the image: <image> So the answer is: {answer}",
    "Let me locate {objects} first. <image> Looking at the highlighted areas: {answer}",
    "What matters here is {objects}. Boxed in red: <image> Based on that: {answer}",
    "Searching the image for {objects}: <image> Now I can answer. {answer}",
)
_FOCUS = re.compile(r"Additional visual information to focus on:\s*(?:<object>\s*[;,]?\s*)*\.?[ \t]*\n?",
                    re.IGNORECASE)
BOX_COLOR = (255, 0, 0)


@dataclass
class VStarOptions:
    input: list[Path] = opt(help="SEAL training JSON array (GQA_data.json, …; repeat for several)", factory=list)
    media_root: Path | None = opt(None, help="Folder the `image` paths are relative to")
    seed: int = opt(0, help="Seed for picking each record's phrasing (stable per record id)")
    non_search: Literal["vqa", "reject"] = opt("vqa", help="Items without target_instances: pass through as vqa, "
                                                           "or reject")
    image_format: Literal["jpg", "png"] = opt("jpg", help="File format of the boxed copies")


def units(options: VStarOptions, shard_size: int, limit: int | None) -> list[InputSpan]:
    return plan_inputs(options.input, shard_size, limit, "vstar")


def records(options: VStarOptions, unit: InputSpan) -> Iterator[Output]:
    yield from span_records(unit.span, lambda item: convert(options, item.value, unit.label, item.number, item.ref))


def convert(options: VStarOptions, raw: Any, label: str, number: int, ref: str) -> Record:
    if not isinstance(raw, dict):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    instances = raw.get("target_instances")
    if not instances:
        if options.non_search == "reject":
            raise RecordError("not a visual-search sample (no target_instances); --non-search reject")
        record = convert_llava(raw, f"{label}:{number}", ref)
        record.source = "vstar"
        return record
    objects = _instances(instances)
    question, answer, dropped = _exchange(raw.get("conversations"))
    path = raw.get("image")
    if not isinstance(path, str) or not path.strip():
        raise RecordError(f"field 'image' must be an image path, got {path!r}")
    rid = f"{raw.get('id', '')}@{label}:{number}"
    path = path.strip().removeprefix("./")
    data, path = read_media(options.media_root, path, f"image {path!r}")
    im = decode_image(data, f"image {path!r}").convert("RGB")
    boxes, notes = clamp_boxes(objects, *im.size)
    boxed = draw_boxes(im, boxes)
    buf = io.BytesIO()
    boxed.save(buf, format="PNG") if options.image_format == "png" else boxed.save(buf, format="JPEG", quality=95)
    draws = Draws(options.seed, rid, "random")
    human, gpt = draws.choice(HUMAN_PREFIXES), draws.choice(GPT_TEMPLATES)
    names = _dedupe(name for name, _ in boxes)
    meta: dict[str, Any] = {"ref": ref, "orig_id": raw.get("id"), "image_size": list(im.size),
                            "target_instances": instances, "boxes_drawn": [list(b) for _, b in boxes], **notes}
    if dropped:
        meta["turns_dropped"] = dropped
    stem = f"{safe_name(str(raw.get('id', ''))) or 'item'}_{number}"
    return Record(
        id=rid, source="vstar", task="visual_cot",
        conversations=[Turn("human", f"{human} {IMAGE}\n{question}".lstrip()),
                       Turn("gpt", gpt.format(objects=_listing(names), answer=answer))],
        media=[Media(path=path), Media(path=f"vstar/boxed/{safe_name(label) or 'input'}/{stem}.{options.image_format}",
                                       data=buf.getvalue())],
        meta=meta,
    )


def _instances(value: Any) -> list[tuple[str, list[float]]]:
    if not isinstance(value, list):
        raise RecordError(f"field 'target_instances' must be a list of {{name, bbox}}, got {type(value).__name__}")
    out = []
    for i, inst in enumerate(value):
        name = inst.get("name") if isinstance(inst, dict) else None
        bbox = inst.get("bbox") if isinstance(inst, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise RecordError(f"target_instances[{i}]: 'name' must be a non-empty string")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            raise RecordError(f"target_instances[{i}]: 'bbox' must be [x, y, width, height] numbers, got {bbox!r}")
        out.append((name.strip(), [float(v) for v in bbox]))
    return out


def _exchange(convs: Any) -> tuple[str, str, int]:
    """(question, answer, later turns dropped) from the first human → gpt exchange."""
    if not isinstance(convs, list) or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in convs):
        raise RecordError("field 'conversations' must be a list of {from, value} objects")
    roles = [str(t.get("from", "")).lower() for t in convs]
    if len(convs) < 2 or roles[0] not in ("human", "user") or roles[1] not in ("gpt", "assistant"):
        raise RecordError(f"conversations: expected a human turn then a gpt turn, got roles {roles[:4]}")
    question = _FOCUS.sub("", convs[0]["value"].replace(IMAGE, "")).replace("<object>", "").strip()
    answer = convs[1]["value"].replace(IMAGE, "").strip()
    if not question:
        raise RecordError("conversations[0]: no question left after removing the focus line")
    if not answer:
        raise RecordError("conversations[1]: empty answer")
    return question, answer, len(convs) - 2


def clamp_boxes(objects: list[tuple[str, list[float]]], width: int, height: int
                ) -> tuple[list[tuple[str, tuple[int, int, int, int]]], dict[str, Any]]:
    """[x, y, w, h] boxes → integer x1, y1, x2, y2 inside the image; boxes with no area inside are dropped (noted),
    and a sample left without any is rejected."""
    kept, notes = [], {}
    for name, (x, y, w, h) in objects:
        x1, y1 = max(0, math.floor(min(x, x + w))), max(0, math.floor(min(y, y + h)))
        x2, y2 = min(width, math.ceil(max(x, x + w))), min(height, math.ceil(max(y, y + h)))
        if (x1, y1, x2, y2) != (math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h)):
            notes["clamped"] = True
        if x2 <= x1 or y2 <= y1:
            notes.setdefault("boxes_dropped", []).append(name)
            continue
        kept.append((name, (x1, y1, x2, y2)))
    if not kept:
        raise RecordError(f"no target box has area inside the {width}x{height} image "
                          f"({', '.join(f'{n} {b}' for n, b in objects)})")
    return kept, notes


def draw_boxes(image: Image.Image, boxes: list[tuple[str, tuple[int, int, int, int]]]) -> Image.Image:
    """A copy of `image` with each box outlined in red and its name written above it (inside, at the top edge)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(image.size) / 200))  # 5 px on a 1000 px image, still visible once shrunk to 384
    for name, (x1, y1, x2, y2) in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=BOX_COLOR, width=line)
        top = y1 - 12 if y1 >= 12 else min(y1 + line, image.height - 1)
        draw.text((x1 + line, top), name, fill=BOX_COLOR)
    return out


def _dedupe(names: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _listing(names: list[str]) -> str:
    items = [f"the {n}" if not n.lower().startswith(("the ", "a ", "an ")) else n for n in names]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


BUILDER = Builder(
    name="vstar",
    help="V*/SEAL visual-search training JSON → visual_cot records: the image with its target objects boxed is "
         "the generated visual thought.",
    options=VStarOptions,
    units=units,
    records=records,
    media_root=lambda o: o.media_root,
    generates_media=True,
)
