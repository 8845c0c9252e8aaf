"""Writing a view: `index.npy` (packed (source, row) pairs, `INDEX_DTYPE`), `removed.jsonl` (one line per input
record left out, and why), then `view.json` last, so the manifest exists only for a complete view."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson

from mmdata.core.errors import InputError
from mmdata.format.manifests import ViewManifest
from mmdata.format.names import INDEX, REMOVED, VIEW
from mmdata.storage.files import temp_path, write_bytes


def write_view(out: Path, manifest: ViewManifest, index: np.ndarray, removed: Iterator[bytes]) -> None:
    """Index, then removed.jsonl, then `view.json` last: the manifest exists only for a complete view."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / VIEW).is_file():
        raise InputError(f"{out}: output directory holds files that are not a view; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / VIEW).unlink(missing_ok=True)
    tmp = temp_path(out / INDEX)
    with open(tmp, "wb") as f:
        np.save(f, index, allow_pickle=False)
    os.replace(tmp, out / INDEX)
    write_bytes(b"".join(removed), out / REMOVED)
    write_bytes(orjson.dumps(asdict(manifest), option=orjson.OPT_INDENT_2) + b"\n", out / VIEW)
