"""Video → frames at a fixed rate (1 FPS by default), extracted once at build time: `video_qa` and `frame_pred`.

Where the raw data comes from (see DATA.md for the detection rule and an output record):
- video_qa: Video-STaR / Video-LLaVA JSON arrays (`{"id", "video": str | [str], "conversations"}` with `<video>\\n`
  in the first human turn; videos under --media-root) and ShareGPTVideo JSONL (`video` names a folder of frames
  extracted at ~2 fps, `--frames-fps`).
- frame_pred: a folder of videos, a HowTo100M `caption.json` (`{video_id: {start, end, text}}`; one clip per caption
  segment, `<id>.mp4|webm` under --media-root) or SSv2 `something-something-v2-train.json` (`<id>.webm`).

video_qa samples exactly --fps from t = 0 and stops at --max-frames (MetaMorph: 1 FPS, 45 frames, so a 60 s clip gives
0..44 s); `--long-video spread` spreads the frames over a longer video instead. Each `<video>` becomes the run of its
video's frames where it stands (Video-LLaVA writes one per video: `<video><video>\n…`); one tag for a list of videos
takes every run; no tag puts them before the first human turn. An `image` key beside `video` adds those images, each at
its `<image>`. frame_pred follows `builders/video/pred.py` (`--variants K` records per video).

Each frame becomes a `kind: frame` media entry with `video` (the source path as written in the input) and `t`
(seconds into that video), JPEG-encoded at most --frame-size px on the longest side. The frame for time `t` is the one
on screen at `t` (the last frame starting at or before it, from the container's time stamps, so variable frame
rate is exact). Every input item (annotation, caption segment, video) gives one record (frame_pred: --variants) or
one reject.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from builders._common import ROLES
from builders.video.frames import FrameFolder, Video, VideoError, check_rate, frame_media, record_folder, sample_times
from builders.video.options import VideoOptions
from builders.video.pred import howto_clip, ssv2_classes, ssv2_video, video_window
from builders.video.sources import Unit, make_units
from mmdata.build import Builder, inside, iter_span
from mmdata.core.errors import NotFound
from mmdata.core.media import MediaError
from mmdata.core.schema import IMAGE, Media, Record, RecordError, Reject, Turn

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
            made = make()
        except (VideoError, RecordError, MediaError) as e:
            yield Reject(ref, str(e))
            continue
        yield from made if isinstance(made, list) else [made]


def _jobs(options: VideoOptions, unit: Unit) -> Iterator[tuple[str, Callable[[], Record | list[Record]]]]:
    """(ref, thunk) per input item; the thunk builds the record(s) or raises the reason it cannot."""
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
            # Listed from the disk, not named by a source file: a symlink farm of videos is a folder input too.
            yield ref, partial(video_window, options, root / rel, rel, rid, 0.0, None, {"ref": ref})
    else:
        for vid, k, start, end, text in unit.items:
            ref = f"{label}[{vid}#{k}]"
            yield ref, partial(howto_clip, options, root, label, vid, k, start, end, text, ref)


def _fail(reason: str) -> Record:
    raise RecordError(reason)


# ------------------------------------------------------------------------- video_qa
_PLACEHOLDER = re.compile(re.escape(VIDEO_TAG) + r"([ \t]*\n)?|" + re.escape(IMAGE))


def _qa(options: VideoOptions, root: Path, raw: Any, key: str, ref: str) -> Record:
    if not isinstance(raw, dict):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
    rid = f"{raw.get('id', '')}@{key}"
    videos = _paths(raw, "video", rid)
    images = _paths(raw, "image", rid) if raw.get("image") not in (None, "", []) else []
    if not videos:
        raise RecordError(f"record {rid!r}: field 'video' must be a path or a list of paths, got {raw.get('video')!r}")
    turns = _turns(raw.get("conversations"), rid)
    tags = sum(t.value.count(VIDEO_TAG) for t in turns)
    if any(t.role != "human" and (VIDEO_TAG in t.value or IMAGE in t.value) for t in turns):
        raise RecordError(f"record {rid!r}: {VIDEO_TAG} or {IMAGE} outside a human turn; the frames and images of "
                          "a video record are inputs")
    if tags not in (0, 1, len(videos)):
        raise RecordError(f"record {rid!r}: {VIDEO_TAG} appears {tags} times for {len(videos)} video(s); expected "
                          "one per video (Video-LLaVA), one for all of them, or none")
    n_images = sum(t.value.count(IMAGE) for t in turns)
    if n_images != len(images):
        raise RecordError(f"record {rid!r}: {n_images} {IMAGE} placeholder(s) for {len(images)} path(s) in 'image'")
    per_video = max(1, options.max_frames // len(videos))
    runs, durations = [], []
    real_root = Path(os.path.realpath(root))
    notes: dict[str, Any] = {}
    for vi, video in enumerate(videos):
        path = inside(root, video, f"video {video!r}")  # by name, before anything is opened
        src: FrameFolder | Video = FrameFolder(path, options.frames_fps, real_root) if path.is_dir() else Video(path)
        check_rate(options.fps, src.rate, rid, video)
        times = sample_times(0.0, src.duration, options.fps, per_video, options.long_video)
        if len(times) < options.min_frames:
            raise VideoError(f"record {rid!r}: video {video!r} is {src.duration:g} s: {len(times)} frame(s) at "
                             f"--fps {options.fps:g}, fewer than --min-frames {options.min_frames}")
        prefix = f"{vi}-" if len(videos) > 1 else ""
        runs.append(frame_media(rid, video, src.frames(times, options.frame_size, options.jpeg_quality), prefix))
        notes.update({f"{video}/{k}": v for k, v in getattr(src, "notes", {}).items()})
        durations.append(round(src.duration, 3))
    meta: dict[str, Any] = {"orig_id": raw.get("id"), "ref": ref, "video": raw["video"], "duration": durations}
    if tags == 0:
        human = next(t for t in turns if t.role == "human")
        human.value = VIDEO_TAG + "\n" + human.value.lstrip("\n")
        meta["repaired"] = {"video_tag_added": True}
    if tags <= 1 and len(videos) > 1:  # one tag stands for the whole list
        runs = [[m for run in runs for m in run]]
    media = _substitute(turns, runs, [_image(root, rid, p, i) for i, p in enumerate(images)])
    if images:
        meta["image"] = raw["image"]
    if notes:
        meta["frames_converted"] = notes
    extra = {k: v for k, v in raw.items() if k not in ("id", "video", "image", "conversations")}
    if extra:
        meta["extra"] = extra
    return Record(rid, "video", "video_qa", turns, media, meta)


def _substitute(turns: list[Turn], runs: list[list[Media]], images: list[Media]) -> list[Media]:
    """Each `<video>` (and the newline after it) → its run of `<image>`s; media in placeholder order."""
    media: list[Media] = []
    runs_left, images_left = iter(runs), iter(images)

    def put(m: re.Match[str]) -> str:
        if m.group(0) == IMAGE:
            media.append(next(images_left))
            return IMAGE
        run = next(runs_left)
        media.extend(run)
        return IMAGE * len(run) + ("\n" if m.group(1) else "")

    for t in turns:
        t.value = _PLACEHOLDER.sub(put, t.value)
    return media


def _paths(raw: dict[str, Any], key: str, rid: str) -> list[str]:
    value = raw.get(key)
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise RecordError(f"record {rid!r}: field {key!r} must be a path or a list of paths, got {value!r}")
    return paths


def _image(root: Path, rid: str, path: str, i: int) -> Media:
    """An `image` beside the video: copied with the frames (the video builder references nothing in place)."""
    src = inside(root, path, f"image {path!r}")  # by name, before anything is opened
    if not src.is_file():
        raise VideoError(f"record {rid!r}: image not found: {root / path}")
    try:
        data = src.read_bytes()
    except OSError as e:
        raise VideoError(f"record {rid!r}: image {root / path} cannot be read ({e.strerror or e})") from None
    return Media(path=f"{record_folder(rid)}/image-{i}{Path(path).suffix.lower() or '.jpg'}", data=data)


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


BUILDER = Builder(
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
    reads_urls=False,
)
