"""Frames for the video builder: which times to sample, which frame is on screen at each, and JPEG bytes for them.

Part of the video builder (registers no builder). decord is imported lazily: listing the builders imports this
package, and that should not load a video decoder.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmdata.build import inside
from mmdata.core.errors import InputError
from mmdata.core.media import DEEP_MODES, MediaError, decode, orientation, to_rgb
from mmdata.core.schema import Media

FRAME_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_EPS = 1e-6  # seconds; frame times are floats read back from millisecond or rational time bases
_BATCH_BYTES = 512 << 20  # decoded RGB frames held at once: 45 frames of 1080p fit, 4K is fetched in parts


class VideoError(InputError):
    """A video or frames folder cannot give the frames asked for; the message becomes the reject reason."""


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the start of the video
    jpeg: bytes
    width: int
    height: int


def sample_times(start: float, end: float, fps: float, max_frames: int, long: str = "cut") -> list[float]:
    """Every 1/fps seconds from `start` while before `end`. More than `max_frames` of them: `cut` keeps the first
    `max_frames` (MetaMorph: exactly 1 FPS from t = 0, so a 60 s clip gives 0..44 s); `spread` spreads `max_frames`
    evenly over [start, end) instead, covering a long video end to end at a lower rate."""
    n = int(np.floor((end - start) * fps - _EPS)) + 1 if end > start else 0
    if n <= max_frames or long == "cut":
        return [round(start + k / fps, 3) for k in range(min(n, max_frames))]
    step = (end - start) / max_frames
    return [round(start + k * step, 3) for k in range(max_frames)]


def fit(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most `size` (0: unchanged), aspect ratio kept."""
    if size <= 0 or max(width, height) <= size:
        return width, height
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(rgb: np.ndarray | Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def record_folder(rid: str) -> str:
    """The media folder of a record: unique and stable, a readable slug of the id plus a hash (ids may share a slug)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", rid)[:48].strip("_") or "v"
    return f"video/{slug}-{hashlib.sha1(rid.encode()).hexdigest()[:10]}"


def frame_media(rid: str, video: str, frames: list[Frame], prefix: str = "") -> list[Media]:
    """Media entries for a record's frames, under a folder unique to the record id."""
    folder = record_folder(rid)
    return [Media(path=f"{folder}/{prefix}{round(f.t * 1000):07d}.jpg", kind="frame", width=f.width,
                  height=f.height, video=video, t=f.t, data=f.jpeg) for f in frames]


def check_rate(fps: float, rate: float, rid: str, video: str) -> None:
    """--fps above the source's frame rate would repeat frames: the record is refused instead."""
    if fps > rate * (1 + 1e-3):
        raise VideoError(f"record {rid!r}: --fps {fps:g} is above the frame rate of {video!r} ({rate:.4g} fps); "
                         "lower --fps")


class Video:
    """An opened video file: frame start times from the container (exact for variable frame rate too)."""

    def __init__(self, path: Path) -> None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # a broken file is a reject with a reason, not stderr noise
        self.path = path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise VideoError(f"video not found: {path}") from None
        if path.is_dir():
            raise VideoError(f"{path} is a directory, not a video file")
        if size == 0:
            raise VideoError(f"video is an empty file (0 bytes): {path}")
        try:
            self._reader = decord.VideoReader(str(path), num_threads=0)
            n = len(self._reader)
            times = self._reader.get_frame_timestamp(range(n)) if n else np.zeros((0, 2))
        except (RuntimeError, decord.DECORDError) as e:
            raise VideoError(f"video does not open (corrupt, truncated, or without frames): {path} "
                             f"(decord: {str(e).splitlines()[0][:200]})") from None
        if n == 0:
            raise VideoError(f"video has no frames: {path}")
        self.starts = np.asarray(times[:, 0], dtype=np.float64)
        self.origin = float(self.starts[0])  # some containers start at a non-zero time stamp
        self.duration = float(times[-1, 1]) - self.origin
        if not np.isfinite(self.duration) or self.duration <= 0:
            raise VideoError(f"video has no usable time stamps (duration {self.duration}): {path}")
        self.rate = n / self.duration  # frames per second, on average (exact for constant frame rate)

    def index_at(self, times: Sequence[float]) -> list[int]:
        """The frame on screen at each time: the last frame starting at or before it."""
        at = np.searchsorted(self.starts, np.asarray(times) + self.origin + _EPS, side="right") - 1
        return [int(i) for i in np.clip(at, 0, len(self.starts) - 1)]

    def frames(self, times: Sequence[float], size: int, quality: int) -> list[Frame]:
        """The frames on screen at `times`, fetched in one `get_batch` (several for very large frames, to bound
        memory), then scaled to at most `size` px on the longest side.

        Scaling happens here, on the chosen frames only: decord's own `width`/`height` scale every decoded frame,
        skipped ones included, which made 1-FPS extraction 1.6x slower than decoding at the source size.
        """
        import decord

        indices = self.index_at(times)
        out: list[Frame] = []
        try:
            h, w, _ = self._reader.next().shape  # frame 0 (a key frame, cheap) tells how large frames are
            step = max(1, _BATCH_BYTES // (h * w * 3))
            for i in range(0, len(indices), step):
                batch = self._reader.get_batch(indices[i:i + step]).asnumpy()
                out += [_frame(t, a, size, quality) for t, a in zip(times[i:i + step], batch, strict=True)]
        except (RuntimeError, decord.DECORDError) as e:
            raise VideoError(f"video does not decode at frames {indices[:8]}…: {self.path} "
                             f"(decord: {str(e).splitlines()[0][:200]})") from None
        return out


def _frame(t: float, rgb: np.ndarray, size: int, quality: int) -> Frame:
    im = Image.fromarray(rgb)
    w, h = fit(im.width, im.height, size)
    if (w, h) != im.size:
        im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return Frame(t, encode_jpeg(im, quality), w, h)


def _natural(name: str) -> list[int | str]:
    # `frame_10` after `frame_9`: zero-padded names sort the same either way, unpadded ones only this way.
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


class FrameFolder:
    """A folder of pre-extracted frames (ShareGPTVideo), frame i shown from i / folder_fps seconds.

    Frames are read as shown (EXIF rotation applied, 16-bit samples scaled); `notes` says which were converted so.
    Each frame must resolve inside `root` (the media root) as well: a symlinked frame cannot reach elsewhere.
    """

    def __init__(self, path: Path, folder_fps: float, root: Path | None = None) -> None:
        self.root = root
        self.notes: dict[str, dict[str, object]] = {}
        if not path.is_dir():
            raise VideoError(f"frames folder not found: {path}" if not path.exists()
                             else f"{path} is a file; ShareGPTVideo's `video` names a folder of frames")
        self.path = path
        self.names = sorted((e.name for e in path.iterdir() if e.suffix.lower() in FRAME_EXTS), key=_natural)
        if not self.names:
            raise VideoError(f"frames folder is empty (no {'/'.join(FRAME_EXTS)} files): {path}")
        self.fps = self.rate = folder_fps
        self.duration = len(self.names) / folder_fps

    def frames(self, times: Sequence[float], size: int, quality: int) -> list[Frame]:
        out = []
        for t in times:
            name = self.names[min(len(self.names) - 1, int(np.floor(t * self.fps + _EPS)))]
            try:
                if self.root is not None:
                    rel = str((self.path / name).relative_to(self.root))
                    inside(self.root, rel, f"frame {rel!r}")
                with Image.open(self.path / name) as im:
                    im.draft("RGB", fit(im.width, im.height, size))  # JPEG: decode at a reduced scale, cheaply
                    if im.mode in DEEP_MODES or orientation(im) != 1:
                        self.notes[name] = decode((self.path / name).read_bytes(), name).notes()
                    im = to_rgb(im)
                    w, h = fit(im.width, im.height, size)
                    if (w, h) != im.size:
                        im = im.resize((w, h), Image.Resampling.BILINEAR)
                    out.append(Frame(t, encode_jpeg(im, quality), w, h))
            except MediaError as e:
                raise VideoError(str(e)) from None
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
                raise VideoError(f"frame {self.path / name} does not decode ({type(e).__name__}: {e})") from None
        return out
