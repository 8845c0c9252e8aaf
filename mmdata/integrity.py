"""Is a shard on disk what its manifest entry (or `.done.json`) says? Size, sha256, and index ↔ data consistency.

Used by `mmdata validate` (every shard of every form) and by a resumed build (a `.done.json` is trusted only if
its shard still matches it). Each problem is one line naming the file and, where it can, the record.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mmdata.layout import ShardFile, index_name
from mmdata.storage import Storage

_CHUNK = 1 << 22
_TAR_BLOCK = 512


def check_shard(storage: Storage, files: dict[str, ShardFile], count: int) -> list[str]:
    """Problems of one shard's data files (one per form) holding `count` records; [] if intact."""
    return [p for form, f in files.items() for p in check_file(storage, f, form, count)]


def check_file(storage: Storage, f: ShardFile, form: str, count: int) -> list[str]:
    if not storage.exists(f.name):
        return [f"{f.name}: missing"]
    sha, size = hashlib.sha256(), 0
    with storage.stream(f.name) as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    problems = []
    if size != f.bytes:
        problems.append(f"{f.name}: {size} bytes, the manifest says {f.bytes} (truncated or changed after the build)")
    elif sha.hexdigest() != f.sha256:
        problems.append(f"{f.name}: sha256 {sha.hexdigest()[:16]}… differs from the manifest's {f.sha256[:16]}… "
                        "(the content was changed after the build)")
    return problems + _check_index(storage, f.name, form, count, size)


def _check_index(storage: Storage, data: str, form: str, count: int, size: int) -> list[str]:
    name = index_name(data)
    if not storage.exists(name):
        return [f"{name}: missing (the index of {data})"]
    raw = storage.read_bytes(name)
    if len(raw) % 8 or len(raw) // 8 != count:
        return [f"{name}: {len(raw) / 8:g} offsets for the {count} records of {data} (a wrong, swapped or "
                "truncated index)"]
    if not count:
        return []
    offsets = np.frombuffer(raw, dtype="<u8").astype(np.int64)
    if offsets[0] != 0 or (np.diff(offsets) <= 0).any():
        return [f"{name}: offsets do not start at 0 and increase (a wrong or swapped index for {data})"]
    beyond = np.flatnonzero(offsets >= size)
    if len(beyond):
        return [f"{data}: records {int(beyond[0])}..{count - 1} start beyond the file's {size} bytes (truncated)"]
    if form == "wds":
        bad = np.flatnonzero(offsets % _TAR_BLOCK)
    else:  # each record but the first starts right after a newline, and the file ends with one
        ends = storage.read_ranges([data] * count, (np.append(offsets[1:], size) - 1).tolist(),
                                   np.append(offsets[1:], size).tolist())
        bad = np.flatnonzero(np.array([e != b"\n" for e in ends]))
    if len(bad):
        return [f"{name}: record {int(bad[0])} of {data} does not end where the index says (a wrong or swapped "
                "index, or a changed file)"]
    return []
