"""AURORA (action/reasoning image edits) → `edit` records, the same shape as InstructPix2Pix.

Where to get it: `McGill-NLP/AURORA` (`train.json` plus the per-source image folders, extracted under one root; the
JSON's paths are relative to it). An item: `{"instruction": str | [str, ...], "input": path, "output": path}`.
Direction comes from the keys only — `input` is the source, `output` the edited image — never from file names (some
are named `*_after`/`*_before` the other way round). The validation and bench files (`data/*/valid.json`, `test.json`)
name the instruction `prompt` and add `id`, `pos` (the opposite edit), `mask`, `task`: `prompt` is read when there is
no `instruction`, the other keys go to meta. A list of instructions gives one record: the phrasing is picked
by a stable hash of (seed, id), the others are kept in meta. Images stay in place under the media root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders._common import Draws, InputSpan, edit_record, plan_inputs, span_records
from mmdata.build import Builder, Output
from mmdata.core.options import opt
from mmdata.core.schema import Media, Record, RecordError

INSTRUCTION_KEYS = ("instruction", "prompt")  # train.json; valid.json and test.json


@dataclass
class AuroraOptions:
    input: list[Path] = opt(help="AURORA JSON array (train.json, valid.json, test.json; repeat for several)",
                            factory=list)
    media_root: Path | None = opt(None, help="Folder the `input`/`output` paths are relative to (the repo root)")
    seed: int = opt(0, help="Seed for picking one of several instructions (stable per record id)")


def units(options: AuroraOptions, shard_size: int, limit: int | None) -> list[InputSpan]:
    return plan_inputs(options.input, shard_size, limit, "aurora")


def records(options: AuroraOptions, unit: InputSpan) -> Iterator[Output]:
    yield from span_records(unit.span,
                            lambda item: convert(item.value, f"{unit.label}:{item.number}", item.ref, options.seed))


RESERVED = ("ref", "instructions", "extra", "case_resolved", "media_notes")  # meta keys this builder or the writer set


def convert(raw: Any, rid: str, ref: str, seed: int) -> Record:
    if not isinstance(raw, dict):
        raise RecordError(f"record {rid!r}: expected a JSON object, got {type(raw).__name__}")
    paths = []
    for key in ("input", "output"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise RecordError(f"record {rid!r}: field {key!r} must be an image path, got {value!r}")
        paths.append(value.strip().removeprefix("./"))
    field = next((k for k in INSTRUCTION_KEYS if k in raw), None)
    if field is None:
        raise RecordError(f"record {rid!r}: no instruction: expected one of the keys {', '.join(INSTRUCTION_KEYS)}; "
                          f"found {', '.join(map(repr, raw)) or 'none'}")
    instruction = raw[field]
    meta: dict[str, Any] = {"ref": ref}
    if isinstance(instruction, list):
        options = [s.strip() for s in instruction if isinstance(s, str) and s.strip()]
        meta["instructions"] = instruction
        instruction = Draws(seed, rid, "blake2b").choice(options) if options else None
    extra = {k: v for k, v in raw.items() if k not in (field, "input", "output")}
    meta.update({k: v for k, v in extra.items() if k not in RESERVED})
    clashing = {k: v for k, v in extra.items() if k in RESERVED}
    if clashing:  # a source key never overwrites one the builder or the writer sets: kept under its own key
        meta["extra"] = clashing
    return edit_record(rid, "aurora", instruction, Media(path=paths[0]), Media(path=paths[1]), meta, field)


BUILDER = Builder(
    name="aurora",
    help="AURORA JSON ({instruction, input, output}) → edit records, output image as the generation target.",
    options=AuroraOptions,
    units=units,
    records=records,
    media_root=lambda o: o.media_root,
)
