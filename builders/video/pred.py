"""frame_pred for the video builder: context frames as inputs, K future frames S seconds apart as targets.

Part of the video builder (registers no builder). K, S, where the context ends and the phrasing are drawn per
record from `Draws(seed, record id, "random")`: stable whatever the shard, worker or order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from builders._common import Draws
from builders.video.frames import Video, VideoError, frame_media
from builders.video.options import VideoOptions
from builders.video.sources import VIDEO_EXTS
from mmdata.errors import InputError
from mmdata.schema import IMAGE, Record, RecordError, Turn

# MetaMorph's phrasing first; `{k}` frames, `{s}` their spacing ("5 seconds").
ASK_MANY = ("Can you predict what happens in the next {k} frames, each {s} apart?",
            "What will the next {k} frames look like, each {s} apart?",
            "Predict the next {k} frames of this video, one every {s}.",
            "Show what happens next: generate the next {k} frames, {s} apart.")
ASK_ONE = ("Can you predict what happens {s} later?",
           "What will the frame {s} from now look like?",
           "Predict the frame of this video {s} after the last one.",
           "Show what happens next: generate the frame {s} later.")


def howto_clip(options: VideoOptions, root: Path, label: str, vid: str, k: int, start: Any, end: Any, text: str,
               ref: str) -> Record:
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


def ssv2_video(options: VideoOptions, root: Path, raw: Any, label: str, ref: str, classes: dict[str, int]) -> Record:
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
        if (root / f"{stem}{ext}").is_file():
            return f"{stem}{ext}"
    raise VideoError(f"record {rid!r}: video not found: {root}/{stem}{{{','.join(VIDEO_EXTS)}}}")


def video_window(options: VideoOptions, path: Path, video: str, rid: str, start: float, end: float | None,
                 meta: dict[str, Any]) -> Record:
    """Context frames every 1/fps s up to a seeded point, then K frames S s apart to generate (K, S seeded)."""
    src = Video(path)
    if start >= src.duration:
        raise VideoError(f"record {rid!r}: clip starts at {start:g} s, after the end of {path} ({src.duration:g} s)")
    end = src.duration if end is None else min(end, src.duration)
    step = 1 / options.fps

    def positions(k: int, s: int) -> int:  # context ends at start + c*step, c >= context_min - 1
        last = math.floor((end - start - k * s - 1e-6) / step)
        return max(0, last - (options.context_min - 1) + 1)

    choices = [(k, s) for k in range(options.future_min, options.future_max + 1)
               for s in range(options.gap_min, options.gap_max + 1) if positions(k, s) > 0]
    if not choices:
        need = (options.context_min - 1) * step + options.future_min * options.gap_min
        raise VideoError(f"record {rid!r}: clip {start:g}-{end:g} s of {path} is too short for frame_pred: "
                         f"needs more than {need:g} s ({options.context_min} context frame(s) + "
                         f"{options.future_min} future frame(s) {options.gap_min} s apart)")
    rng = Draws(options.seed, rid, "random")
    k, s = rng.choice(choices)
    c_end = options.context_min - 1 + rng.index(positions(k, s))
    n_ctx = min(c_end + 1, options.max_frames - k)
    context = [round(start + i * step, 3) for i in range(c_end + 1 - n_ctx, c_end + 1)]
    future = [round(context[-1] + j * s, 3) for j in range(1, k + 1)]
    media = frame_media(rid, video, src.frames(context + future, options.frame_size, options.jpeg_quality))
    spacing = f"{s} second{'s' if s != 1 else ''}"
    ask = rng.choice(ASK_MANY if k > 1 else ASK_ONE).format(k=k, s=spacing)
    turns = [Turn("human", IMAGE * len(context) + "\n" + ask), Turn("gpt", IMAGE * k)]
    meta |= {"future": k, "gap": s, "duration": round(src.duration, 3)}
    return Record(rid, "video", "frame_pred", turns, media, meta)
