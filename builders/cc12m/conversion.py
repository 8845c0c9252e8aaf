"""Conversion of a downloaded sample to a record: a `t2i` conversation (or, for a seeded share, a `caption` one) with
the image img2dataset's tar holds for the row's key (`tar_index`: where each image is), and the TSV line it came
from (`tsv_line`)."""

from __future__ import annotations

import html
import mmap
from typing import Any, BinaryIO

from builders._common import Draws
from builders.cc12m.options import CC12MOptions
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


def tsv_line(row: dict[str, Any], shard: str, per_shard: int) -> int:
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
