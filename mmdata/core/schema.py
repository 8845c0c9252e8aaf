"""The one contract: `Record`, its `Media`, and `Reject`.

Builders yield these, the writer stores them, the mixer and loader serve them and the trainer consumes them.
`Record.validate()` is the single place where the invariants are checked; nothing downstream re-checks them.
Stored records decode straight into `Record` (`RECORD_DECODER`), LLaVA/Cambrian lines into `LlavaRecord`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import msgspec

from mmdata.core.errors import InputError

IMAGE = "<image>"


ROLES = ("system", "human", "gpt")


MEDIA_KINDS = ("image", "frame")


# Spellings of "no image" that occur in released LLaVA/Cambrian files (pandas round trips included).
NO_IMAGE = frozenset(("", "none", "null", "nan"))


LLAVA_KEYS = frozenset(("id", "image", "video", "conversations"))


TURN_ORDER = ("human", "gpt")  # after an optional system turn, turns alternate in this order


Role = Literal["system", "human", "gpt"]


class RecordError(InputError):
    """A record breaks the contract. The message names the record id and the field."""


# The types are msgspec Structs: stored lines decode straight into them (types checked while parsing, in C) and
# building one costs a fraction of a dataclass. Structs check no types when built in Python: `Record.validate`
# holds every rule, for records decoded and records built alike.
class Media(msgspec.Struct, gc=False):
    """One image or video frame. `path` is relative to the dataset's media root and never escapes it.

    `data` holds encoded bytes for media a builder produces itself (a crop, a frame, a parquet image): the writer
    stores them and drops the bytes. `data` is never serialized.
    """

    path: str
    kind: str = "image"
    width: int = 0
    height: int = 0
    video: str | None = None
    t: int | float | None = None
    data: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "path": self.path, "width": self.width, "height": self.height}
        if self.video is not None:
            d["video"] = self.video
        if self.t is not None:
            d["t"] = self.t
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Media:
        return cls(
            path=d["path"],
            kind=d.get("kind", "image"),
            width=int(d.get("width", 0)),
            height=int(d.get("height", 0)),
            video=d.get("video"),
            t=d.get("t"),
        )


class Turn(msgspec.Struct, gc=False):
    role: str = msgspec.field(name="from")  # "system" | "human" | "gpt"
    value: str

    def to_dict(self) -> dict[str, str]:
        return {"from": self.role, "value": self.value}


class Record(msgspec.Struct, weakref=True):  # weakref: a view knows which of its sources a record it served came from
    id: str
    source: str
    task: str
    conversations: list[Turn]
    media: list[Media] = []
    meta: dict[str, Any] = {}

    # ---------------------------------------------------------------- invariants
    def validate(self) -> Record:
        """Check every invariant of the contract; raise `RecordError` naming the id and field. Returns self.

        The one set of rules, for every record written; it runs on every record of every build, so the common
        case costs one pass over the turns."""
        if not isinstance(self.id, str) or not self.id:
            raise RecordError(f"record {self.id!r}: field 'id' must be a non-empty string")
        if not isinstance(self.source, str) or not self.source:
            raise self._error(f"field 'source' must be a non-empty string, got {self.source!r}")
        if not isinstance(self.task, str) or not self.task:
            raise self._error(f"field 'task' must be a non-empty string, got {self.task!r}")
        turns = self.conversations
        if not turns:
            raise self._error("field 'conversations' is empty")
        start = 1 if turns[0].role == "system" else 0
        placeholders = _placeholders_if_valid(turns)
        if placeholders is None:  # a turn breaks a rule: say which, turn by turn
            placeholders = self._check_turns(start)
        if len(turns) == start:
            raise self._error("field 'conversations' has no human turn")
        if start and IMAGE in turns[0].value:
            raise self._error(f"conversations[0] (system) contains {IMAGE}; media belong in human/gpt turns")
        if placeholders != len(self.media):
            raise self._error(f"{placeholders} {IMAGE} placeholder(s) in conversations but {len(self.media)} media")
        for i, m in enumerate(self.media) if self.media else ():
            if not _simple_path(m.path):
                check_media_path(m.path, f"record {self.id!r}: media[{i}].path")
            if m.kind not in MEDIA_KINDS:
                raise self._error(f"media[{i}].kind is {m.kind!r}; expected one of {MEDIA_KINDS}")
            t = m.t
            if t is not None and (not isinstance(t, (int, float)) or not 0 <= t < math.inf):
                raise self._error(f"media[{i}].t must be a finite number of seconds >= 0, got {t!r}")
        return self

    def _check_turns(self, start: int) -> int:
        """The turn rules, turn by turn, raising for the first turn that breaks one; else the placeholder count."""
        placeholders = 0
        for i, turn in enumerate(self.conversations):
            role, value = turn.role, turn.value
            expected = TURN_ORDER[(i - start) & 1] if i >= start else "system"
            if role != expected and role not in ROLES:
                raise self._error(f"conversations[{i}].from is {role!r}; expected one of {ROLES}")
            if not isinstance(value, str) or not value or value.isspace():
                raise self._error(f"conversations[{i}].value is empty")
            if role != expected:
                if role == "system":
                    raise self._error(f"conversations[{i}] is a system turn; only the first turn may be one")
                raise self._error(f"conversations[{i}].from is {role!r}, expected {expected!r} "
                                  "(turns alternate human/gpt after an optional system turn)")
            placeholders += value.count(IMAGE)
        return placeholders

    def _error(self, what: str) -> RecordError:
        return RecordError(f"record {self.id!r}: {what}")

    # ---------------------------------------------------------------- helpers
    def media_roles(self) -> list[str]:
        """For each media entry, in order: "input" (placeholder in a human turn) or "target" (in a gpt turn)."""
        roles: list[str] = []
        for turn in self.conversations:
            kind = "target" if turn.role == "gpt" else "input"
            roles.extend([kind] * turn.value.count(IMAGE))
        return roles

    def inputs(self) -> list[Media]:
        return [m for m, r in zip(self.media, self.media_roles()) if r == "input"]

    def targets(self) -> list[Media]:
        """Generation targets: images the model must produce (an `<image>` in a gpt turn)."""
        return [m for m, r in zip(self.media, self.media_roles()) if r == "target"]

    def first_text(self, role: str) -> str:
        return next((t.value for t in self.conversations if t.role == role), "")

    # ---------------------------------------------------------------- (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "task": self.task,
            "media": [m.to_dict() for m in self.media],
            "conversations": [t.to_dict() for t in self.conversations],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            id=d["id"],
            source=d["source"],
            task=d["task"],
            media=[Media.from_dict(m) for m in d.get("media", [])],
            conversations=[Turn(t["from"], t["value"]) for t in d["conversations"]],
            meta=d.get("meta") or {},
        )

    @classmethod
    def from_llava(
        cls, d: dict[str, Any] | LlavaRecord, *, source: str, task: str | None = None, id: str | None = None
    ) -> Record:
        """Import a LLaVA / Cambrian / MetaMorph record (`image` str or list, or `video`; `conversations`): a dict,
        or a `LlavaRecord` decoded by `LLAVA_DECODER` (types already checked, no other keys).

        Keys other than id/image/video/conversations go to `meta["extra"]` so `to_llava` gives them back.
        Raises `RecordError` naming the field for anything unusable.
        """
        if type(d) is LlavaRecord:
            orig, image, video, turns, extra = d.id, d.image, d.video, d.conversations, None
            rid = id if id is not None else str("" if orig is None else orig)
            if image is None and video is None:  # text only: nothing to normalise
                return cls(rid, source, task or "text", turns, [], {"orig_id": orig})
        else:
            orig, image, video = d.get("id"), d.get("image"), d.get("video")
            rid = id if id is not None else str(d.get("id", ""))
            turns = _llava_turns(d.get("conversations"), rid)
            extra = None if d.keys() <= LLAVA_KEYS else {k: v for k, v in d.items() if k not in LLAVA_KEYS}
        paths = llava_image_paths(image)
        kind = "image"
        if not paths and video not in (None, ""):
            paths, kind = llava_image_paths(video), "video"
        meta: dict[str, Any] = {"orig_id": orig}
        if extra:
            meta["extra"] = extra
        if kind == "video":
            # A `<video>` reference is not a decoded frame: video builders turn it into frames. Kept for export.
            meta["video"] = video
            return cls(id=rid, source=source, task=task or "video_qa", conversations=turns, meta=meta)
        if isinstance(image, list):
            meta["image_list"] = True
        media = [Media(path=p) for p in paths]
        return cls(id=rid, source=source, task=task or ("vqa" if media else "text"), conversations=turns,
                   media=media, meta=meta)

    def to_llava(self) -> dict[str, Any]:
        """Export back to a LLaVA-style dict; `from_llava(to_llava(r))` gives the same conversations and media."""
        out: dict[str, Any] = {"id": self.meta.get("orig_id", self.id)}
        if self.media:
            paths = [m.path for m in self.media]
            out["image"] = paths if (len(paths) > 1 or self.meta.get("image_list")) else paths[0]
        elif "video" in self.meta:
            out["video"] = self.meta["video"]
        out.update(self.meta.get("extra", {}))
        out["conversations"] = [t.to_dict() for t in self.conversations]
        return out


_ID, _SOURCE, _TASK, _TURNS, _MEDIA = map(attrgetter, ("id", "source", "task", "conversations", "media"))


_ROLE_OF, _VALUE_OF = attrgetter("role"), attrgetter("value")


_ORDER = ["system", *TURN_ORDER * 512]  # an optional system turn, then alternating turns (longer: turn by turn)


_RUN = 32  # records judged together again when their batch is not all usual ones


def _placeholders_if_valid(turns: list[Turn]) -> int | None:
    """`Record._check_turns` for one record's turns that pass, as a few whole-list operations in C (a Python step
    per turn costs more than the rest of a text record): the `<image>` count, or None if a turn may break a rule."""
    n = len(turns)
    start = 1 if n and turns[0].role == "system" else 0
    if not n or list(map(_ROLE_OF, turns)) != _ORDER[1 - start:n + 1 - start]:
        return None
    values = list(map(_VALUE_OF, turns))
    try:
        if not all(map(str.strip, values)):  # empty or only whitespace (TypeError: not a string)
            return None
        return "\0".join(values).count(IMAGE)  # "\0": no placeholder spans two turns
    except TypeError:
        return None


def human_gpt_pairs(conversations: list[list[Turn]]) -> bool:
    """Whether every conversation is human/gpt pairs (not empty, alternating from human, ending with gpt), in a
    few whole-batch passes in C: what most records of a batch are."""
    lengths = list(map(len, conversations))
    if 0 in lengths or any(map((1).__and__, lengths)):
        return False
    roles = list(map(_ROLE_OF, chain.from_iterable(conversations)))
    return roles[::2].count("human") == roles[1::2].count("gpt") == len(roles) // 2


def turn_verdicts(records: Sequence[Any]) -> tuple[list[int | None], list[bool]] | None:
    """`Record._check_turns` for each record of a batch: its `<image>` count if its turns pass, else None; and
    whether it opens with a system turn. None when a value is not a string: check the batch's records one by one.
    A test holds these to the turn-by-turn verdicts."""
    try:
        return _judged(list(map(_TURNS, records)))
    except (TypeError, AttributeError):
        return None


def _judged(turns: list[list[Turn]]) -> tuple[list[int | None], list[bool]]:
    """`turn_verdicts` of these conversations. The usual ones (human/gpt pairs, no placeholder) are judged in a
    few whole-batch passes; runs of `_RUN` holding another, one record at a time by `_placeholders_if_valid`."""
    n = len(turns)
    values = list(map(_VALUE_OF, chain.from_iterable(turns)))
    if n and "<" not in "\0".join(values) and human_gpt_pairs(turns) and all(map(str.strip, values)):
        return [0] * n, [False] * n  # (TypeError from join: a value is not a string)
    if n > _RUN:
        parts = [_judged(turns[at:at + _RUN]) for at in range(0, n, _RUN)]
        return [c for part in parts for c in part[0]], [s for part in parts for s in part[1]]
    return (list(map(_placeholders_if_valid, turns)),
            [bool(conversation) and conversation[0].role == "system" for conversation in turns])


def plain_mask(records: Sequence[Record]) -> list[bool]:
    """For each record, whether it is media-free and passes `Record.validate`, judged for the whole batch in a few
    C passes. False means "check it alone" (it may still be valid: one with media, a system turn, ...)."""
    n = len(records)
    checked = turn_verdicts(records)
    try:
        media = list(map(len, map(_MEDIA, records)))  # (TypeError: not a list)
        fields = [list(map(f, records)) for f in (_ID, _SOURCE, _TASK)]
    except (TypeError, AttributeError):
        return [False] * n
    if checked is None:
        return [False] * n
    counts, system = checked
    # Columns whose every value is a non-empty string need no look per record.
    doubtful = [column for column in fields if set(map(type, column)) != {str} or "" in column]
    if counts.count(0) == n and not any(system) and not any(media) and not doubtful:
        return [True] * n
    mask = [count == 0 and not opens_with_system and not m for count, opens_with_system, m in zip(counts, system, media)]
    for column in doubtful:
        mask = [ok and type(x) is str and x != "" for ok, x in zip(mask, column)]
    return mask


def _llava_turns(convs: Any, rid: str) -> list[Turn]:
    if not isinstance(convs, list) or not convs:
        raise RecordError(f"record {rid!r}: field 'conversations' must be a non-empty list")
    turns: list[Turn] = []
    for i, t in enumerate(convs):
        try:
            value = t["value"]
            turns.append(Turn(str(t["from"]), value))
        except (TypeError, KeyError):
            raise RecordError(f"record {rid!r}: conversations[{i}] needs 'from' and 'value'") from None
        if type(value) is not str:
            raise RecordError(f"record {rid!r}: conversations[{i}].value is {type(value).__name__}, not str")
    return turns


class LlavaRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A LLaVA / Cambrian record as typed JSON: what most lines of those files are. A line this type does not take
    (another key, an unusual type, a value too wide) is read as plain JSON instead and takes the dict path of
    `Record.from_llava`, so the typed decoder only ever makes the common case faster."""

    conversations: list[Turn]
    id: str | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    image: str | list[str] | None = None
    video: str | None = None


LLAVA_DECODER = msgspec.json.Decoder(LlavaRecord)


RECORD_DECODER = msgspec.json.Decoder(Record)  # a stored line → Record


@dataclass(frozen=True)
class Reject:
    """An input that was not written: where it came from (`file:line`, `file[index]`, a URL…) and why."""

    ref: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"ref": self.ref, "reason": self.reason}


def llava_image_paths(value: Any) -> list[str]:
    """Normalise LLaVA's `image` field: a string, a list, or one of the spellings of "no image"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [] if value.strip().lower() in NO_IMAGE else [value]
    if isinstance(value, list):
        return [p for v in value for p in llava_image_paths(v)]
    raise RecordError(f"field 'image' must be a string or a list of strings, got {type(value).__name__}")


def _simple_path(p: Any) -> bool:
    """Certainly a valid media path (the common case, without building a path object); else `check_media_path`
    decides (e.g. "a..b.jpg" is fine after all)."""
    return isinstance(p, str) and bool(p) and p[0] != "/" and ".." not in p and "\\" not in p and ":" not in p


def check_media_path(path: Any, where: str) -> None:
    """A media path must be relative, POSIX, and stay inside the media root (no `..`, no absolute path)."""
    if not isinstance(path, str) or not path:
        raise RecordError(f"{where} must be a non-empty string")
    p = PurePosixPath(path)
    if p.is_absolute() or "\\" in path or (len(path) > 1 and path[1] == ":"):
        raise RecordError(f"{where} {path!r} is absolute; media paths are relative to the media root")
    if ".." in p.parts:
        raise RecordError(f"{where} {path!r} escapes the media root ('..' is not allowed)")
