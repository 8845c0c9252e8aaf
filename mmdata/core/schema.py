"""The one contract: `Record`, its `Media`, and `Reject`.

Builders yield these, the writer stores them, the mixer and loader serve them and the trainer consumes them.
`Record.validate()` checks a record against the contract's rules (`mmdata.core.rules`, where each rule is stated
once); nothing downstream re-checks them. Stored records decode straight into `Record` (`RECORD_DECODER`),
LLaVA/Cambrian lines into `LlavaRecord`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from mmdata.core import rules
from mmdata.core.rules import RULES, RecordError

# The contract's names for what builders write; the rules themselves are `rules.RULES`.
IMAGE = RULES.placeholder


ROLES = RULES.roles


MEDIA_KINDS = RULES.media_kinds


TURN_ORDER = RULES.order  # after an optional system turn, turns alternate in this order


# Spellings of "no image" that occur in released LLaVA/Cambrian files (pandas round trips included).
NO_IMAGE = frozenset(("", "none", "null", "nan"))


LLAVA_KEYS = frozenset(("id", "image", "video", "conversations"))


Role = Literal["system", "human", "gpt"]


# The types are msgspec Structs: stored lines decode straight into them (types checked while parsing, in C) and
# building one costs a fraction of a dataclass. Structs check no types when built in Python: `Record.validate`
# applies every rule, for records decoded and records built alike.
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
        """Check every rule of the contract (`rules.RULES`); raise `RecordError` naming the id and field. Returns
        self. It runs on every record of every build, so the common case costs one pass over the turns."""
        rules.RULES.check(self)
        return self

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
