"""Inputs of the video builder: which format an input is (by content), and how it splits into units.

Part of the video builder (registers no builder). Detection rule, in order:
- a directory → a folder of videos (`.mp4 .webm .mkv .mov .avi`, searched recursively, sorted by path): frame_pred;
- a file starting with `{` whose first value is an object with `start`/`end`/`text` → a HowTo100M `caption.json`:
  frame_pred;
- a JSON array or JSONL whose first item has `conversations` → video QA (Video-STaR / Video-LLaVA / ShareGPTVideo;
  per item, a `video` naming a directory is a frames folder, anything else a video file): video_qa;
- a JSON array whose first item has `template` or `label` → Something-Something V2: frame_pred.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from builders._common import input_labels
from mmdata.build import Span, iter_file, plan
from mmdata.core.errors import InputError, NotFound

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi")
TASK_OF = {"qa": "video_qa", "folder": "frame_pred", "howto100m": "frame_pred", "ssv2": "frame_pred"}
KIND_NAMES = {"qa": "video QA annotation (Video-STaR / ShareGPTVideo)", "folder": "folder of videos",
              "howto100m": "HowTo100M caption.json", "ssv2": "Something-Something V2 annotation"}
_HOWTO_HEAD = re.compile(rb'^\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\{\s*"(?:start|end|text)"')


@dataclass(frozen=True)
class Unit:
    kind: str  # "qa" | "folder" | "howto100m" | "ssv2"
    label: str  # the input's name, unique among the inputs; part of every record id
    root: str  # where the unit's video paths are relative to
    span: Span | None = None  # annotation files streamed by mmdata.build.sources
    items: tuple[Any, ...] = ()  # folder: relative paths; howto100m: (video_id, clip, start, end, text)


def detect(path: Path) -> str:
    """The input's kind (see the module docstring) or a ValueError saying what was found."""
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise NotFound(f"video: --input {path} not found")
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip(b"\xef\xbb\xbf \t\r\n")
    if _HOWTO_HEAD.match(head):
        return "howto100m"
    first = next(iter_file(path, limit=1), None)
    value = first.value if first is not None else None
    if isinstance(value, dict) and "conversations" in value:
        return "qa"
    if head.startswith(b"[") and isinstance(value, dict) and ("template" in value or "label" in value):
        return "ssv2"
    raise InputError(f"video: --input {path}: not a recognised video source (expected a folder of videos, a "
                     "Video-STaR/ShareGPTVideo annotation with `conversations`, a HowTo100M caption.json or an "
                     f"SSv2 train JSON); first item: {str(value)[:120]!r}")


def find_videos(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in VIDEO_EXTS and p.is_file())


def howto100m_clips(path: Path) -> list[tuple[str, int, float, float, str]]:
    """Every caption segment in file order. The dict is loaded whole (mmdata.build.sources splits arrays and JSONL only):
    the full HowTo100M file needs several GB here; split it by video id to build it in pieces."""
    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise InputError(f"video: {path}: a HowTo100M caption.json is one JSON object, got {type(data).__name__}")
    clips = []
    for vid, entry in data.items():
        if not isinstance(entry, dict):
            raise InputError(f"video: {path}: entry {vid!r} is {type(entry).__name__}, expected "
                             '{"start": [...], "end": [...], "text": [...]}')
        starts, ends, texts = entry.get("start") or [], entry.get("end") or [], entry.get("text") or []
        for k in range(max(len(starts), len(ends), len(texts))):
            clips.append((str(vid), k, _at(starts, k), _at(ends, k), str(_at(texts, k) or "")))
    return clips


def _at(values: list[Any], k: int) -> Any:
    # A clip with a missing start or end becomes a reject in records(), keeping read == written + rejected.
    return values[k] if k < len(values) else None


def make_units(inputs: list[Path], roots: list[Path], task: str, shard_size: int,
               limit: int | None) -> list[Unit]:
    out: list[Unit] = []
    left = limit
    for label, path, root in zip(input_labels(inputs), inputs, roots, strict=True):
        if left == 0:
            break
        kind = detect(path)
        if TASK_OF[kind] != task:
            raise InputError(f"video: --input {path} is a {KIND_NAMES[kind]}, which builds --task {TASK_OF[kind]},"
                             f" not --task {task}; build it separately")
        if kind in ("qa", "ssv2"):
            spans = plan(path, shard_size, left)
            out.extend(Unit(kind, label, str(root), span=s) for s in spans)
            n = sum(s.count for s in spans)
        else:
            items: list[Any] = find_videos(path) if kind == "folder" else howto100m_clips(path)  # type: ignore
            items = items[:left] if left is not None else items
            out.extend(Unit(kind, label, str(root), items=tuple(items[i:i + shard_size]))
                       for i in range(0, len(items), shard_size))
            n = len(items)
        if left is not None:
            left -= n
    return out
