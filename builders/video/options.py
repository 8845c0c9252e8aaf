"""The video builder's options: `mmdata build video --help` shows them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmdata.core.errors import InputError
from mmdata.core.options import opt

MAX_FRAMES = 1024  # frames per record: far above any model's context (MetaMorph: 45), low enough to fit memory
MAX_VARIANTS = 1000  # frame_pred records per video


@dataclass
class VideoOptions:
    input: list[Path] = opt(help="Annotation file (JSON/JSONL/caption.json) or folder of videos; repeatable",
                            factory=list)
    media_root: Path | None = opt(None, help="Folder the annotations' video paths are relative to "
                                             "(default: the annotation file's folder)")
    task: Literal["video_qa", "frame_pred"] = opt("video_qa", help="What the records teach")
    fps: float = opt(1.0, help="Frames sampled per second of video")
    max_frames: int = opt(45, help="Frames per video at most (a record with several videos shares them)")
    long_video: Literal["cut", "spread"] = opt("cut", help="video_qa, a video longer than --max-frames at --fps: "
                                                         "cut (the first --max-frames, MetaMorph) or spread them "
                                                         "evenly over the whole video")
    min_frames: int = opt(1, help="video_qa: fewest frames a video must give at --fps (shorter ones are rejected)")
    frame_size: int = opt(384, help="Longest side of the stored JPEG frames in px (0: the source size)")
    jpeg_quality: int = opt(90, help="JPEG quality of the stored frames (1-95)")
    frames_fps: float = opt(2.0, help="Rate at which frames-folder inputs (ShareGPTVideo) were extracted")
    variants: int = opt(1, help="frame_pred: records per video, each with its own interval and task family")
    labels: Path | None = opt(None, help="SSv2 something-something-v2-labels.json (adds the class index to meta)")
    seed: int = opt(0, help="frame_pred: seed of the per-video choices (interval, family, frames, phrasing)")

    def check(self) -> None:
        def need(ok: bool, flag: str, what: str) -> None:
            if not ok:
                raise InputError(f"video: --{flag} {what}")
        need(bool(self.input), "input", "is required (an annotation file or a folder of videos; repeatable)")
        need(math.isfinite(self.fps) and self.fps > 0, "fps", f"must be > 0 (a finite number), got {self.fps}")
        need(1 <= self.max_frames <= MAX_FRAMES, "max-frames", f"must be in 1..{MAX_FRAMES}, got {self.max_frames}")
        need(1 <= self.min_frames <= self.max_frames, "min-frames",
             f"must be in 1..--max-frames ({self.max_frames}), got {self.min_frames}")
        need(0 <= self.frame_size <= 16384, "frame-size", f"must be in 0..16384, got {self.frame_size}")
        need(1 <= self.jpeg_quality <= 95, "jpeg-quality", f"must be in 1..95, got {self.jpeg_quality}")
        need(math.isfinite(self.frames_fps) and self.frames_fps > 0, "frames-fps",
             f"must be > 0 (a finite number), got {self.frames_fps}")
        need(1 <= self.variants <= MAX_VARIANTS, "variants", f"must be in 1..{MAX_VARIANTS}, got {self.variants}")
