"""`mmdata validate`: a full re-check of a dataset, view or mixture: every shard against its checksums and index,
the manifest's counts, every record against the contract, every media file decoded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmdata.core.errors import DamagedData
from mmdata.core.media import MediaError, check_bytes
from mmdata.core.schema import Record, RecordError
from mmdata.format.integrity import check_shard
from mmdata.format.manifests import Manifest
from mmdata.format.names import index_name
from mmdata.read.dataset import Dataset
from mmdata.read.view import Mixture


# ---------------------------------------------------------------------------------------------- validate
@dataclass
class Problem:
    index: int
    id: str
    reason: str


@dataclass
class ValidationReport:
    records: int = 0
    media: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts_ok: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems and self.counts_ok


def _media_bytes(source: Any, record: Record, j: int) -> bytes:
    m = record.media[j]
    try:
        return source.media_bytes(record, j)
    except FileNotFoundError:
        raise MediaError(f"media[{j}] {m.path!r}: file not found") from None


def validate(ds: Dataset | Mixture, check_media: bool = True, progress: Iterator[int] | None = None) -> ValidationReport:
    """Check a dataset (or a mixture's datasets) end to end: every shard's size and sha256 against the manifest,
    index ↔ data consistency and counts, then every record's invariants, id uniqueness and (optionally) media.
    Damage is a problem naming the file and record, never an exception."""
    report = ValidationReport()
    readable = True
    for d in [ds] if isinstance(ds.manifest, Manifest) else getattr(ds, "datasets", []):
        readable = _check_files(d, report) and readable
    if not readable:
        report.problems.append(Problem(-1, "", "records were not read: an index does not match its shard (see "
                                               "above); rebuild the dataset"))
        return report
    ids: list[int] = []
    for i in progress if progress is not None else range(len(ds)):
        try:
            r, source = ds.get(i)
        except DamagedData as e:
            report.problems.append(Problem(i, "", e.problem))
            continue
        report.records += 1
        ids.append(int.from_bytes(hashlib.blake2b(r.id.encode(), digest_size=8).digest(), "little"))
        try:
            r.validate()
        except RecordError as e:
            report.problems.append(Problem(i, r.id, str(e)))
            continue
        if not check_media:
            continue
        for j, m in enumerate(r.media):
            report.media += 1
            try:
                w, h, _ = check_bytes(_media_bytes(source, r, j), f"media[{j}] {m.path!r}")
            except MediaError as e:
                report.problems.append(Problem(i, r.id, str(e)))
                continue
            if (w, h) != (m.width, m.height):
                report.problems.append(Problem(i, r.id, f"media[{j}] {m.path!r} is {w}x{h}, record says "
                                                        f"{m.width}x{m.height}"))
    hashes = np.sort(np.array(ids, dtype=np.uint64))
    dup = np.flatnonzero(hashes[1:] == hashes[:-1])
    if len(dup):
        report.problems.append(Problem(-1, "", f"{len(dup)} duplicate record id(s)"))
    return report


def _check_files(ds: Dataset, report: ValidationReport) -> bool:
    """Shard files and counts of one built dataset, into `report`; False when its records cannot be read safely
    (an index of the wrong length shifts every row after it)."""
    m = ds.manifest
    c = m.counts
    in_shards = sum(s.count for s in m.shards)
    if not (c["read"] == c["written"] + c["rejected"] and c["written"] == in_shards and
            all(s.read == s.count + s.rejected for s in m.shards)):
        report.counts_ok = False
    for s in m.shards:
        for problem in check_shard(ds.storage, {f: s.files[f] for f in m.formats if f in s.files}, s.count):
            report.problems.append(Problem(-1, "", f"{ds.root}/{problem}"))
    reader = ds.shards
    try:
        return all(len(ds.storage.read_bytes(index_name(name))) == 8 * n for name, n in zip(reader.names, reader.counts))
    except OSError:
        return False
