"""Cambrian-7M / Cambrian-10M JSONL and LLaVA-style JSON arrays (LLaVA-665K) → `vqa` / `text` records.

Where to get it: Cambrian's `jsons/*.jsonl` with the per-source image tarballs extracted under one root
(`nyu-visionx/Cambrian-10M`), or `llava_v1_5_mix665k.json` (one ~1 GB JSON array, streamed here) with COCO, GQA,
OCR-VQA, TextVQA and VG images under one root. A record: `{"id", "image"?, "conversations": [{"from", "value"}]}`.

Quirks handled (each one noted in the record's meta when it changed something):
- "no image" spelled as a missing key, "", null, "None", "none", "nan" → a `text` record;
- duplicate or int-like ids → ids made unique and stable from file and line: `{orig_id}@{file}:{line}`;
- a leading `gpt` turn (dropped), a trailing unanswered `human` turn (dropped), `user`/`assistant` role spellings;
- an image with no `<image>` placeholder in the text → one placeholder prepended to the first human turn;
- letter-case mismatches between paths and files (resolved by the writer, noted as `case_resolved`);
- missing or undecodable images, invalid JSON lines, unusable conversations → rejects with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders._common import ROLES, InputSpan, plan_inputs
from mmdata.options import opt
from mmdata.registry import Builder, register
from mmdata.schema import IMAGE, LLAVA_KEYS, NO_IMAGE, TURN_ORDER, Record, RecordError, Reject
from mmdata.sources import iter_span


@dataclass
class CambrianOptions:
    input: list[Path] = opt(help="Cambrian JSONL or LLaVA JSON array file (repeat for several)", factory=list)
    media_root: Path | None = opt(None, help="Folder the records' `image` paths are relative to")


def units(options: CambrianOptions, shard_size: int, limit: int | None) -> list[InputSpan]:
    return plan_inputs(options.input, shard_size, limit, "cambrian")


def records(options: CambrianOptions, unit: InputSpan) -> Iterator[Record | Reject]:
    for item in iter_span(unit.span):
        if item.error is not None:
            yield Reject(item.ref, item.error)
            continue
        key = f"{unit.label}:{item.number}"
        fast = convert_text(item.value, key, item.ref)
        if fast is not None:
            yield fast
            continue
        try:
            yield convert(item.value, key, item.ref)
        except RecordError as e:
            yield Reject(item.ref, str(e))


def convert_text(raw: Any, key: str, ref: str) -> dict[str, Any] | None:
    """A well-formed text-only record straight to its stored form (`Record.to_dict()` layout), or None.

    Text-heavy files are otherwise bound by building objects; the output is identical to `convert(...).to_dict()`
    (a test holds it to that), and the writer still validates it.
    """
    if type(raw) is not dict:
        return None
    image = raw.get("image")
    if image is not None and not (type(image) is str and image.strip().lower() in NO_IMAGE):
        return None
    if raw.get("video") not in (None, ""):
        return None
    convs = raw.get("conversations")
    if type(convs) is not list or not convs or len(convs) % 2:
        return None
    turns = []
    for i, t in enumerate(convs):
        if type(t) is not dict:
            return None
        role, value = t.get("from"), t.get("value")
        if role != TURN_ORDER[i & 1] or type(value) is not str or not value or value.isspace() \
                or IMAGE in value:
            return None
        turns.append({"from": role, "value": value})
    orig = raw.get("id")
    meta: dict[str, Any] = {"orig_id": orig}
    if not raw.keys() <= LLAVA_KEYS:
        meta["extra"] = {k: v for k, v in raw.items() if k not in LLAVA_KEYS}
    meta["ref"] = ref
    return {"id": f"{'' if orig is None else orig}@{key}", "source": "cambrian", "task": "text", "media": [],
            "conversations": turns, "meta": meta}



def convert(raw: Any, key: str, ref: str) -> Record:
    """One LLaVA/Cambrian dict → a Record, repairing the known quirks (noted in meta) or raising `RecordError`."""
    if not isinstance(raw, dict):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    orig = raw.get("id")
    rid = f"{'' if orig is None else orig}@{key}"
    record = Record.from_llava(raw, source="cambrian", id=rid)
    if "video" in record.meta:
        raise RecordError(f"record {rid!r}: has a `video`, not an image; build it with `mmdata build video`")
    notes: dict[str, Any] = {}
    turns = record.conversations
    for i, t in enumerate(turns):
        role = ROLES.get(t.role) or ROLES.get(t.role.lower())
        if role is None:
            raise RecordError(f"record {rid!r}: conversations[{i}].from is {t.role!r}; expected human or gpt")
        t.role = role
    lead = 1 if turns and turns[0].role == "system" else 0
    while len(turns) > lead and turns[lead].role == "gpt":
        turns.pop(lead)
        notes["dropped_leading_gpt"] = notes.get("dropped_leading_gpt", 0) + 1
    if len(turns) > lead and turns[-1].role == "human":
        turns.pop()
        notes["dropped_trailing_human"] = True
    if len(turns) == lead:
        raise RecordError(f"record {rid!r}: no human/gpt exchange left in 'conversations'")
    if record.media and not any(IMAGE in t.value for t in turns):
        first = next(t for t in turns if t.role == "human")
        first.value = IMAGE * len(record.media) + "\n" + first.value
        notes["placeholder_added"] = True
    for m in record.media:
        if m.path.startswith("./"):
            m.path = m.path[2:]
    record.meta["ref"] = ref
    if record.media:
        record.meta["subset"] = record.media[0].path.split("/", 1)[0]
    if notes:
        record.meta["repaired"] = notes
    return record


register(Builder(
    name="cambrian",
    help="Cambrian-7M/10M JSONL and LLaVA-style JSON arrays (LLaVA-665K) → vqa/text conversations.",
    options=CambrianOptions,
    units=units,
    records=records,
    media_root=lambda o: o.media_root,
))
