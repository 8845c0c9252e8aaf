"""Where the lines of a buffer end: its newline positions, found with numpy.

Comparing a whole multi-megabyte buffer at once allocates a mask as large as it, fresh each time, and the page
faults of that allocation cost as much as the comparison. Here the buffer is compared in chunks that fit in the
cache, into one scratch mask per thread that is reused."""

from __future__ import annotations

import threading

import numpy as np

_CHUNK = 1 << 18


_local = threading.local()


def newlines(raw: np.ndarray) -> np.ndarray:
    """The positions of the `\\n` bytes of `raw` (a uint8 array), in order, as int64."""
    scratch = getattr(_local, "mask", None)
    if scratch is None:
        scratch = _local.mask = np.empty(_CHUNK, dtype=bool)
    parts = []
    for at in range(0, len(raw), _CHUNK):
        part = raw[at:at + _CHUNK]
        mask = scratch[:len(part)]
        np.equal(part, 10, out=mask)
        found = np.flatnonzero(mask)
        if at:
            found += at
        parts.append(found)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
