"""Writing a view: `index.npy` (packed (source, row) pairs, `INDEX_DTYPE`), `removed.jsonl` (one line per input
record left out, and why), then `view.json` last, so the manifest exists only for a complete view. `write_index`
writes the index of a view or a mixture."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import orjson

from mmdata.core.errors import InputError, writing
from mmdata.format.manifests import ViewManifest
from mmdata.format.names import INDEX, REMOVED, VIEW
from mmdata.storage.base import Storage
from mmdata.storage.output import Destination

WRITE_HINT = "free space (or make it writable) and rerun the same command"


def write_index(storage: Storage, index: np.ndarray) -> None:
    """`index.npy`, staged: it appears whole under its name, or not at all."""
    f = storage.create(INDEX)
    try:
        np.save(f, index, allow_pickle=False)  # type: ignore[arg-type]
        f.commit()
    except BaseException:
        f.abort()
        raise


def write_view(dest: Destination, manifest: ViewManifest, index: np.ndarray, removed: Iterator[bytes]) -> None:
    """Index, then removed.jsonl, then `view.json` last: the manifest exists only for a complete view. A view already
    at `dest` is replaced once the new one is complete (`Destination.replace`)."""
    with writing(dest.where(), WRITE_HINT), dest.exclusive(f"mmdata {manifest.kind}", VIEW):
        if not dest.holds_only((INDEX, REMOVED, VIEW)) and not dest.storage.exists(VIEW):
            raise InputError(f"{dest.where()}: output holds files that are not a view; choose another --out")
        if not dest.storage.empty():
            dest.replace()
        write_index(dest.storage, index)
        dest.storage.write_bytes(REMOVED, b"".join(removed))
        dest.storage.write_bytes(VIEW, orjson.dumps(asdict(manifest), option=orjson.OPT_INDENT_2) + b"\n")
        dest.commit()
