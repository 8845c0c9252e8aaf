"""The input side of dedup and decontamination: several datasets, views or mixtures as one numbered list of
positions, their signatures, and the view that keeps some of them (with `removed.jsonl` saying why not the rest).

Position p is (input, position in that input), numbered in the order the inputs were given: "first" in a keep rule
means lowest p. Each position resolves to a row of a built dataset (the "base" that holds its bytes); the same
dataset reached through two inputs is opened and hashed once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mmdata.core.errors import InputError
from mmdata.format.manifests import INDEX_DTYPE, VIEW_VERSION, ViewManifest, ViewSource
from mmdata.format.names import INDEX
from mmdata.format.views import write_view
from mmdata.quality.signatures import DatasetSignatures, SignatureParams, default_cache, signatures
from mmdata.read.dataset import Dataset
from mmdata.read.view import manifest_sha256, open_any
from mmdata.storage.location import Location, basename, relative
from mmdata.storage.output import open_destination

_ID_BATCH = 2048


@dataclass
class Removal:
    position: int  # the removed position
    reason: str  # the detailed reason (numbers included), for removed.jsonl
    kind: str  # the reason's category, for counts
    match: dict[str, Any]  # what it matched: a kept position ({"position": p}) or an eval item


def tool_versions(packages: tuple[str, ...] = ("mmdata", "imagehash", "datasketch")) -> dict[str, str]:
    """Installed versions of `packages` (those installed), for provenance."""
    from importlib import metadata

    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class Inputs:
    def __init__(self, paths: list[Path]) -> None:
        if not paths:
            raise InputError("no input: name at least one dataset, view or mixture")
        self.paths = [Path(p) for p in paths]
        names = [p.resolve().name for p in self.paths]
        self.names = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        self.bases: list[Dataset] = []
        by_root: dict[Path, int] = {}
        bases, rows, lengths = [], [], []
        for path in self.paths:
            sub_bases, index = open_any(path).flat()
            remap = np.empty(len(sub_bases), dtype=np.int64)
            for k, ds in enumerate(sub_bases):
                key = ds.root.resolve()
                if key not in by_root:
                    by_root[key] = len(self.bases)
                    self.bases.append(ds)
                remap[k] = by_root[key]
            bases.append(remap[index["dataset"].astype(np.int64)] if len(index) else np.zeros(0, np.int64))
            rows.append(index["row"].astype(np.int64))
            lengths.append(len(index))
        self.base = np.concatenate(bases)  # per position: which base dataset
        self.row = np.concatenate(rows)  # per position: row in that dataset
        self.starts = np.cumsum([0, *lengths])  # position of each input's first record
        self.sigs: list[DatasetSignatures] = []

    def __len__(self) -> int:
        return len(self.base)

    def input_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts[1:], positions, side="right")

    def load_signatures(self, cache: Path | None, params: SignatureParams, workers: int) -> None:
        self.sigs = signatures(self.bases, cache or default_cache(), params, workers)

    def gather(self, columns: list[np.ndarray], fill: Any = 0) -> np.ndarray:
        """A per-position array from one per-row array per base dataset."""
        out = np.full(len(self), fill, dtype=columns[0].dtype if columns else np.uint64)
        for d, col in enumerate(columns):
            where = np.flatnonzero(self.base == d)
            out[where] = col[self.row[where]]
        return out

    def ids(self, positions: np.ndarray) -> list[str]:
        """Record ids of `positions`, read in row order a batch at a time (each batch's shard maps released after
        it: memory does not grow with the number of shards touched)."""
        out = [""] * len(positions)
        base, row = self.base[positions], self.row[positions]
        for d, ds in enumerate(self.bases):
            where = np.flatnonzero(base == d)
            where = where[np.argsort(row[where], kind="stable")]
            for lo in range(0, len(where), _ID_BATCH):
                batch = where[lo:lo + _ID_BATCH]
                for k, data in zip(batch.tolist(), ds.raw_many(row[batch])):
                    out[k] = ds.decode(data).id
                ds.close()
        return out

    def where(self, p: int, record_id: str) -> dict[str, Any]:
        k = int(self.input_of(np.array([p]))[0])
        return {"source": self.names[k], "position": p - int(self.starts[k]), "id": record_id}

    def write(self, out: Location, kind: str, params: dict[str, Any], removals: list[Removal],
              storage_options: dict[str, Any] | None = None) -> ViewManifest:
        """The view keeping every position not in `removals`, in input order, and its `removed.jsonl`, written to
        `out` (a local folder or a URL; `storage_options`: its credentials)."""
        removals = sorted(removals, key=lambda r: r.position)
        gone = np.array([r.position for r in removals], dtype=np.int64)
        keep = np.ones(len(self), dtype=bool)
        keep[gone] = False
        kept = np.flatnonzero(keep)
        index = np.empty(len(kept), dtype=INDEX_DTYPE)
        source = self.input_of(kept)
        index["dataset"] = source
        index["row"] = kept - self.starts[source]
        matched = np.array([r.match["position"] for r in removals if "position" in r.match], dtype=np.int64)
        ids = dict(zip(np.concatenate([gone, matched]).tolist(), self.ids(np.concatenate([gone, matched]))))
        lines, reasons = [], {name: Counter[str]() for name in self.names}
        for r in removals:
            match = r.match
            if "position" in match:
                match = {"kept": self.where(match["position"], ids[match["position"]])}
            entry = {**self.where(r.position, ids[r.position]), "reason": r.reason, "kind": r.kind, **match}
            reasons[entry["source"]][r.kind] += 1
            lines.append(orjson.dumps(entry) + b"\n")
        dest = open_destination(out, storage_options)
        manifest = ViewManifest(
            version=VIEW_VERSION, kind=kind, total=len(kept), index=INDEX, name=basename(dest.location),
            sources=[view_source(name, path, dest.location) for name, path in zip(self.names, self.paths)],
            params={**params, "versions": tool_versions()},
            counts={"read": len(self), "kept": len(kept), "removed": len(removals)},
            removed={name: dict(sorted(c.items())) for name, c in reasons.items()})
        write_view(dest, manifest, index, iter(lines))
        return manifest


def view_source(name: str, root: Path, out: Location) -> ViewSource:
    """The manifest entry of source `root` of a view written to `out` (absolute): where it is and which build of
    it."""
    root = root.resolve()
    return ViewSource(name=name, path=relative(root, out), abs_path=str(root), length=len(open_any(root)),
                      dataset_sha256=manifest_sha256(root))
