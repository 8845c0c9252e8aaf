"""The one contract: `Record`, its `Media`, and `Reject`.

Builders yield these, the writer stores them, the mixer and loader serve them and the trainer consumes them.
`Record.validate()` is the single place where the invariants are checked; nothing downstream re-checks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from mmdata.errors import InputError

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


@dataclass
class Media:
    """One image or video frame. `path` is relative to the dataset's media root and never escapes it.

    `data` holds encoded bytes for media a builder produces itself (a crop, a frame, a parquet image): the writer
    stores them and drops the bytes. `data` is never serialized.
    """

    path: str
    kind: str = "image"
    width: int = 0
    height: int = 0
    video: str | None = None
    t: float | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)

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


@dataclass
class Turn:
    role: str  # "system" | "human" | "gpt"
    value: str

    def to_dict(self) -> dict[str, str]:
        return {"from": self.role, "value": self.value}


@dataclass
class Record:
    id: str
    source: str
    task: str
    conversations: list[Turn]
    media: list[Media] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- invariants
    def validate(self) -> Record:
        """Check every invariant of the contract; raise `RecordError` naming the id and field. Returns self."""
        # The common case is checked in one tight pass (this runs on every record of every build);
        # the slow path below only runs to produce the message naming what is wrong.
        turns = self.conversations
        if (isinstance(self.id, str) and self.id and isinstance(self.source, str) and self.source
                and isinstance(self.task, str) and self.task and turns):
            start = 1 if turns[0].role == "system" else 0
            expected = ("human", "gpt")
            ok = len(turns) > start
            placeholders = 0
            for i in range(start, len(turns)):
                t = turns[i]
                v = t.value
                if t.role != expected[(i - start) & 1] or not isinstance(v, str) or not v.strip():
                    ok = False
                    break
                placeholders += v.count(IMAGE)
            if ok and start:
                v = turns[0].value
                ok = isinstance(v, str) and bool(v.strip()) and IMAGE not in v
            if ok and placeholders == len(self.media) and all(_simple_media(m) for m in self.media):
                return self
        self._explain()
        return self

    def _explain(self) -> None:
        where = f"record {self.id!r}"
        if not isinstance(self.id, str) or not self.id:
            raise RecordError(f"record {self.id!r}: field 'id' must be a non-empty string")
        for name in ("source", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise RecordError(f"{where}: field '{name}' must be a non-empty string, got {value!r}")
        if not self.conversations:
            raise RecordError(f"{where}: field 'conversations' is empty")
        turns = self.conversations
        start = 1 if turns[0].role == "system" else 0
        for i, turn in enumerate(turns):
            if turn.role not in ROLES:
                raise RecordError(f"{where}: conversations[{i}].from is {turn.role!r}; expected one of {ROLES}")
            if not isinstance(turn.value, str) or not turn.value.strip():
                raise RecordError(f"{where}: conversations[{i}].value is empty")
            if turn.role == "system" and i != 0:
                raise RecordError(f"{where}: conversations[{i}] is a system turn; only the first turn may be one")
            if i >= start:
                expected = "human" if (i - start) % 2 == 0 else "gpt"
                if turn.role != expected:
                    raise RecordError(
                        f"{where}: conversations[{i}].from is {turn.role!r}, expected {expected!r} "
                        "(turns alternate human/gpt after an optional system turn)"
                    )
        if len(turns) == start:
            raise RecordError(f"{where}: field 'conversations' has no human turn")
        if turns[0].role == "system" and IMAGE in turns[0].value:
            raise RecordError(f"{where}: conversations[0] (system) contains {IMAGE}; media belong in human/gpt turns")
        n_placeholders = sum(t.value.count(IMAGE) for t in turns)
        if n_placeholders != len(self.media):
            raise RecordError(
                f"{where}: {n_placeholders} {IMAGE} placeholder(s) in conversations but {len(self.media)} media"
            )
        for i, m in enumerate(self.media):
            check_media_path(m.path, f"{where}: media[{i}].path")
            if m.kind not in MEDIA_KINDS:
                raise RecordError(f"{where}: media[{i}].kind is {m.kind!r}; expected one of {MEDIA_KINDS}")
            if m.t is not None and (not isinstance(m.t, (int, float)) or not math.isfinite(m.t) or m.t < 0):
                raise RecordError(f"{where}: media[{i}].t must be a finite number of seconds >= 0, got {m.t!r}")
        # The fast check is deliberately conservative (e.g. "a..b.jpg"): nothing is wrong after all.

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
        cls, d: dict[str, Any], *, source: str, task: str | None = None, id: str | None = None
    ) -> Record:
        """Import a LLaVA / Cambrian / MetaMorph dict (`image` str or list, or `video`; `conversations`).

        Keys other than id/image/video/conversations go to `meta["extra"]` so `to_llava` gives them back.
        Raises `RecordError` naming the field for anything unusable.
        """
        rid = id if id is not None else str(d.get("id", ""))
        convs = d.get("conversations")
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
        paths = llava_image_paths(d.get("image"))
        kind = "image"
        if not paths and d.get("video") not in (None, ""):
            paths, kind = llava_image_paths(d.get("video")), "video"
        extra = None if d.keys() <= LLAVA_KEYS else {k: v for k, v in d.items() if k not in LLAVA_KEYS}
        meta: dict[str, Any] = {"orig_id": d.get("id")}
        if extra:
            meta["extra"] = extra
        if kind == "video":
            # A `<video>` reference is not a decoded frame: video builders turn it into frames. Kept for export.
            meta["video"] = d.get("video")
            return cls(id=rid, source=source, task=task or "video_qa", conversations=turns, meta=meta)
        if isinstance(d.get("image"), list):
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


def validate_dict(d: dict[str, Any]) -> None:
    """`Record.validate` on a record already in its JSON form (`Record.to_dict()` layout), for the writer's fast
    path. The common case is checked here without building objects; anything else goes through `Record`, which
    raises the message naming the field."""
    turns = d["conversations"]
    ok = bool(turns) and not d["media"] and type(d["id"]) is str and bool(d["id"])
    if ok:
        start = 1 if turns[0]["from"] == "system" else 0
        ok = len(turns) > start
        for i, t in enumerate(turns):
            v = t["value"]
            if (t["from"] != ("system" if i < start else TURN_ORDER[(i - start) & 1]) or type(v) is not str
                    or not v or v.isspace() or IMAGE in v):
                ok = False
                break
    if not ok:
        Record.from_dict(d).validate()



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


def _simple_media(m: Media) -> bool:
    p = m.path
    return (isinstance(p, str) and bool(p) and p[0] != "/" and ".." not in p and "\\" not in p and ":" not in p
            and m.kind in MEDIA_KINDS and (m.t is None or (isinstance(m.t, (int, float)) and 0 <= m.t < math.inf)))


def check_media_path(path: Any, where: str) -> None:
    """A media path must be relative, POSIX, and stay inside the media root (no `..`, no absolute path)."""
    if not isinstance(path, str) or not path:
        raise RecordError(f"{where} must be a non-empty string")
    p = PurePosixPath(path)
    if p.is_absolute() or "\\" in path or (len(path) > 1 and path[1] == ":"):
        raise RecordError(f"{where} {path!r} is absolute; media paths are relative to the media root")
    if ".." in p.parts:
        raise RecordError(f"{where} {path!r} escapes the media root ('..' is not allowed)")
