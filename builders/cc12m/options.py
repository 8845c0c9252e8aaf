"""cc12m's options (`mmdata build cc12m --help` shows them) and its unit of work, one img2dataset shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmdata.core.errors import InputError
from mmdata.core.options import opt
from mmdata.core.schema import IMAGE


@dataclass
class CC12MOptions:
    input: Path | None = opt(None, help="cc12m.tsv: headerless url<TAB>caption lines (CC3M: see --columns)")
    from_img2dataset: Path | None = opt(None, help="Convert this existing img2dataset webdataset output "
                                                   "folder (NNNNN.tar/.parquet/_stats.json) instead of "
                                                   "downloading")
    download_dir: Path | None = opt(None, help="img2dataset's working folder; a rerun resumes there "
                                               "[default: <input folder>/<input stem>_img2dataset]")
    columns: Literal["url-caption", "caption-url"] = opt("url-caption", help="TSV column order: CC12M is "
                                                                             "url-caption, CC3M caption-url")
    image_size: int = opt(384, help="img2dataset --image_size: target side in pixels")
    resize_mode: Literal["keep_ratio", "keep_ratio_largest", "center_crop", "border", "no"] = opt(
        "keep_ratio", help="img2dataset resize mode; keep_ratio (smaller side = image size, no letterbox) "
                           "suits generation targets")
    processes: int = opt(0, help="img2dataset processes (0: one per CPU core)")
    threads: int = opt(64, help="img2dataset download threads per process")
    timeout: int = opt(10, help="Seconds before a download is abandoned (a reject: 'timed out')")
    seed: int = opt(0, help="Chooses each sample's phrasing and caption share (same seed, same choice)")
    caption_ratio: float = opt(0.0, help="Share of samples made image→caption (task: caption) instead of t2i")
    person_token: str | None = opt(None, help="Replace CC12M's <PERSON> with this text "
                                              "(default: keep it verbatim)")
    allow_letterbox: bool = opt(False, help="Accept a download made with resize_mode=border (white letterbox "
                                            "squares as generation targets); refused by default")

    def __post_init__(self) -> None:
        if self.download_dir is None and self.input is not None:
            self.download_dir = Path(self.input).parent / f"{Path(self.input).stem}_img2dataset"
        if self.image_size < 1:
            raise InputError(f"--image-size must be >= 1, got {self.image_size}")
        if self.processes < 0 or self.threads < 1 or self.timeout < 1:
            raise InputError("--processes must be >= 0, --threads and --timeout >= 1; got "
                             f"{self.processes}, {self.threads}, {self.timeout}")
        if not 0.0 <= self.caption_ratio <= 1.0:
            raise InputError(f"--caption-ratio must be within 0..1, got {self.caption_ratio}")
        if self.person_token is not None and (IMAGE in self.person_token or not self.person_token.strip()):
            raise InputError(f"--person-token {self.person_token!r}: must be non-empty text without {IMAGE}")
        if self.resize_mode == "border" and not self.allow_letterbox:
            raise InputError("--resize-mode border letterboxes every image onto a white square, and the bands "
                             "become part of each generation target; use keep_ratio, or pass --allow-letterbox")


@dataclass(frozen=True)
class Unit:
    shard: str  # img2dataset shard path without extension: <dir>/NNNNN(.tar|.parquet|_stats.json)
    label: str  # record id prefix: the TSV's stem, or the img2dataset folder's name
    first: int  # first TSV line of the shard (TSV mode); 0: take the rows the parquet holds
    count: int  # rows of the shard to convert
    pid: int = 0  # the background img2dataset process to wait for (0: the shard is already downloaded)
    per_shard: int = 0  # --from-img2dataset: img2dataset's number_sample_per_shard, to tell each key's TSV line
