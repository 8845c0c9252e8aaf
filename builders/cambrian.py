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
from itertools import groupby, repeat
from operator import attrgetter
from pathlib import Path
from typing import Any

from builders._common import InputSpan, convert_llava, plan_inputs, span_records
from mmdata.build import Batch, Builder, Output
from mmdata.core import rules
from mmdata.core.options import opt
from mmdata.core.schema import LLAVA_DECODER, LlavaRecord, Record, RecordError, Reject


@dataclass
class CambrianOptions:
    input: list[Path] = opt(help="Cambrian JSONL or LLaVA JSON array file (repeat for several)", factory=list)
    media_root: Path | None = opt(None, help="Folder the records' `image` paths are relative to")


def units(options: CambrianOptions, shard_size: int, limit: int | None) -> list[InputSpan]:
    return plan_inputs(options.input, shard_size, limit, "cambrian")


def records(options: CambrianOptions, unit: InputSpan) -> Iterator[Output]:
    yield from span_records(unit.span, lambda item: convert_llava(item.value, f"{unit.label}:{item.number}", item.ref),
                            LLAVA_DECODER, lambda batch: convert_batch(batch, unit.label))


_ID, _IMAGE, _VIDEO, _TURNS = map(attrgetter, ("id", "image", "video", "conversations"))


def convert_batch(batch: Batch, label: str) -> list[Record | Reject]:
    """`convert` of each of a batch's typed values. Runs of values that are text-only with whole exchanges of the
    contract's turns, as most lines of these files are (nothing to repair), are converted in a few whole-batch
    passes in C."""
    values, refs = batch.values, batch.refs()
    numbers = range(batch.first, batch.first + len(values))
    fast = _text_pairs(values)
    if all(fast):
        return _text_records(values, numbers, refs, label)
    out: list[Record | Reject] = []
    at = 0
    for is_fast, run in groupby(fast):
        part = slice(at, at + sum(1 for _ in run))
        out += (_text_records(values[part], numbers[part], refs[part], label) if is_fast else
                [_convert(value, f"{label}:{number}", ref)
                 for number, value, ref in zip(numbers[part], values[part], refs[part])])
        at = part.stop
    return out


def _text_pairs(values: list[LlavaRecord]) -> list[bool]:
    """For each value: whether it is text-only and its turns pass the contract's rules as whole exchanges (its roles
    in their order, no opening turn, ending with the order's last role): with the contract's human/gpt order, what
    `convert_llava` leaves as it is (no role to respell, no leading gpt or trailing human turn to drop)."""
    n = len(values)
    contract = rules.RULES
    images, videos = list(map(_IMAGE, values)), list(map(_VIDEO, values))
    if images.count(None) == n and videos.count(None) == n and contract.whole_exchanges(list(map(_TURNS, values))):
        return [True] * n  # the usual batch
    checked = contract.turn_verdicts(values)  # which values, then
    if checked is None:
        return [False] * n
    cut = map(len(contract.order).__rmod__, map(len, map(_TURNS, values)))  # not whole cycles of the order
    return [image is None and video is None and count is not None and not opens and not partial
            for image, video, count, opens, partial in zip(images, videos, *checked, cut)]


def _text_records(values: list[LlavaRecord], numbers: range, refs: list[str], label: str) -> list[Record]:
    """`convert` of values that `_text_pairs` passed: the same Records, made a batch at a time."""
    origs = list(map(_ID, values))
    keys = origs if None not in origs else ["" if o is None else o for o in origs]
    ids = [f"{o}@{label}:{number}" for o, number in zip(keys, numbers)]  # `convert_llava`'s ids
    metas = [{"orig_id": o, "ref": ref} for o, ref in zip(origs, refs)]
    n = len(values)
    return list(map(Record, ids, repeat("cambrian"), repeat("text"), map(_TURNS, values), map(list, repeat((), n)),
                    metas))


def _convert(raw: Any, key: str, ref: str) -> Record | Reject:
    try:
        return convert_llava(raw, key, ref)
    except RecordError as e:
        return Reject(ref, str(e))


BUILDER = Builder(
    name="cambrian",
    help="Cambrian-7M/10M JSONL and LLaVA-style JSON arrays (LLaVA-665K) → vqa/text conversations.",
    options=CambrianOptions,
    units=units,
    records=records,
    media_root=lambda o: o.media_root,
)
