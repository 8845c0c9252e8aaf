"""A reader's pin on the build it opened: the manifest's version as the backend sees it (a stat, an ETag) and the
sha256 of its bytes, checked after each open or fetch so a reader never mixes two builds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from mmdata.core.errors import DatasetChanged

Pin = tuple[str, Any, str]  # (the manifest's name, its version as the backend sees it, the sha256 of its bytes)


def take_pin(where: str, name: str, version: Callable[[str], Any], read: Callable[[str], bytes]) -> tuple[Pin, bytes]:
    """Read manifest `name` and pin it: its version (`version(name)`: a stat, an ETag...) taken before and after
    the read agree, so the bytes are that version's.

    A pin makes a reader safe against rebuilds: a build removes or replaces its manifest before it touches any other
    file (in place), or swaps in a whole new folder (`--overwrite`), so a file opened or fetched while the pinned
    manifest is still in place belongs to the pinned build (`check_pin`, after each open or fetch)."""
    for _ in range(10):
        before = version(name)
        data = read(name)
        if version(name) == before:
            return (name, before, hashlib.sha256(data).hexdigest()), data
    raise DatasetChanged(f"{where}/{name} keeps changing while it is read: a build is writing this dataset; open it "
                         "once the build is done")


def check_pin(where: str, pin: Pin, version: Callable[[str], Any], read: Callable[[str], bytes]) -> Pin:
    """`pin`, still valid (updated if its manifest was rewritten with the same bytes: a rerun that changed nothing,
    so the same shards byte for byte); else `DatasetChanged`: what was opened or fetched just before may belong to
    another build."""
    name, then, sha = pin
    now = version(name)
    if now == then:
        return pin
    if now is not None and hashlib.sha256(read(name)).hexdigest() == sha and version(name) == now:
        return name, now, sha
    state = "was removed (a build is rewriting the dataset)" if now is None else "was replaced by a new build"
    raise DatasetChanged(f"{where}: the dataset changed after it was opened ({name} {state}); reading on would mix "
                         "two builds' records: open it again (mmdata.open) once the build is done")
