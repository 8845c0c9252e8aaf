"""What several builders share: input labels and spans, seeded per-record choices, role spellings, the LLaVA
record with its repairs, safe file names, the edit record.

Not a builder (it has no entry point). Media reading and decoding live in `mmdata.core.media`, which
the writer uses too.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from mmdata.build import Batch, Item, Span, iter_batches, plan
from mmdata.core.errors import InputError
from mmdata.core.media import MediaError
from mmdata.core.schema import IMAGE, LlavaRecord, Media, Record, RecordError, Reject, Turn
from mmdata.core.schema import ROLES as RECORD_ROLES

T = TypeVar("T")

# Role spellings found in released LLaVA-style files → the Record roles.
ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "model": "gpt", "system": "system"}


def input_labels(paths: Sequence[Path]) -> list[str]:
    """One label per input, unique among them, that goes into record ids: the file's stem (a folder's name), or
    `stem~i` (i: the input's position) when two inputs share it. Ids then stay unique and stable."""
    stems = [Path(p).name if Path(p).is_dir() else Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}~{i}" for i, s in enumerate(stems)]


@dataclass(frozen=True)
class InputSpan:
    """A span of one of several `--input` files; `label` names the file among the inputs (see `input_labels`)."""

    label: str
    span: Span


def plan_inputs(paths: list[Path], per_span: int, limit: int | None, builder: str) -> list[InputSpan]:
    """Spans over several input files in order, `limit` items in all; the unit list of a JSON/JSONL builder."""
    if not paths:
        raise InputError(f"{builder}: give at least one --input file")
    out: list[InputSpan] = []
    left = limit
    for label, path in zip(input_labels(paths), paths, strict=True):
        if left == 0:
            break
        spans = plan(Path(path), per_span, left)
        out.extend(InputSpan(label, s) for s in spans)
        if left is not None:
            left -= sum(s.count for s in spans)
    return out


Derivation = Literal["blake2b", "sha256", "random"]


class Draws:
    """The seeded choices of one record: the same (seed, key) gives the same draws whatever the shard, worker or
    order, and never from the salted built-in `hash()`. Draws are taken in order.

    `derivation` is how (seed, key) becomes draws, always named by the caller: each builder keeps the one its
    datasets were built with, so that its outputs stay byte-identical (a new builder takes "random").
    - "blake2b" (visual_cot, aurora): one draw, the 64-bit blake2b of `f"{seed}\\0{key}"`, little-endian;
    - "sha256" (cc12m): up to four draws, the big-endian 64-bit words of sha256(`f"{seed}:{key}"`), in order;
    - "random" (video): Python's `random.Random(f"{seed}:{key}")`, any number of draws.
    For the hash derivations a draw in range(n) is the word modulo n, a share is the word / 2**64.
    """

    def __init__(self, seed: int, key: str, derivation: Derivation) -> None:
        self._rng: random.Random | None = None
        self._words: list[int] = []
        if derivation == "random":
            self._rng = random.Random(f"{seed}:{key}")
        elif derivation == "blake2b":
            self._words = [int.from_bytes(hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest(),
                                          "little")]
        elif derivation == "sha256":
            digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
            self._words = [int.from_bytes(digest[i:i + 8], "big") for i in range(0, 32, 8)]
        else:
            raise ValueError(f"unknown derivation {derivation!r}")
        self._next = 0

    def word(self) -> int:
        """The next draw as a 64-bit integer."""
        if self._rng is not None:
            return self._rng.getrandbits(64)
        if self._next == len(self._words):
            raise IndexError(f"only {len(self._words)} draw(s) per record with this derivation")
        self._next += 1
        return self._words[self._next - 1]

    def index(self, n: int) -> int:
        """The next draw in range(n)."""
        return self._rng.randrange(n) if self._rng is not None else self.word() % n

    def choice(self, options: Sequence[T]) -> T:
        return options[self.index(len(options))]

    @property
    def rng(self) -> random.Random:
        """The generator itself ("random" derivation only), for what needs more than draws: shuffles, samples."""
        if self._rng is None:
            raise ValueError("only the 'random' derivation has a generator")
        return self._rng

    def share(self) -> float:
        """The next draw in [0, 1)."""
        return self._rng.random() if self._rng is not None else self.word() / 2**64


def edit_record(rid: str, source: str, instruction: Any, before: Media, after: Media, meta: dict[str, Any],
                field: str = "instruction") -> Record:
    """The one shape of an edit sample (InstructPix2Pix, AURORA): human `<image> {instruction}` → gpt `<image>`."""
    if instruction is not None and not isinstance(instruction, str):
        raise RecordError(f"record {rid!r}: field {field!r} must be a string, got {type(instruction).__name__} "
                          f"{str(instruction)[:80]!r}")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RecordError(f"record {rid!r}: field {field!r} is empty or missing ({instruction!r})")
    return Record(id=rid, source=source, task="edit", media=[before, after], meta=meta,
                  conversations=[Turn("human", f"{IMAGE} {instruction.strip()}"), Turn("gpt", IMAGE)])


def span_records(span: Span, convert: Callable[[Item], Record], typed: Any = None,
                 convert_batch: Callable[[Batch], list[Record | Reject]] | None = None
                 ) -> Iterator[list[Record | Reject]]:
    """Each item of a JSON/JSONL span converted to a Record, or a Reject with the reason: an item that does not parse
    or does not convert is counted, never a stop of the build. Comes in batches (lists) for the writer;
    `convert_batch`, if given, converts a batch of `typed` values at once and must equal `convert` on each."""
    for batch in iter_batches(span, typed):
        if batch.items is None and convert_batch is not None:
            yield convert_batch(batch)
        else:
            yield [_convert(convert, item) for item in batch]


def _convert(convert: Callable[[Item], Record], item: Item) -> Record | Reject:
    if item.error is not None:
        return Reject(item.ref, item.error)
    try:
        return convert(item)
    except (RecordError, MediaError) as e:
        return Reject(item.ref, str(e))


def convert_llava(raw: Any, key: str, ref: str) -> Record:
    """One LLaVA/Cambrian record (a dict, or a `LlavaRecord` typed while decoding) → a `cambrian` Record, repairing
    the known quirks (noted in meta; see `builders.cambrian`) or raising `RecordError`."""
    if type(raw) is LlavaRecord:
        orig = raw.id
    elif isinstance(raw, dict):
        orig = raw.get("id")
    else:
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    rid = f"{'' if orig is None else orig}@{key}"
    record = Record.from_llava(raw, source="cambrian", id=rid)
    meta, turns, media = record.meta, record.conversations, record.media
    if "video" in meta:
        raise RecordError(f"record {rid!r}: has a `video`, not an image; build it with `mmdata build video`")
    for i, t in enumerate(turns):
        if t.role not in RECORD_ROLES:
            role = ROLES.get(t.role) or ROLES.get(t.role.lower())
            if role is None:
                raise RecordError(f"record {rid!r}: conversations[{i}].from is {t.role!r}; expected human or gpt")
            t.role = role
    notes: dict[str, Any] = {}
    lead = 1 if turns and turns[0].role == "system" else 0
    while len(turns) > lead and turns[lead].role == "gpt":
        turns.pop(lead)
        notes["dropped_leading_gpt"] = notes.get("dropped_leading_gpt", 0) + 1
    if len(turns) > lead and turns[-1].role == "human":
        turns.pop()
        notes["dropped_trailing_human"] = True
    if len(turns) == lead:
        raise RecordError(f"record {rid!r}: no human/gpt exchange left in 'conversations'")
    if media:
        if not any(IMAGE in t.value for t in turns):
            first = next(t for t in turns if t.role == "human")
            first.value = IMAGE * len(media) + "\n" + first.value
            notes["placeholder_added"] = True
        for m in media:
            if m.path.startswith("./"):
                m.path = m.path[2:]
    meta["ref"] = ref
    if media:
        meta["subset"] = media[0].path.split("/", 1)[0]
    if notes:
        meta["repaired"] = notes
    return record


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(text: str) -> str:
    """`text` as a short file-name component: runs of anything but letters, digits, `_` and `-` become `_`."""
    return _UNSAFE.sub("_", text)[:60].strip("_")
