"""Video → frames at a fixed rate (1 FPS by default), extracted once at build time: `video_qa` and `frame_pred`.

Where the raw data comes from (see DATA.md for the detection rule and an output record):
- video_qa: Video-STaR / Video-LLaVA JSON arrays (`{"id", "video": str | [str], "conversations"}` with `<video>\\n`
  in the first human turn; videos under --media-root) and ShareGPTVideo JSONL (`video` names a folder of frames
  extracted at ~2 fps, `--frames-fps`).
- frame_pred: a folder of videos, a HowTo100M `caption.json` (`{video_id: {start, end, text}}`; one clip per caption
  segment, `<id>.mp4|webm` under --media-root) or SSv2 `something-something-v2-train.json` (`<id>.webm`).

Each frame becomes a `kind: frame` media entry with `video` (the source path as written in the input) and `t`
(seconds into that video), JPEG-encoded at most --frame-size px on the longest side. The frame for time `t` is the one
on screen at `t` (the last frame starting at or before it, from the container's time stamps, so variable frame
rate is exact). Every input item (annotation, caption segment, video) gives one record or one reject.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from builders._common import ROLES
from builders.video.frames import FrameFolder, Video, VideoError, frame_media, sample_times
from builders.video.options import VideoOptions
from builders.video.pred import howto_clip, ssv2_classes, ssv2_video, video_window
from builders.video.sources import Unit, make_units
from mmdata.errors import NotFound
from mmdata.registry import Builder, register
from mmdata.schema import IMAGE, Media, Record, RecordError, Reject, Turn
from mmdata.sources import iter_span

VIDEO_TAG = "<video>"


def _root(options: VideoOptions, path: Path) -> Path:
    if path.is_dir():
        return path
    return Path(options.media_root) if options.media_root is not None else path.parent


def units(options: VideoOptions, shard_size: int, limit: int | None) -> list[Unit]:
    options.check()
    if options.media_root is not None and not Path(options.media_root).is_dir():
        raise NotFound(f"video: --media-root {options.media_root}: directory not found")
    if options.labels is not None:
        ssv2_classes(options.labels)  # a bad labels file fails here, before any worker starts
    inputs = [Path(p) for p in options.input]
    return make_units(inputs, [_root(options, p) for p in inputs], options.task, shard_size, limit)


def records(options: VideoOptions, unit: Unit) -> Iterator[Record | Reject]:
    for ref, make in _jobs(options, unit):
        try:
            yield make()
        except (VideoError, RecordError) as e:
            yield Reject(ref, str(e))


def _jobs(options: VideoOptions, unit: Unit) -> Iterator[tuple[str, Callable[[], Record]]]:
    """(ref, thunk) per input item; the thunk builds the record or raises the reason it cannot."""
    root, label = Path(unit.root), unit.label
    classes = ssv2_classes(options.labels) if unit.kind == "ssv2" else {}
    if unit.span is not None:
        for it in iter_span(unit.span):
            if it.error is not None:
                yield it.ref, partial(_fail, it.error)
            elif unit.kind == "qa":
                yield it.ref, partial(_qa, options, root, it.value, f"{label}:{it.number}", it.ref)
            else:
                yield it.ref, partial(ssv2_video, options, root, it.value, label, it.ref, classes)
    elif unit.kind == "folder":
        for rel in unit.items:
            ref = f"{root.name}/{rel}"
            rid = f"{rel.rsplit('.', 1)[0]}@{label}"
            yield ref, partial(video_window, options, root / rel, rel, rid, 0.0, None, {"ref": ref})
    else:
        for vid, k, start, end, text in unit.items:
            ref = f"{label}[{vid}#{k}]"
            yield ref, partial(howto_clip, options, root, label, vid, k, start, end, text, ref)


def _fail(reason: str) -> Record:
    raise RecordError(reason)


# ------------------------------------------------------------------------- video_qa
def _qa(options: VideoOptions, root: Path, raw: Any, key: str, ref: str) -> Record:
    if not isinstance(raw, dict):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    rid = f"{raw.get('id', '')}@{key}"
    videos = raw.get("video")
    videos = [videos] if isinstance(videos, str) else videos
    if not videos or not all(isinstance(v, str) and v for v in videos):
        raise RecordError(f"record {rid!r}: field 'video' must be a path or a list of paths, got {raw.get('video')!r}")
    turns = _turns(raw.get("conversations"), rid)
    tags = sum(t.value.count(VIDEO_TAG) for t in turns)
    if tags > 1:
        raise RecordError(f"record {rid!r}: {VIDEO_TAG} appears {tags} times; expected once, in the first human turn "
                          "(a list of videos shares one tag)")
    if any(IMAGE in t.value for t in turns):
        raise RecordError(f"record {rid!r}: conversations contain {IMAGE}; a video record takes its frames from "
                          "'video' only")
    per_video = max(1, options.max_frames // len(videos))
    media: list[Media] = []
    durations = []
    for vi, video in enumerate(videos):
        src = FrameFolder(root / video, options.frames_fps) if (root / video).is_dir() else Video(root / video)
        times = sample_times(0.0, src.duration, options.fps, per_video)
        if len(times) < options.min_frames:
            raise VideoError(f"record {rid!r}: video {video!r} is {src.duration:g} s: {len(times)} frame(s) at "
                             f"--fps {options.fps:g}, fewer than --min-frames {options.min_frames}")
        prefix = f"{vi}-" if len(videos) > 1 else ""
        media += frame_media(rid, video, src.frames(times, options.frame_size, options.jpeg_quality), prefix)
        durations.append(round(src.duration, 3))
    human = next(t for t in turns if t.role == "human")
    text = re.sub(re.escape(VIDEO_TAG) + r"[ \t]*\n?", "", human.value, count=1).lstrip("\n")
    human.value = IMAGE * len(media) + "\n" + text
    meta: dict[str, Any] = {"orig_id": raw.get("id"), "ref": ref, "video": raw["video"], "duration": durations}
    extra = {k: v for k, v in raw.items() if k not in ("id", "video", "conversations")}
    if extra:
        meta["extra"] = extra
    if tags == 0:
        meta["repaired"] = {"video_tag_added": True}
    return Record(rid, "video", "video_qa", turns, media, meta)


def _turns(convs: Any, rid: str) -> list[Turn]:
    if not isinstance(convs, list) or not convs:
        raise RecordError(f"record {rid!r}: field 'conversations' must be a non-empty list")
    turns = []
    for i, t in enumerate(convs):
        role = ROLES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
        if role is None or not isinstance(t.get("value"), str):
            raise RecordError(f"record {rid!r}: conversations[{i}] needs 'from' (human/gpt) and a string 'value'")
        turns.append(Turn(role, t["value"]))
    if not any(t.role == "human" for t in turns):
        raise RecordError(f"record {rid!r}: no human turn to put the frames in")
    return turns


register(Builder(
    name="video",
    help="Videos → frames at --fps (decord), as video_qa (Video-STaR, ShareGPTVideo) or frame_pred "
         "(folder of videos, HowTo100M, SSv2) records.",
    options=VideoOptions,
    units=units,
    records=records,
    # Frames are produced here (JPEG bytes) and stored under <out>/media; nothing is referenced in place, so no
    # source media root: a same-named file there would otherwise be linked instead of the frame.
    media_root=lambda o: None,
    generates_media=True,
))
