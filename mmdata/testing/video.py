"""Generated videos whose frames say which frame they are, the broken kinds real video sets contain, and the video
sources (Video-STaR, ShareGPTVideo, HowTo100M, SSv2, a folder of videos) in their released layouts.

Each frame carries its index as a bar code: `BITS` blocks in a row across the frame, white for 1 and black for 0,
plus a grey band whose level follows the index. Large flat blocks survive H.264/VP9, JPEG and resizing, so
`read_counter` recovers the index from any extracted frame and a test can check it is the frame on screen at `t`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

# PyAV first: decord's bundled libvpx otherwise shadows PyAV's, and PyAV's VP9 encoder fails to open (EINVAL).
import av  # isort: skip
import numpy as np
from PIL import Image

BITS = 10  # up to 1023 frames: a 60 s clip at 15 fps, or 34 s at 30 fps
_CODECS = {".mp4": ("mp4", "libx264", "yuv420p"), ".webm": ("webm", "libvpx-vp9", "yuv420p"),
           ".mkv": ("matroska", "libx264", "yuv420p")}


def counter_frame(index: int, width: int = 96, height: int = 64) -> np.ndarray:
    """An RGB frame showing `index` as a bar code in the top half and a grey level in the bottom half."""
    assert 0 <= index < 2**BITS, index
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, width, BITS + 1).round().astype(int)
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            frame[: height // 2, edges[bit]:edges[bit + 1]] = 255
    frame[height // 2:] = (index * 37) % 256  # differs between neighbours, so a wrong frame rarely hides
    return frame


def read_counter(image: Image.Image | np.ndarray) -> int:
    """The index `counter_frame` drew, read back from a (compressed, resized) frame."""
    a = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(axis=2)
    h, w = a.shape
    value = 0
    for bit in range(BITS):
        x = int((bit + 0.5) * w / BITS)
        x0, x1 = max(0, x - max(1, w // (4 * BITS))), x + max(1, w // (4 * BITS))
        value = value << 1 | int(a[h // 8: 3 * h // 8, x0:x1].mean() > 127)
    return value


def write_video(path: Path, pts: Sequence[float] | None = None, *, n: int = 0, fps: float = 10.0,
                width: int = 96, height: int = 64, gop: int = 12) -> list[float]:
    """Write a counter video (mp4 → H.264, webm → VP9, by suffix) and return each frame's start time in seconds.

    Constant frame rate: give `n` frames at `fps`. Variable frame rate: give `pts` (increasing seconds, ms precision).
    A short `gop` gives the decoder key frames to seek to, as real footage has.
    """
    if pts is None:
        pts = [i / fps for i in range(n)]
    ms = [round(t * 1000) for t in pts]
    assert all(b > a for a, b in itertools.pairwise(ms)), "frame times must increase by at least 1 ms"
    fmt, codec, pix = _CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(round(fps * 1000), 1000) if fps else 10)
        stream.width, stream.height, stream.pix_fmt = width, height, pix
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "bf": "0"}
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for i, t in enumerate(ms):
            frame = av.VideoFrame.from_ndarray(counter_frame(i, width, height), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return [t / 1000 for t in ms]


def vfr_times(seconds: float, seed: int = 0) -> list[float]:
    """Irregular frame times over `seconds`: gaps of 20–400 ms (a phone recording, a screen capture)."""
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    while t < seconds:
        times.append(round(t, 3))
        t += float(rng.choice([0.02, 0.04, 0.1, 0.25, 0.4]))
    return times


def expected_index(pts: Sequence[float], t: float) -> int:
    """The frame on screen at `t`: the last one that started at or before it."""
    return int(np.searchsorted(np.asarray(pts), t + 1e-6, side="right")) - 1


# ------------------------------------------------------------------------- broken inputs
def write_corrupt_video(path: Path, seed: int = 0) -> Path:
    """Random bytes under a video name: no container parses it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def write_truncated_video(path: Path, seconds: float = 2.0) -> Path:
    """A valid video cut in half: an mp4 loses its index (moov is written last), a webm its tail."""
    write_video(path, n=int(seconds * 10), fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_frame_video(path: Path) -> Path:
    """A container with a video stream and no frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, codec, pix = _CODECS[path.suffix.lower()]
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix
        out.start_encoding()  # the header is otherwise written only with the first packet: no file at all
    return path


def write_frames_folder(folder: Path, n: int, width: int = 96, height: int = 64, pattern: str = "c01_{:04d}.jpeg",
                        start: int = 1) -> Path:
    """A ShareGPTVideo-style folder of pre-extracted JPEG frames (numbered from `start`), frame i showing counter i."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(counter_frame(i, width, height)).save(buf, format="JPEG", quality=95)
        (folder / pattern.format(i + start)).write_bytes(buf.getvalue())
    return folder


# ------------------------------------------------------------------------- sources in their released layouts
def _qa(question: str, answer: str, tag: str = "<video>\n") -> list[dict[str, str]]:
    return [{"from": "human", "value": f"{tag}{question}"}, {"from": "gpt", "value": answer}]


def write_videostar(path: Path, items: Sequence[tuple[str, str | list[str]]], tag_per_video: bool = False) -> Path:
    """A Video-STaR / Video-LLaVA JSON array: `(id, video)` pairs, each asked a multiple-choice question.
    `tag_per_video`: one `<video>` per video (`<video><video>\n…`, as Video-LLaVA writes multi-video items)."""
    rows = [{"id": rid, "video": video,
             "conversations": _qa("What is the person doing?\nA. cooking\nB. running\nC. reading\n"
                                  "Answer with the option's letter from the given choices directly.", "B",
                                  "<video>" * (len(video) if tag_per_video and isinstance(video, list) else 1)
                                  + "\n")}
            for rid, video in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_sharegptvideo(path: Path, items: Sequence[tuple[str, str]]) -> Path:
    """ShareGPTVideo JSONL: `video` names a folder of extracted frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for rid, folder in items:
            f.write(json.dumps({"id": rid, "video": folder,
                                "conversations": _qa("Describe the video in detail.", "A counter counts up.")}) + "\n")
    return path


def write_howto100m(path: Path, captions: dict[str, list[tuple[float, float, str]]]) -> Path:
    """HowTo100M `caption.json`: `{video_id: {"start": [...], "end": [...], "text": [...]}}`."""
    data = {vid: {"start": [s for s, _, _ in segs], "end": [e for _, e, _ in segs], "text": [t for _, _, t in segs]}
            for vid, segs in captions.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_ssv2(path: Path, ids: Sequence[str], labels: Path | None = None) -> Path:
    """Something-Something V2 `something-something-v2-train.json` (+ optionally the labels file)."""
    rows = [{"id": i, "label": "putting a cup onto a table", "template": "Putting [something] onto [something]",
             "placeholders": ["a cup", "a table"]} for i in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    if labels is not None:
        labels.write_text(json.dumps({"Putting something onto something": "0", "Pushing something": "1"}))
    return path


@contextlib.contextmanager
def demo_source(dir: Path, task: str = "video_qa") -> Iterator[list[str]]:
    """Write a small video dataset under `dir` and yield the `mmdata build video` arguments for it (all but --out).

    video_qa: a Video-STaR JSON (an mp4, a webm, a two-video item, a missing video) and a ShareGPTVideo JSONL (a
    frames folder and an empty one). frame_pred: a HowTo100M caption.json over a video (one clip too short) plus a
    folder of videos (one of them corrupt), two variants per video.
    """
    dir = Path(dir)
    videos = dir / "videos"
    write_video(videos / "cooking.mp4", n=60, fps=10)  # 6 s
    write_video(videos / "running.webm", vfr_times(5.0, seed=1))
    write_video(videos / "diving.mp4", n=120, fps=24, width=128, height=72)  # 5 s
    if task == "video_qa":
        write_frames_folder(dir / "frames" / "v_0001", 12)  # 6 s at 2 fps
        (dir / "frames" / "v_empty").mkdir(parents=True, exist_ok=True)
        star = write_videostar(dir / "kinetics_tune.json", [
            ("k1", "videos/cooking.mp4"), ("k2", "videos/running.webm"),
            ("k3", ["videos/cooking.mp4", "videos/diving.mp4"]), ("k4", "videos/missing.mp4")])
        share = write_sharegptvideo(dir / "sharegptvideo.jsonl", [("s1", "frames/v_0001"), ("s2", "frames/v_empty")])
        yield ["--input", str(star), "--input", str(share), "--media-root", str(dir), "--task", "video_qa"]
    elif task == "frame_pred":
        write_video(videos / "long.mp4", n=150, fps=10)  # 15 s, cut at its captions
        write_corrupt_video(videos / "broken.mp4")
        captions = write_howto100m(dir / "caption.json", {
            "long": [(0.0, 6.0, "crack the eggs"), (6.0, 15.0, "whisk them"), (14.95, 15.0, "too short")]})
        yield ["--input", str(captions), "--input", str(videos), "--media-root", str(videos), "--task", "frame_pred",
               "--variants", "2"]
    else:
        raise ValueError(f"demo_source: task must be 'video_qa' or 'frame_pred', got {task!r}")
