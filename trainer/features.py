"""Cached vision features: every image of a mixture encoded once by the frozen tower, then read by both stages.

    mmtrain cache-features --config RECIPE --out DIR [--dtype bfloat16] [--batch-size 16]

    DIR/manifest.json      what the features depend on (tower weights, select layer, reduction, N, normalisation,
                           aspect mode and processor), their dtype and shard size; `complete` once every shard is in
    DIR/shard-00000.npy    (rows, N, D) reduced and normalised image tokens (bfloat16 stored as uint16)
    DIR/shard-00000.json   one entry per record: [dataset key, record id, first row, images, failure or null]

A record is keyed by its dataset (a hash of the dataset's manifest: a rebuilt dataset's rows may mean other
records, so its keys change) and its id; rows are its media in order, so (record, media position) finds a row.
Records are taken in mixture order, each key once, and a shard closes after `shard_images` planned rows (planned
from the record's media count, without reading an image): shard s always holds the same records, so an
interrupted run resumes by skipping the shards on disk (each written under a temporary name, then renamed).
An image that fails to load marks its record failed (reason kept); training skips that record with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmdata.core.errors import InputError, NotFound

MANIFEST = "manifest.json"
VERSION = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_STORED = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}  # numpy has no bfloat16
_CHUNK = 1024  # records resolved per mixture lookup while walking


def settings(model: Any) -> dict[str, Any]:
    """Everything a cached feature depends on; a cache built under other settings is refused."""
    c = model.config
    return feature_settings(model.vision, model.processor, select_layer=c.mm_vision_select_layer,
                            reduction=c.token_reduction, num_image_tokens=c.num_image_tokens,
                            normalize=c.normalize_vision, aspect=c.image_aspect_ratio)


def feature_settings(tower: Any, processor: Any, *, select_layer: int, reduction: str, num_image_tokens: int,
                     normalize: bool, aspect: str) -> dict[str, Any]:
    """`settings` from the parts themselves: what the visualizer, which has a tower but no unified model, checks."""
    return {"tower_sha256": tower_hash(tower), "mm_vision_select_layer": select_layer,
            "token_reduction": reduction, "num_image_tokens": num_image_tokens, "normalize_vision": normalize,
            "image_aspect_ratio": aspect, "processor": json.loads(json.dumps(dataclasses.asdict(processor))),
            "feature_dim": tower.hidden_size}


def tower_hash(tower: torch.nn.Module) -> str:
    """Hash of the tower's weights rounded to bfloat16: the base tower and a bf16 run's export of it agree."""
    h = hashlib.sha256()
    for name, t in sorted(tower.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:32]


def dataset_key(dataset: Any) -> str:
    """A short form of a dataset's identity, the sha256 of its manifest, on any backend ("" for records that are
    not a built dataset's, e.g. a `RecordList`)."""
    return getattr(dataset, "manifest_sha256", "")[:16]


def _pairs(source: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """(record, dataset) for every position: a Mixture knows each record's dataset, a Dataset is its own."""
    get_many = getattr(source, "get_many", None)
    for lo in range(0, len(source), _CHUNK):
        idx = list(range(lo, min(lo + _CHUNK, len(source))))
        yield from get_many(idx) if get_many is not None else ((source[i], source) for i in idx)


def _plan(source: Sequence[Any], shard_images: int) -> Iterator[list[tuple[Any, Any, str]]]:
    """Shards of distinct records (record, dataset, key), each about `shard_images` planned rows."""
    seen: set[tuple[str, str]] = set()
    shard: list[tuple[Any, Any, str]] = []
    rows = 0
    for record, dataset in _pairs(source):
        key = dataset_key(dataset)
        if (key, record.id) in seen or not record.media:
            continue
        seen.add((key, record.id))
        shard.append((record, dataset, key))
        rows += len(record.media)
        if rows >= shard_images:
            yield shard
            shard, rows = [], 0
    if shard:
        yield shard


def build_cache(model: Any, source: Sequence[Any], out: str | Path, *, dtype: str | None = None,
                batch_size: int = 16, shard_images: int = 2048, progress: bool = True) -> dict[str, Any]:
    """Encode every image of `source` (a Mixture or Dataset) with `model`'s tower into `out`; resumable."""
    out = Path(out)
    dtype = dtype or model.config.dtype
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    head = {"version": VERSION, "settings": settings(model), "dtype": dtype, "shard_images": shard_images}
    manifest = out / MANIFEST
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        diff = _differences({k: old.get(k) for k in head}, head)
        if diff:
            raise InputError(f"{out} holds a feature cache built with other settings ({diff}); pass another --out, "
                             "or delete it to rebuild")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(manifest, head | {"complete": False})
    model.eval()
    shards, counts = [], {"records": 0, "images": 0, "failed_records": 0}
    bar = _bar(progress)
    for s, records in enumerate(_plan(source, shard_images)):
        name = f"shard-{s:05d}"
        if not (out / f"{name}.json").is_file():
            _encode_shard(model, records, out / name, dtype, batch_size)
        entries = json.loads((out / f"{name}.json").read_text())
        counts["records"] += len(entries)
        counts["images"] += sum(e[3] for e in entries if e[4] is None)
        counts["failed_records"] += sum(e[4] is not None for e in entries)
        shards.append(name)
        if bar is not None:
            bar.update(len(records))
    if bar is not None:
        bar.close()
    summary = head | {"complete": True, "shards": shards, "counts": counts}
    _write_json(manifest, summary)
    return summary


def _encode_shard(model: Any, records: list[tuple[Any, Any, str]], base: Path, dtype: str, batch_size: int) -> None:
    n_rows = sum(len(r.media) for r, _, _ in records)
    shape = (n_rows, model.num_image_tokens, model.vision.hidden_size)
    tmp = base.with_name(base.name + ".tmp.npy")
    rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=_STORED[dtype], shape=shape)
    entries: list[list[Any]] = []
    pending: list[tuple[int, torch.Tensor]] = []  # (row, pixels) waiting for a full batch

    def flush() -> None:
        if not pending:
            return
        with torch.no_grad():
            pixels = torch.stack([p for _, p in pending]).to(next(model.vision.parameters()).device)
            feats = model.encode_images(pixels).to(DTYPES[dtype]).cpu()
        arr = (feats.view(torch.int16) if dtype == "bfloat16" else feats).numpy()
        for (row, _), f in zip(pending, arr):
            rows[row] = f.view(rows.dtype)
        pending.clear()

    row = 0
    for record, dataset, key in records:
        n = len(record.media)
        try:
            pixels = [model.processor(dataset.image(record, j)) for j in range(n)]
        except (OSError, ValueError) as e:  # a broken file: recorded, and training skips the record with the reason
            entries.append([key, record.id, row, n, f"{type(e).__name__}: {e}"])
        else:
            entries.append([key, record.id, row, n, None])
            for j, p in enumerate(pixels):
                pending.append((row + j, p))
                if len(pending) >= batch_size:
                    flush()
        row += n
    flush()
    rows.flush()
    os.replace(tmp, base.with_suffix(".npy"))
    _write_json(base.with_suffix(".json"), entries)  # last: its presence marks the shard complete


class FeatureStore:
    """Read side: `load(record, dataset, n)` → (n, N, D) features of the record's first n images."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root, self.manifest = root, manifest
        self.dtype: str = manifest["dtype"]
        self._index: dict[tuple[str, str], tuple[int, int, int, str | None]] | None = None
        self._arrays: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, root: str | Path, model: Any) -> FeatureStore:
        """Open a complete cache and check it was made by this model's tower, reduction and aspect mode."""
        return cls.open_for(root, settings(model), fix="rebuild it with `mmtrain cache-features` for this "
                            "recipe's model, or drop data.vision_features")

    @classmethod
    def open_for(cls, root: str | Path, expected: dict[str, Any], *, fix: str) -> FeatureStore:
        """Open a complete cache whose manifest settings equal `expected` (see `feature_settings`)."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise NotFound(f"data.vision_features {root}: no {MANIFEST}; build it with `mmtrain "
                                    f"cache-features --config RECIPE --out {root}`")
        manifest = json.loads(path.read_text())
        if manifest.get("version") != VERSION:
            raise InputError(f"{path}: feature cache version {manifest.get('version')} is not {VERSION}; rebuild it")
        if not manifest.get("complete"):
            raise InputError(f"{path}: the cache is incomplete (cache-features was interrupted); re-run the same "
                             "`mmtrain cache-features` command to finish it")
        diff = _differences(manifest["settings"], expected)
        if diff:
            raise InputError(f"data.vision_features {root} was built for another vision setup ({diff}); {fix}")
        return cls(root, manifest)

    def _lookup(self) -> dict[tuple[str, str], tuple[int, int, int, str | None]]:
        if self._index is None:
            index = {}
            for s, name in enumerate(self.manifest["shards"]):
                for key, rid, row, n, failed in json.loads((self.root / f"{name}.json").read_text()):
                    index[(key, rid)] = (s, row, n, failed)
            self._index = index
        return self._index

    def load(self, record: Any, dataset: Any, n: int) -> torch.Tensor:
        entry = self._lookup().get((dataset_key(dataset), record.id))
        if entry is None:
            raise InputError(f"record {record.id!r} is not in the feature cache {self.root} (built from another "
                             "mixture, or its dataset was rebuilt since); re-run `mmtrain cache-features`")
        s, row, count, failed = entry
        if failed is not None:
            raise InputError(f"record {record.id!r}: its image failed when the cache was built: {failed}")
        if n > count:
            raise InputError(f"record {record.id!r}: {n} images asked, {count} cached")
        if s not in self._arrays:
            self._arrays[s] = np.load(self.root / f"{self.manifest['shards'][s]}.npy", mmap_mode="r")
        t = torch.from_numpy(np.array(self._arrays[s][row:row + n]))
        return t.view(torch.bfloat16) if self.dtype == "bfloat16" else t

    def __getstate__(self) -> dict[str, Any]:  # dataloader workers re-open the memory maps
        return self.__dict__ | {"_arrays": {}}


def cache_features(recipe: Any, out: str | Path, *, dtype: str | None = None, batch_size: int = 16,
                   progress: bool = True) -> dict[str, Any]:
    """`mmtrain cache-features`: the recipe's model (built or `init_from`) over the recipe's mixture."""
    import mmdata
    from trainer.engine import base_model

    if "vision" in recipe.stage_config.trainable:
        raise InputError("the recipe trains the vision tower ('vision' in trainable): its features change every "
                         "step, so they cannot be cached")
    if recipe.train.cpu_threads is not None:
        torch.set_num_threads(recipe.train.cpu_threads)
    model = base_model(recipe).model
    if torch.cuda.is_available():
        model.vision.to("cuda")
    return build_cache(model, mmdata.open(recipe.data.mixture), out, dtype=dtype, batch_size=batch_size,
                       progress=progress)


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
    keys = [k for k in now if saved.get(k) != now[k]]
    return "; ".join(f"{k}: cache {saved.get(k)!r}, now {now[k]!r}" for k in keys)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="cache-features", unit="record", dynamic_ncols=True)
