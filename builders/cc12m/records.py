"""img2dataset shard k → output shard k: each row of its parquet (in TSV line order) becomes a `t2i` record (or, for
a seeded share, a `caption` one) with the image its tar holds for the row's key, or a reject with img2dataset's own
error message."""

from __future__ import annotations

import html
import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq

from builders._common import Draws
from builders.cc12m.options import CC12MOptions, Unit
from mmdata.build import tar_spans
from mmdata.core.schema import IMAGE, Media, Record, Reject, Turn

PERSON = "<PERSON>"
# MetaMorph's pool was not released; its one example is the first pair. Varied wording keeps the model from
# keying generation on one template.
PROMPTS = (
    "Generate an image of {c}",
    "Create an image based on this description: {c}",
    "Please draw a picture of the following: {c}",
    "Can you make an image that matches this caption? {c}",
    "Show me an image of: {c}",
    "{c}\nGenerate an image of this.",
    "Produce a picture described as follows: {c}",
    "I'd like to see an image of this: {c}",
    "Paint a picture for this caption: {c}",
    "Generate a photo that fits this text: {c}",
)
ANSWERS = (
    "Here is an image based on your request: <image>",
    "Sure, here it is: <image>",
    "Here's the image you asked for: <image>",
    "<image>",
    "Of course. <image>",
    "Here is a picture matching that description: <image>",
    "Here you go: <image>",
)
CAPTION_PROMPTS = (
    "<image>\nDescribe this image briefly.",
    "<image>\nWrite a short caption for this image.",
    "<image>\nWhat is shown in this picture?",
    "<image>\nGive a one-sentence description of the image.",
    "What does this image show?\n<image>",
)


def records(options: CC12MOptions, unit: Unit) -> Iterator[Record | Reject]:
    table = pq.read_table(unit.shard + ".parquet")
    rows = table.to_pylist()
    shard = Path(unit.shard).name
    with open(unit.shard + ".tar", "rb") as tar:
        images, damage = tar_index(tar, unit.shard + ".tar")
        if unit.first:
            by_line = {r["line"]: r for r in rows}
            order: list[tuple[int, dict[str, Any] | None]] = [
                (line, by_line.get(line)) for line in range(unit.first, unit.first + unit.count)]
        else:
            order = [(0, r) for r in sorted(rows, key=lambda r: r["key"])[: unit.count]]
        for line, row in order:
            ref = f"{unit.label}:{line}" if line else f"cc12m:{_tsv_line(row, shard, unit.per_shard)}"  # type: ignore
            if row is None:
                yield Reject(ref, "img2dataset wrote no status for this row (a per-sample error; see "
                                  "img2dataset.log in the download folder)")
            elif row.get("issue"):
                yield Reject(ref, row["issue"])
            elif row["status"] != "success":
                yield Reject(ref, f"{row['status']}: {row['error_message']}")
            elif row["key"] not in images:
                yield Reject(ref, damage or f"img2dataset reported success but {shard}.tar has no image for key "
                                            f"{row['key']}")
            else:
                offset, size, ext = images[row["key"]]
                tar.seek(offset)
                yield convert(options, row, tar.read(size), ext, unit.label, line, shard, ref)


def _tsv_line(row: dict[str, Any], shard: str, per_shard: int) -> int:
    """The TSV line an img2dataset row came from: its `line` column (our own downloads save it), else from its key
    (shard id digits + index in the shard) below the header line img2dataset's TSV input requires."""
    if isinstance(row.get("line"), int):
        return row["line"]
    index = int(row["key"][len(shard):] or 0)
    return 2 + int(shard) * per_shard + index


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def tar_index(f: BinaryIO, path: str) -> tuple[dict[str, tuple[int, int, str]], str | None]:
    """key → (offset, size, extension) of each image member of an img2dataset tar, from its headers only (the file
    is mapped, never read whole, so a shard's images never all sit in memory); and, if a header is damaged, why
    (naming the file and byte): the members before it are still used."""
    index: dict[str, tuple[int, int, str]] = {}
    data = _contents(f)
    try:
        for name, start, end in tar_spans(data, verify=True):
            key, _, ext = name.rpartition("/")[2].partition(".")
            if ext in IMAGE_EXTENSIONS:
                index[key] = (start, end - start, ext)
    except ValueError as e:  # (a name that is not UTF-8 too)
        return index, f"{path}: damaged tar ({e}); this sample's image is unreadable"
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    return index, None


def _contents(f: BinaryIO) -> bytes | mmap.mmap:
    """The tar's bytes, mapped from its file (read only where headers are; read whole if it is not a file)."""
    try:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation), or an empty file
        f.seek(0)
        return f.read()


def convert(options: CC12MOptions, row: dict[str, Any], image: bytes, ext: str, label: str, line: int,
            shard: str, ref: str) -> Record | Reject:
    """One downloaded sample → a t2i record (or, for a seeded share, a caption record)."""
    rid = f"{label}-{line:09d}" if line else f"{label}-{row['key']}"
    raw = row.get("caption") or ""
    caption = " ".join(html.unescape(raw).split())  # entities and stray tabs/newlines are crawl noise
    if not caption:
        return Reject(ref, "empty caption: nothing to generate from")
    if IMAGE in caption:
        return Reject(ref, f"caption contains the media placeholder {IMAGE}")
    text = caption.replace(PERSON, options.person_token) if options.person_token is not None else caption
    # Three draws in this order; the phrasing's table depends on the third, so the first is kept as a raw draw.
    draws = Draws(options.seed, rid, "sha256")
    phrasing, answer, share = draws.word(), draws.index(len(ANSWERS)), draws.share()
    if share < options.caption_ratio:
        task = "caption"
        turns = [Turn("human", CAPTION_PROMPTS[phrasing % len(CAPTION_PROMPTS)]), Turn("gpt", text)]
    else:
        task = "t2i"
        prompt = PROMPTS[phrasing % len(PROMPTS)].format(c=text)
        turns = [Turn("human", prompt), Turn("gpt", ANSWERS[answer])]
    meta: dict[str, Any] = {"ref": ref, "url": row["url"], "caption": caption, "img2dataset_shard": shard,
                            "img2dataset_key": row["key"], "original_size": [row.get("original_width"),
                                                                             row.get("original_height")]}
    if caption != raw:
        meta["caption_raw"] = raw
    if row.get("sha256"):
        meta["sha256"] = row["sha256"]
    return Record(id=rid, source="cc12m", task=task, conversations=turns,
                  media=[Media(path=f"{shard}/{rid}.{ext}", data=image)], meta=meta)
