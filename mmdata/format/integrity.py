"""Is a shard on disk what its manifest entry (or `.done.json`) says? Size, sha256, and index ↔ data consistency.

Used by `mmdata validate` (every shard of every form) and by a resumed build (a `.done.json` is trusted only if
its shard still matches it). Each problem is one line naming the file and, where it can, the record.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mmdata.format.names import index_name
from mmdata.format.shards import ShardFile
from mmdata.storage.base import Storage

_CHUNK = 1 << 22


_TAR_BLOCK = 512


def check_shard(storage: Storage, files: dict[str, ShardFile], count: int) -> list[str]:
    """Problems of one shard's data files (one per form) holding `count` records; [] if intact."""
    return [p for form, f in files.items() for p in check_file(storage, f, form, count)]


def check_file(storage: Storage, f: ShardFile, form: str, count: int) -> list[str]:
    if not storage.exists(f.name):
        return [f"{f.name}: missing"]
    index = index_name(f.name)
    offsets, problem = _read_index(storage, index, f.name, count)
    # JSONL: the byte before each record's start (and the file's last byte) must be a newline; found while hashing.
    ends = np.append(offsets[1:], f.bytes) - 1 if form == "jsonl" and offsets is not None else np.zeros(0, np.int64)
    misplaced: list[int] = []
    sha, size = hashlib.sha256(), 0
    with storage.stream(f.name) as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            lo, hi = np.searchsorted(ends, [size, size + len(chunk)])
            if hi > lo:
                at = np.frombuffer(chunk, dtype=np.uint8)[ends[lo:hi] - size]
                misplaced.extend((lo + np.flatnonzero(at != 10)).tolist())
            size += len(chunk)
    problems = []
    if size != f.bytes:
        problems.append(f"{f.name}: {size} bytes, the manifest says {f.bytes} (truncated or changed after the build)")
    elif sha.hexdigest() != f.sha256:
        problems.append(f"{f.name}: sha256 {sha.hexdigest()[:16]}… differs from the manifest's {f.sha256[:16]}… "
                        "(the content was changed after the build)")
    if problem is not None:
        return problems + [problem]
    assert offsets is not None
    beyond = np.flatnonzero(offsets >= size)
    if len(beyond):
        return problems + [f"{f.name}: records {int(beyond[0])}..{count - 1} start beyond the file's {size} bytes "
                           "(truncated)"]
    if form == "wds":
        misplaced = np.flatnonzero(offsets % _TAR_BLOCK).tolist()
    if misplaced:
        problems.append(f"{index}: record {misplaced[0]} of {f.name} does not end where the index says (a wrong or "
                        "swapped index, or a changed file)")
    return problems


def _read_index(storage: Storage, name: str, data: str, count: int) -> tuple[np.ndarray | None, str | None]:
    """(the offsets, None) of a sound index, else (None, the problem)."""
    if not storage.exists(name):
        return None, f"{name}: missing (the index of {data})"
    raw = storage.read_bytes(name)
    if len(raw) % 8 or len(raw) // 8 != count:
        return None, (f"{name}: {len(raw) / 8:g} offsets for the {count} records of {data} (a wrong, swapped or "
                      "truncated index)")
    offsets = np.frombuffer(raw, dtype="<u8").astype(np.int64)
    if count and (offsets[0] != 0 or (np.diff(offsets) <= 0).any()):
        return None, f"{name}: offsets do not start at 0 and increase (a wrong or swapped index for {data})"
    return offsets, None
