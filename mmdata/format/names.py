"""Every on-disk name of a built dataset, a view and a mixture, spelled once. Names are '/'-separated and relative to
the dataset's root (a folder or a URL prefix); no other module spells one.

A built dataset:

    dataset.json             the manifest, written last: its existence means "this build is complete"
    .build.json              what the build in progress (or done) is: a rerun with the same identity resumes it
    rejects.jsonl            one line per input item not written, and why
    media/<path>             media stored with the dataset (--copy-media, or media a builder generates)
    .running/NNNNNN.json     while shard NNNNNN is being written: which node and process writes it
    shards/NNNNNN.jsonl      one record per line                                          (form "jsonl")
    shards/NNNNNN.idx        little-endian uint64 byte offset of each line
    shards/NNNNNN.tar        webdataset: <key>.json + <key>.<i>.<ext> per record          (form "wds")
    shards/NNNNNN.tar.idx    uint64 offset of each record's first tar member
    shards/NNNNNN.done.json  the shard's result, written last: its existence means "this shard is complete"

A view (dedup, decontamination) or a mixture:

    view.json | mixture.json the manifest, written last
    index.npy                packed (source, row) pairs, 12 bytes a record, in order
    removed.jsonl            (views) one line per input record left out, and why

The storage layer names its own mechanics beside an output (locks and staged replacements of a local folder:
`mmdata.storage.outdir`, reached through `mmdata.storage.output`; temporary files: `mmdata.storage.files`); they are
never part of a dataset.
"""

from __future__ import annotations

from typing import Literal

Form = Literal["jsonl", "wds"]  # the two shard forms; a `--format both` build has each shard in both

MANIFEST = "dataset.json"
BUILD = ".build.json"
REJECTS = "rejects.jsonl"
MEDIA = "media"
RUNNING = ".running"
SHARDS = "shards"
VIEW = "view.json"
MIXTURE = "mixture.json"
INDEX = "index.npy"
REMOVED = "removed.jsonl"

_SUFFIX: dict[str, str] = {"jsonl": ".jsonl", "wds": ".tar"}
_INDEX_SUFFIX = ".idx"
_DONE = ".done.json"


def shard_name(index: int) -> str:
    return f"{index:06d}"


def data_name(index: int, form: Form) -> str:
    return f"{SHARDS}/{shard_name(index)}{_SUFFIX[form]}"


def index_name(data: str) -> str:
    """The offset index of data file `data`: `x.jsonl` → `x.idx`, `x.tar` → `x.tar.idx`."""
    return data.removesuffix(_SUFFIX["jsonl"]) + _INDEX_SUFFIX


def shard_pattern(index: int) -> str:
    """Every file of shard `index` (for messages about it)."""
    return f"{SHARDS}/{shard_name(index)}.*"


def done_name(index: int) -> str:
    return f"{SHARDS}/{shard_name(index)}{_DONE}"


def is_done_name(name: str) -> bool:
    return name.endswith(_DONE)


def shard_number(name: str) -> int | None:
    """The shard number of a file under `shards/` (`shards/000012.tar.idx` → 12), None for any other name."""
    number = name.removeprefix(f"{SHARDS}/").split(".", 1)[0]
    return int(number) if number.isdigit() else None


def running_name(index: int) -> str:
    return f"{RUNNING}/{shard_name(index)}.json"


def media_name(path: str) -> str:
    """Where a media file stored with the dataset lives (`path` is the record's media path)."""
    return f"{MEDIA}/{path}"
