"""Visual-CoT → `visual_cot` records: the crop of the region of interest is a generated "visual thought".

Where to get it: `deepcs233/Visual-CoT` on the HF hub: `viscot_363k.json` (or `viscot_mixed_2m.json`, which adds
LLaVA-665K samples) and the images (`cot_images_tar_split/*`, extracted under one root so paths read
`cot/<dataset>/<file>`); the per-source metadata `metadata/*.jsonl` is read as well.

Two input shapes, told apart per item (files may be mixed on the command line):
- training JSON array item: `question_id`, `dataset`, `split`, `image: [img, "img###[x1, y1, x2, y2]"]`, four turns
  (question + "Please provide the bounding box…" → padded-square box → `<image>` → answer);
- metadata JSONL line: `question, answer, image, width, height, bboxs: [[x1, y1, x2, y2], …], dataset, split`;
  `image` is tried as given, then as `cot/<dir>/<image>` and `<dir>/<image>` under the media root, where `<dir>` is
  the dataset, except textcap → textvqa (the release's own converter maps it so).

A record, as MetaMorph builds it: human `{prefix} <image>\n{question}` (the full image, input) → gpt
`{prefix} <image> {answer}` (the crop, a generation target), the prefixes from `HUMAN_PREFIXES` (13) and
`GPT_PREFIXES` (16), each picked by a stable hash of (seed, id). The crop is cut here and stored by the
writer under `visual_cot/crops/…`, so the training loader needs no geometry.

Box rules: numbers after `###` parsed as floats; several boxes are united; a box is normalised when every value lies in
0..1 and at least one is written as a non-integer (`[0, 0, 1, 1]` stays a 1-pixel box); corners are sorted, the box
is clamped to the image, and one with zero area after clamping is rejected. Pixel bounds: floor(x1, y1),
ceil(x2, y2). Items without a `###` entry (the LLaVA part of the mixed release) pass through as `vqa` records
(`--non-cot reject` rejects them instead); the manifest's `tasks` counts both.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from builders._common import Draws, InputSpan, convert_llava, plan_inputs, safe_name, span_records
from mmdata.build import Builder, Output, inside, read_media, resolve_case
from mmdata.core.media import DEEP_MODES, MediaError, decode, decode_image, orientation, to_rgb
from mmdata.core.options import opt
from mmdata.core.schema import IMAGE, Media, Record, RecordError, Turn

# MetaMorph keeps the question as Visual-CoT writes it (`<image>\n{question}`) behind one of 13 human prefixes (one
# empty) and answers with one of 16 gpt prefixes (one empty) + `<image>` (the crop) + the answer. Our own wording, as
# many of each, so the model does not key the visual thought on one phrase.
HUMAN_PREFIXES: tuple[str, ...] = (
    "Picture the part that matters first:",
    "Zoom in mentally before answering,",
    "Find the relevant region, then answer:",
    "Look closely at the key area:",
    "Think visually before you answer:",
    "Spot the detail that decides it,",
    "Start from the region that holds the answer:",
    "Focus on where the answer is in the image,",
    "Sketch the important region in your mind:",
    "Reason with the picture first:",
    "Which part of the image tells? Then answer:",
    "Imagine the crucial region up close,",
    "",
)
GPT_PREFIXES: tuple[str, ...] = (
    "Let me look at the part that matters:",
    "Zooming in on the key region:",
    "First, the relevant area:",
    "Here is where to look:",
    "Focusing on the decisive detail:",
    "The region that answers it:",
    "Let me picture the important part:",
    "Looking closer at this area:",
    "This is the part of the image that counts:",
    "Let me find the right spot first:",
    "Narrowing down to the key detail:",
    "Visually, the answer lies here:",
    "Let me check this region:",
    "Taking a closer look:",
    "The crucial area, up close:",
    "",
)
_BOX_PROMPT = re.compile(r"\s*Please (?:think step by step and )?provide the bounding box coordinate of the region that "
                         r"can help you answer the question better\.?\s*$", re.IGNORECASE)
# `metadata/*.jsonl` image folders that differ from the dataset name, as the release's own converter maps them:
# textcap's images are TextVQA's. Every other dataset (gqa, v7w, …) lives under cot/<dataset>/.
IMAGE_DIRS = {"textcap": "textvqa"}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass
class VisualCotOptions:
    input: list[Path] = opt(help="viscot_*.json array or metadata/*.jsonl file (repeat for several)", factory=list)
    media_root: Path | None = opt(None, help="Folder the `image` paths are relative to (holds cot/<dataset>/…)")
    seed: int = opt(0, help="Seed for picking each record's prefixes (stable per record id)")
    non_cot: Literal["vqa", "reject"] = opt("vqa", help="Items without a `###` box: pass through as vqa, or reject")
    crop_format: Literal["jpg", "png"] = opt("jpg", help="File format of the materialised crops")


def units(options: VisualCotOptions, shard_size: int, limit: int | None) -> list[InputSpan]:
    return plan_inputs(options.input, shard_size, limit, "visual_cot")


def records(options: VisualCotOptions, unit: InputSpan) -> Iterator[Output]:
    yield from span_records(unit.span, lambda item: convert(options, item.value, unit.label, item.number, item.ref))


def convert(options: VisualCotOptions, raw: Any, label: str, number: int, ref: str) -> Record:
    if not isinstance(raw, dict):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    if "bboxs" in raw or ("conversations" not in raw and "question" in raw):
        return _from_metadata(options, raw, label, number, ref)
    images = raw.get("image") if isinstance(raw.get("image"), list) else [raw.get("image")]
    boxed = [p for p in images if isinstance(p, str) and "###" in p]
    if not boxed:
        if options.non_cot == "reject":
            raise RecordError("not a CoT sample (no `image` entry with a ###box); --non-cot reject")
        record = convert_llava(raw, f"{label}:{number}", ref)
        record.source = "visual_cot"
        return record
    path, box_text = boxed[0].split("###", 1)
    values = [float(v) for v in _NUMBER.findall(box_text)]
    literals_int = all(re.fullmatch(r"[-+]?\d+", v) for v in _NUMBER.findall(box_text))
    question, answer = _question_answer(raw.get("conversations"))
    meta = {"box_raw": box_text}
    return _record(options, raw, label, number, ref, path, values, not literals_int, question, answer, None, meta)


def _from_metadata(options: VisualCotOptions, raw: dict[str, Any], label: str, number: int, ref: str) -> Record:
    question, answer = raw.get("question"), raw.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise RecordError("field 'question' is missing or empty")
    if not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise RecordError("field 'answer' is missing or empty")
    flat = _flatten(raw.get("bboxs"))
    if flat is None:
        raise RecordError(f"field 'bboxs' must be a list of [x1, y1, x2, y2] number lists, got {raw.get('bboxs')!r}")
    image, dataset = raw.get("image"), str(raw.get("dataset", ""))
    if not isinstance(image, str) or not image:
        raise RecordError("field 'image' is missing or not a string")
    folder = IMAGE_DIRS.get(dataset, dataset)
    candidates = [image, f"cot/{folder}/{image}", f"{folder}/{image}"] if dataset else [image]
    root = options.media_root
    if root is not None:
        inside(root, image, f"image {image!r}")  # an absolute path, `..` or an escaping symlink is refused by name
    found = [c for c in candidates if root is not None and _contained(root, c) and resolve_case(root, c) is not None]
    if root is not None and not found:
        raise MediaError(f"image {image!r}: not found under media root {root} (tried {', '.join(candidates)})")
    path = found[0] if found else image
    declared = (raw.get("width"), raw.get("height"))
    meta: dict[str, Any] = {"box_raw": raw.get("bboxs")}
    is_float = any(isinstance(v, float) for v in flat)
    return _record(options, raw, label, number, ref, path, [float(v) for v in flat], is_float,
                   question.replace(IMAGE, "").strip(), str(answer).replace(IMAGE, "").strip(), declared, meta)


def _flatten(value: Any) -> list[int | float] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, list):
        parts = [_flatten(v) for v in value]
        return None if any(p is None for p in parts) else [x for p in parts for x in p]  # type: ignore[union-attr]
    return None


def _question_answer(convs: Any) -> tuple[str, str]:
    if not isinstance(convs, list) or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in convs):
        raise RecordError("field 'conversations' must be a list of {from, value} objects")
    human = [t["value"] for t in convs if t.get("from") in ("human", "user")]
    gpt = [t["value"] for t in convs if t.get("from") in ("gpt", "assistant")]
    question = _BOX_PROMPT.sub("", human[0].replace(IMAGE, "")).strip() if human else ""
    answer = gpt[-1].replace(IMAGE, "").strip() if len(gpt) >= 2 else ""
    if not question:
        raise RecordError("conversations[0]: no question in the first human turn")
    if not answer:
        raise RecordError("conversations: no answer (expected question → box → <image> → answer)")
    return question, answer


def _record(options: VisualCotOptions, raw: dict[str, Any], label: str, number: int, ref: str, path: str,
            values: list[float], normalised_literals: bool, question: str, answer: str,
            declared: tuple[Any, Any] | None, meta: dict[str, Any]) -> Record:
    path = path.strip().removeprefix("./")
    dataset = str(raw.get("dataset", ""))
    qid = raw.get("question_id", raw.get("id"))
    rid = f"{dataset}{'' if qid is None else f'/{qid}'}@{label}:{number}"
    data, path = read_media(options.media_root, path, f"image {path!r}")
    im = decode_image(data, f"image {path!r}")
    if orientation(im) != 1 or im.mode in DEEP_MODES:  # boxes are drawn on the image as shown
        meta["crop_from"] = decode(data, path).notes()
        im = to_rgb(im)
    width, height = im.size
    normalised = normalised_literals and bool(values) and all(0.0 <= v <= 1.0 for v in values)
    box, notes = crop_box(values, width, height, normalised, declared, where=f"box {meta['box_raw']!r}")
    crop = im.crop(box).convert("RGB")
    buf = io.BytesIO()
    if options.crop_format == "png":
        crop.save(buf, format="PNG")
    else:
        crop.save(buf, format="JPEG", quality=95)
    # (label, number) alone makes the name unique; dataset and question id make it readable.
    stem = "_".join(p for p in (safe_name(dataset), "" if qid is None else safe_name(str(qid)), str(number)) if p)
    crop_path = f"visual_cot/crops/{safe_name(label) or 'input'}/{stem}.{options.crop_format}"
    # One keyed draw per pool (blake2b, as this builder's other choices): the two prefixes vary independently.
    human = Draws(options.seed, f"{rid}\x00human", "blake2b").choice(HUMAN_PREFIXES)
    gpt = Draws(options.seed, f"{rid}\x00gpt", "blake2b").choice(GPT_PREFIXES)
    meta.update(ref=ref, dataset=dataset, split=raw.get("split"), question_id=qid, image_size=[width, height],
                box_normalised=normalised, crop_box=list(box), **notes)
    return Record(
        id=rid, source="visual_cot", task="visual_cot",
        conversations=[Turn("human", f"{human} {IMAGE}\n{question}".lstrip()),
                       Turn("gpt", f"{gpt} {IMAGE} {answer}".lstrip())],
        # The full image stays a source file (no bytes): the writer checks it and links it rather than copying.
        media=[Media(path=path), Media(path=crop_path, data=buf.getvalue())], meta=meta,
    )


def crop_box(values: list[float], width: int, height: int, normalised: bool,
             declared: tuple[Any, Any] | None = None, where: str = "box") -> tuple[tuple[int, int, int, int],
                                                                                 dict[str, Any]]:
    """Box numbers (one or several x1, y1, x2, y2) → the integer pixel box to crop, and notes on what changed."""
    if not values or len(values) % 4 or not all(math.isfinite(v) for v in values):
        raise RecordError(f"{where}: expected x1, y1, x2, y2 (or several such boxes) as finite numbers")
    notes: dict[str, Any] = {}
    boxes = [values[i:i + 4] for i in range(0, len(values), 4)]
    if any(b[0] > b[2] or b[1] > b[3] for b in boxes):
        notes["corners_swapped"] = True
    boxes = [[min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])] for b in boxes]
    if len(boxes) > 1:
        notes["boxes_united"] = len(boxes)
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    sx, sy = float(width), float(height)
    if not normalised:
        sx = sy = 1.0
        dw, dh = declared or (None, None)
        if isinstance(dw, (int, float)) and isinstance(dh, (int, float)) and dw > 0 and dh > 0 \
                and not (1 <= dw < 1e9 and 1 <= dh < 1e9):
            raise RecordError(f"{where}: declared image size {dw!r}x{dh!r} is not a pixel size (1 or more)")
        if isinstance(dw, (int, float)) and isinstance(dh, (int, float)) and dw > 0 and dh > 0 \
                and (dw, dh) != (width, height):
            # The metadata's box is in its declared size; the file on disk is what we crop.
            sx, sy = width / dw, height / dh
            notes["rescaled_from"] = [dw, dh]
    # Rounded first so that 0.3 * 100 = 30.000000000000004 does not grow the crop by a pixel.
    x1, x2 = (round(v * sx, 6) for v in (x1, x2))
    y1, y2 = (round(v * sy, 6) for v in (y1, y2))
    cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        notes["clamped"] = True
    if cx2 <= cx1 or cy2 <= cy1:
        raise RecordError(f"{where}: degenerate region of interest (zero area after clamping to the "
                          f"{width}x{height} image: [{cx1}, {cy1}, {cx2}, {cy2}])")
    return (math.floor(cx1), math.floor(cy1), math.ceil(cx2), math.ceil(cy2)), notes


def _contained(root: Path, path: str) -> bool:
    try:
        inside(root, path, "image")
    except MediaError:
        return False
    return True


BUILDER = Builder(
    name="visual_cot",
    help="Visual-CoT (viscot_*.json, metadata/*.jsonl) → visual_cot records with the crop as a generation target.",
    options=VisualCotOptions,
    units=units,
    records=records,
    media_root=lambda o: o.media_root,
    generates_media=True,
)
