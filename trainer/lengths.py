"""Expanded sample lengths computed once and reused: what packing and length grouping plan from.

Tokenizing a whole mixture on every rank at every launch costs minutes at millions of records. Instead one table
per source dataset keeps a length per row, `<cache>/<dataset key>-<settings key>.npy` (uint32; MISSING for rows
no run has needed yet), with a `.json` beside it spelling out its key:

- the dataset: the sha256 of its manifest (which lists every shard's sha256), so a rebuilt dataset is a new table;
- the tokenizer: the sha256 of its saved files (vocabulary, merges, added and special tokens, settings);
- the template (its whole definition), N image tokens, max_length, `RULES` (the version of the rendering and
  truncation rule: bump it when `ConversationEncoder` changes what lengths it gives) and the tokenizer libraries'
  versions.

Any part changed gives another file name, so a stale table is never read: it is computed afresh. Tables are per
(dataset, row), not per mixture position: the stage-1 and stage-2 mixtures, or a re-weighted remix, share their
datasets' rows, and a row repeated in a mixture is tokenized once.

On R ranks: rank 0 finds the rows missing, every rank tokenizes 1/R of them (records read in batches through
`get_many`, text only: no image is opened), the slices are gathered, rank 0 writes the tables (temporary name, then
rename), and after a barrier every rank memory-maps them. A source with no identity on local disk (an in-memory
`RecordList`, a remote dataset) is tokenized in memory, as before. Mixtures and views (dedup, decontamination)
are followed down to the datasets that hold their records, so they share those datasets' tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from mmdata import Dataset, View
from trainer.features import dataset_key

MISSING = np.uint32(0xFFFFFFFF)
RULES = 1
_BATCH = 1024  # records per batched read


@dataclass
class LengthStats:
    """What `expanded_lengths` did, for the start-up message."""

    computed: int  # distinct rows tokenized by this launch (all ranks together); the rest came from the cache
    cache: Path | None  # None: no cache for this source (every sample tokenized, in memory)


@dataclass
class _Part:
    """One source dataset of the data: which positions it serves, from which of its rows, and its table file."""

    dataset: Dataset
    positions: np.ndarray  # positions of the data it serves
    rows: np.ndarray
    path: Path


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the tokenizer's saved files: the same tokenizer copied elsewhere hashes the same."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def settings(data: Any) -> dict[str, Any]:
    """Everything besides the dataset that determines a `ConversationDataset`'s lengths."""
    import tokenizers
    import transformers

    enc = data.encoder
    return {"rules": RULES, "tokenizer_sha256": tokenizer_hash(enc.tokenizer),
            "template": dataclasses.asdict(enc.template), "num_image_tokens": enc.n,
            "max_length": data.max_length, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}


def _key_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _parts(source: Any, cache: Path, settings_key: str) -> list[_Part] | None:
    """The datasets holding the data's records (through any mixture or view), each with the positions it serves,
    their rows and its table path; None when the source cannot be cached."""
    if not isinstance(source, (Dataset, View)):
        return None
    bases, index = source.flat()
    by_path: dict[Path, _Part] = {}  # a dataset reached through two sources of a view is one table
    for d, ds in enumerate(bases):
        key = dataset_key(ds)
        if not key:  # no manifest on local disk: nothing identifies its rows
            return None
        positions = np.flatnonzero(index["dataset"] == d)
        part = _Part(ds, positions, index["row"][positions].astype(np.int64), cache / f"{key}-{settings_key}.npy")
        if part.path in by_path:
            old = by_path[part.path]
            part.positions, part.rows = (np.concatenate([old.positions, positions]),
                                         np.concatenate([old.rows, part.rows]))
        by_path[part.path] = part
    return list(by_path.values())


def _load(part: _Part) -> np.ndarray | None:
    try:
        table = np.load(part.path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return table if table.dtype == np.uint32 and table.shape == (len(part.dataset),) else None


def expanded_lengths(data: Any, cache: str | Path | None, *, rank: int = 0,
                     world_size: int = 1) -> tuple[list[int], LengthStats]:
    """The exact expanded length of every position of `data` (a `ConversationDataset`; 0 for a sample that will
    be skipped), read from `cache` where it holds them, otherwise computed and written there. Collective when
    `world_size > 1`: every rank calls it and gets the same lengths."""
    parts = None
    if cache is not None:
        cache = Path(cache)
        key = settings(data)
        parts = _parts(data.source, cache, _key_hash(key))
    if parts is None:
        return data.lengths(), LengthStats(len(data), None)

    work: list[np.ndarray] | None = None
    if rank == 0:  # the one view of what is missing, so all ranks split the same work
        tables = [_load(p) for p in parts]
        work = [np.unique(p.rows) if t is None else np.unique(p.rows[t[p.rows] == MISSING])
                for p, t in zip(parts, tables)]
    if world_size > 1:
        box = [work]
        dist.broadcast_object_list(box, src=0)
        work = box[0]
    assert work is not None
    computed = _compute_share(data, parts, work, rank, world_size)
    if world_size > 1:
        shares: list[Any] = [None] * world_size
        dist.all_gather_object(shares, computed)
    else:
        shares = [computed]
    missing = sum(len(w) for w in work)
    if rank == 0 and missing:
        _write(parts, work, shares, key)
    if world_size > 1:
        dist.barrier()

    out = np.empty(len(data), dtype=np.uint32)
    for p in parts:
        if not len(p.rows):
            continue
        table = _load(p)
        if table is None:
            raise OSError(f"{p.path}: the lengths table rank 0 wrote is not readable here; data.lengths_cache must "
                          "be a directory every rank sees (a shared filesystem)")
        values = table[p.rows]
        if (values == MISSING).any():  # another run rewrote the table meanwhile with fewer rows: not ours to trust
            raise OSError(f"{p.path}: rows are missing after the lengths were written (another run replaced the "
                          "file at the same time?); rerun")
        out[p.positions] = values
    return data.checked(out).tolist(), LengthStats(missing, cache)


def _share(total: int, rank: int, world_size: int) -> range:
    lo, hi = total * rank // world_size, total * (rank + 1) // world_size
    return range(lo, hi)


def _compute_share(data: Any, parts: list[_Part], work: list[np.ndarray], rank: int,
                   world_size: int) -> np.ndarray:
    """This rank's contiguous slice of the concatenated missing rows, tokenized in batches."""
    flat_part = np.concatenate([np.full(len(w), i, dtype=np.int64) for i, w in enumerate(work)])
    flat_row = np.concatenate(work).astype(np.int64)
    mine = _share(len(flat_row), rank, world_size)
    out = np.empty(len(mine), dtype=np.uint32)
    for lo in range(mine.start, mine.stop, _BATCH):
        hi = min(lo + _BATCH, mine.stop)
        for i in np.unique(flat_part[lo:hi]).tolist():
            sel = np.flatnonzero(flat_part[lo:hi] == i)
            records = parts[i].dataset.get_many(flat_row[lo:hi][sel].tolist())
            out[sel + (lo - mine.start)] = [data.record_length(r) for r, _ in records]
    return out


def _write(parts: list[_Part], work: list[np.ndarray], shares: list[np.ndarray], key: dict[str, Any]) -> None:
    values = np.concatenate(shares)
    o = 0
    for p, rows, t in zip(parts, work, [_load(p) for p in parts]):
        if not len(rows):
            o += len(rows)
            continue
        table = np.full(len(p.dataset), MISSING, dtype=np.uint32) if t is None else np.array(t)
        table[rows] = values[o:o + len(rows)]
        o += len(rows)
        p.path.parent.mkdir(parents=True, exist_ok=True)
        meta = p.path.with_suffix(".json")
        _replace(meta, lambda f: f.write(json.dumps({"dataset": str(p.dataset.root),
                                                     "dataset_key": dataset_key(p.dataset)} | key,
                                                    indent=1).encode()))
        _replace(p.path, lambda f, table=table: np.save(f, table, allow_pickle=False))


def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
