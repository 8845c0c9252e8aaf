"""frame_pred for the video builder, on MetaMorph's semantics: one interval per sample, frames at that interval from
the start (at most --max-frames), turned into one of the task families of `builders/video/families.py`.

Part of the video builder (registers no builder). The interval is drawn uniformly in
[max(2 / video fps, 0.1), min(10, max(length / 2, that minimum))] seconds and rounded to 0.1, as MetaMorph does.
`--variants K` gives K records per video, each with its own interval and family (the families are dealt without
repeats before any comes twice). Every draw comes from `Draws(seed, f"{record id}:{variant}", "random")`: stable
whatever the shard, worker or order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
from msgspec.structs import replace

from builders._common import Draws
from builders.video.families import FAMILIES, make_task
from builders.video.frames import Video, VideoError, frame_media
from builders.video.options import VideoOptions
from builders.video.sources import VIDEO_EXTS
from mmdata.build import inside
from mmdata.core.errors import InputError
from mmdata.core.schema import Record, RecordError, Turn

MIN_INTERVAL, MAX_INTERVAL = 0.1, 10.0  # seconds (MetaMorph's bounds)


def howto_clip(options: VideoOptions, root: Path, label: str, vid: str, k: int, start: Any, end: Any, text: str,
               ref: str) -> list[Record]:
    rid = f"{vid}#{k}@{label}"
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)) or not 0 <= start < end:
        raise RecordError(f"record {rid!r}: caption segment {k} has start {start!r}, end {end!r}; "
                          "expected numbers with 0 <= start < end")
    rel = _find(root, vid, rid)
    return video_window(options, root / rel, rel, rid, float(start), float(end),
                    {"ref": ref, "video_id": vid, "clip": k, "caption": text, "start": start, "end": end})


def ssv2_classes(path: Path | None) -> dict[str, int]:
    """SSv2 `something-something-v2-labels.json`: `{"Putting something onto something": "93", ...}`."""
    if path is None:
        return {}
    try:
        return {k: int(v) for k, v in orjson.loads(Path(path).read_bytes()).items()}
    except (OSError, orjson.JSONDecodeError, AttributeError, ValueError) as e:
        raise InputError(f"video: --labels {path}: expected SSv2's {{template: class index}} JSON ({e})") from None


def ssv2_video(options: VideoOptions, root: Path, raw: Any, label: str, ref: str,
               classes: dict[str, int]) -> list[Record]:
    if not isinstance(raw, dict) or "id" not in raw:
        raise RecordError(f"expected an object with 'id', got {str(raw)[:80]!r}")
    rid = f"{raw['id']}@{label}"
    rel = _find(root, str(raw["id"]), rid)
    meta = {"ref": ref, **{k: raw[k] for k in ("label", "template", "placeholders") if k in raw}}
    template = str(raw.get("template", "")).replace("[", "").replace("]", "")
    if template in classes:
        meta["class"] = classes[template]
    return video_window(options, root / rel, rel, rid, 0.0, None, meta)


def _find(root: Path, stem: str, rid: str) -> str:
    for ext in VIDEO_EXTS:
        # An id holding `..` or `/abs` is refused by name.
        if inside(root, f"{stem}{ext}", f"video {stem + ext!r}").is_file():
            return f"{stem}{ext}"
    raise VideoError(f"record {rid!r}: video not found: {root}/{stem}{{{','.join(VIDEO_EXTS)}}}")


def video_window(options: VideoOptions, path: Path, video: str, rid: str, start: float, end: float | None,
                 meta: dict[str, Any]) -> list[Record]:
    """`--variants` frame-prediction records from the clip [start, end) of one video (the whole video: end None)."""
    src = Video(path)
    if start >= src.duration:
        raise VideoError(f"record {rid!r}: clip starts at {start:g} s, after the end of {path} ({src.duration:g} s)")
    end = src.duration if end is None else min(end, src.duration)
    length = end - start
    fps = len(src.starts) / src.duration if src.duration > 0 else 0.0
    low = max(2 / fps, MIN_INTERVAL) if fps > 0 else MIN_INTERVAL
    high = min(MAX_INTERVAL, max(length / 2, low))
    deal = Draws(options.seed, rid, "random").rng.sample(FAMILIES, len(FAMILIES))
    plans = []
    for k in range(options.variants):
        rng = Draws(options.seed, f"{rid}:{k}", "random").rng
        interval = max(round(rng.uniform(low, high), 1), MIN_INTERVAL)
        n = min(options.max_frames, math.floor(length / interval - 1e-9) + 1)
        if n < 2:
            raise VideoError(f"record {rid!r}: clip {start:g}-{end:g} s of {path} is too short for frame_pred: "
                             f"{length:g} s gives {n} frame at a {interval:g} s interval (2 needed)")
        task = make_task(n, interval, rng, deal[k % len(deal)])
        plans.append((k, interval, task, [round(start + i * interval, 3) for i in task.seen + task.made]))
    # Every variant's frames in one decoding pass; a frame used twice (reorder) is decoded once.
    unique = sorted({t for *_, times in plans for t in times})
    decoded = dict(zip(unique, src.frames(unique, options.frame_size, options.jpeg_quality), strict=True))
    out = []
    for k, interval, task, times in plans:
        vid = rid if options.variants == 1 else f"{rid}:v{k}"
        frames = dict(zip(sorted(set(times)), frame_media(vid, video, [decoded[t] for t in sorted(set(times))]),
                          strict=True))
        out.append(Record(vid, "video", "frame_pred", [Turn("human", task.human), Turn("gpt", task.gpt)],
                          [replace(frames[t]) for t in times],
                          {**meta, "family": task.family, "interval": interval, "variant": k,
                           "duration": round(src.duration, 3)}))
    return out
