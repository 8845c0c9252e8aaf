"""Export a dataset (or mixture) to the JSON the reference training loaders read: `mmdata export`.

- `metamorph` (MetaMorph's `LazySupervisedDataset`): JSONL, one `{"id", "image": [paths], "conversations"}` per line.
  Its loader opens the paths as written (no image folder), dispatches a *string* `image` on the record id and file
  extension (video, `vstar`), treats a list whose first path contains `visual_cot` as a raw Visual-CoT item, and skips
  a sample with more than 70 images. So `image` is always a list (plain images, whatever the id), a first path
  containing `visual_cot` and records over 70 images are refused, and text records carry no `image`.
- `llava` (LLaVA-1.5's `LazySupervisedDataset`): one JSON array of `{"id", "image"?: path, "conversations"}`, paths
  relative to `--image_folder`. It opens one image per sample and moves every `<image>` to the start of its turn, as an
  input: multi-image records and records with generation targets are refused, never written in a form it mis-reads.

Neither loader knows a `system` role (its role table has human and gpt only): records with a system turn are refused
with that reason. Every record is written or refused; `ExportResult` counts the refusals per reason.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mmdata.core.errors import InputError
from mmdata.core.schema import IMAGE, Record
from mmdata.read.view import View, open_any
from mmdata.storage.files import temp_path

METAMORPH_MAX_IMAGES = 70  # its __getitem__ skips a sample with more image tokens than this


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # the container its loader reads: ".jsonl" (one object per line) or ".json" (one array)
    multi_image: bool  # may a record hold several images
    targets: bool  # may an image sit in a gpt turn (a generation target)
    system: bool  # does the format carry system turns
    image_list: bool  # `image` always a list (else one path string)
    max_images: int | None = None


FORMATS: dict[str, ExportFormat] = {
    "metamorph": ExportFormat("metamorph", ".jsonl", multi_image=True, targets=True, system=False, image_list=True,
                              max_images=METAMORPH_MAX_IMAGES),
    "llava": ExportFormat("llava", ".json", multi_image=False, targets=False, system=False, image_list=False),
}


@dataclass
class ExportResult:
    out: Path
    written: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason → records
    examples: dict[str, str] = field(default_factory=dict)  # reason → the first refused record id
    image_folder: Path | None = None  # what relative paths are relative to (LLaVA's --image_folder)


def export(path: str | Path, to: str, out: str | Path, absolute_paths: bool = False,
           storage_options: dict[str, Any] | None = None) -> ExportResult:
    """Write every record of the dataset or mixture at `path` that format `to` can express into `out`."""
    if to not in FORMATS:
        raise InputError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    fmt, out = FORMATS[to], Path(out)
    if out.suffix != fmt.suffix:
        container = "a JSONL file (one record per line)" if fmt.suffix == ".jsonl" else "one JSON array"
        raise InputError(f"--out {out}: the {to} loader reads {container}; name it *{fmt.suffix}")
    ds = open_any(path, storage_options=storage_options)
    is_mixture = isinstance(ds, View)
    if is_mixture and not absolute_paths:
        raise InputError(f"{path} is a mixture or view: its sources have different media roots; pass --absolute-paths")
    if not is_mixture and ds.form != "jsonl":
        raise InputError(f"{path}: stored as webdataset tars only, and the {to} loader opens image files; rebuild "
                         f"it with --format jsonl or --format both")
    result = ExportResult(out, image_folder=None if (absolute_paths or is_mixture) else ds.media_root)
    rows: list[bytes] = []
    for i in range(len(ds)):
        record, source = ds.get(i)  # a mixture's record comes with the dataset that resolves its media
        if record.media and (source.form != "jsonl" or source.media_root is None):
            reason: str | None = "its dataset keeps its media in webdataset tars only: no image file to point at"
        else:
            paths = [str(source.media_path(record, j)) if absolute_paths else record.media[j].path
                     for j in range(len(record.media))]
            reason = refusal(record, paths, fmt)
        if reason is not None:
            result.refused[reason] += 1
            result.examples.setdefault(reason, record.id)
            continue
        rows.append(orjson.dumps(to_item(record, paths, fmt)))
    result.written = len(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out.with_name(f".{out.name}"))
    tmp.write_bytes(b"".join(r + b"\n" for r in rows) if fmt.suffix == ".jsonl"
                    else b"[\n" + b",\n".join(rows) + b"\n]\n")
    os.replace(tmp, out)
    return result


def refusal(record: Record, paths: list[str], fmt: ExportFormat) -> str | None:
    """Why `fmt` cannot express `record` (its media at `paths`, as written) faithfully, or None."""
    if not fmt.system and any(t.role == "system" for t in record.conversations):
        return f"has a system turn: the {fmt.name} loader knows only human and gpt turns"
    roles = record.media_roles()
    if not fmt.targets and "target" in roles:
        return f"has a generation target (an <image> in a gpt turn): {fmt.name} would read it as an input image"
    if not fmt.multi_image and len(record.media) > 1:
        return f"has {len(record.media)} images: {fmt.name} loads one image per sample"
    if fmt.max_images is not None and len(record.media) > fmt.max_images:
        return f"has more than {fmt.max_images} images: the {fmt.name} loader skips such samples"
    if fmt.name == "metamorph" and paths and "visual_cot" in paths[0]:
        return ("its first image path contains 'visual_cot', which MetaMorph's loader parses as a raw Visual-CoT item "
                "(export relative paths, or keep the data under folders not named so)")
    return None


def to_item(record: Record, paths: list[str], fmt: ExportFormat) -> dict[str, Any]:
    item: dict[str, Any] = {"id": record.id}
    if paths:
        item["image"] = paths if fmt.image_list else paths[0]
    item["conversations"] = [{"from": t.role, "value": t.value} for t in record.conversations]
    assert sum(t.value.count(IMAGE) for t in record.conversations) == len(paths), record.id
    return item
