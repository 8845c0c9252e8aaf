"""Look at a dataset: a pandas frame, a terminal summary, length/media statistics, and a full re-validation."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmdata.errors import DamagedData
from mmdata.integrity import check_shard
from mmdata.layout import index_name
from mmdata.manifest import Manifest
from mmdata.media import MediaError, check_bytes
from mmdata.schema import Record, RecordError

if TYPE_CHECKING:
    from mmdata.dataset import Dataset
    from mmdata.mixture import Mixture


def records_frame(records: Sequence[Record], limit: int | None = None, dataset: Any = None) -> Any:
    """One row per record: id, source, task, n_media, n_turns, human, gpt (first turns) and the raw record dict.

    `dataset`, when given, is a callable i -> dataset name, added as a `dataset` column (mixtures).
    """
    import pandas as pd

    n = len(records) if limit is None else min(limit, len(records))
    rows = []
    for i in range(n):
        r = records[i]
        row = {"id": r.id, "source": r.source, "task": r.task, "n_media": len(r.media),
               "n_targets": len(r.targets()), "n_turns": len(r.conversations),
               "human": r.first_text("human"), "gpt": r.first_text("gpt"), "record": r.to_dict()}
        if dataset is not None:
            row = {"dataset": dataset(i), **row}
        rows.append(row)
    columns = (["dataset"] if dataset is not None else []) + ["id", "source", "task", "n_media", "n_targets",
                                                              "n_turns", "human", "gpt", "record"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------- summary
def summary_table(ds: Any) -> list[Any]:
    """Rich renderables: counts and the per-task / per-source breakdown (from the manifest when there is one)."""
    from rich.table import Table

    from mmdata.view import ViewManifest

    out: list[Any] = []
    manifest = getattr(ds, "manifest", None)
    counts = getattr(manifest, "counts", None)
    head = Table(title=str(getattr(ds, "root", "")), show_header=False)
    head.add_row("records", f"{len(ds):,}")
    if isinstance(manifest, ViewManifest):
        head.add_row(f"{manifest.kind} view: read / kept / removed",
                     f"{counts['read']:,} / {counts['kept']:,} / {counts['removed']:,}")
        head.add_row("sources", ", ".join(s.name for s in manifest.sources))
    elif counts:
        head.add_row("read / written / rejected",
                     f"{counts['read']:,} / {counts['written']:,} / {counts['rejected']:,}")
        head.add_row("builder", manifest.builder)
        head.add_row("formats", ", ".join(manifest.formats))
        head.add_row("media root", str(manifest.media_root))
        head.add_row("shards", str(len(manifest.shards)))
    out.append(head)
    tasks = getattr(manifest, "tasks", None)
    sources = getattr(manifest, "sources", None)
    if not tasks:
        sample = [ds[i] for i in range(min(len(ds), 10_000))]
        tasks, sources = Counter(r.task for r in sample), Counter(r.source for r in sample)
    for title, table in (("task", tasks), ("source", sources)):
        t = Table(title=f"per {title}")
        t.add_column(title)
        t.add_column("records", justify="right")
        t.add_column("share", justify="right")
        total = sum(table.values()) or 1
        for k, v in sorted(table.items(), key=lambda kv: -kv[1]):
            t.add_row(k, f"{v:,}", f"{100 * v / total:.1f} %")
        out.append(t)
    return out


def record_panel(record: Record, index: int) -> Any:
    """A record pretty-printed: its turns (targets marked) and its media with role, size and time."""
    from rich.panel import Panel
    from rich.text import Text

    text = Text()
    for turn in record.conversations:
        style = {"human": "cyan", "gpt": "green", "system": "magenta"}.get(turn.role, "white")
        text.append(f"{turn.role}: ", style=f"bold {style}")
        text.append(turn.value + "\n")
    for j, (m, role) in enumerate(zip(record.media, record.media_roles())):
        when = f" t={m.t:.2f}s" if m.t is not None else ""
        text.append(f"  media[{j}] {role:<6} {m.kind} {m.width}x{m.height}{when}  {m.path}\n", style="dim")
    if record.meta:
        keys = ", ".join(sorted(record.meta))
        text.append(f"  meta: {keys}\n", style="dim")
    return Panel(text, title=f"[{index}] {record.id}  ({record.source} / {record.task})", expand=False)


# ---------------------------------------------------------------------------------------------- stats
def _describe(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0, "p50": 0, "p95": 0, "max": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


@dataclass
class Measurements:
    """Per-record values of some records of a dataset (what `stats` summarizes and the report plots)."""

    records: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    roles: Counter[str] = field(default_factory=Counter)
    turns: list[int] = field(default_factory=list)
    media: list[int] = field(default_factory=list)
    human: list[int] = field(default_factory=list)  # characters of the human turns
    gpt: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)


def measure(ds: Any, positions: Iterable[int]) -> Measurements:
    m = Measurements()
    for i in positions:
        r = ds[i]
        m.records += 1
        m.tasks[r.task] += 1
        m.sources[r.source] += 1
        m.turns.append(len(r.conversations))
        m.media.append(len(r.media))
        m.human.append(sum(len(t.value) for t in r.conversations if t.role == "human"))
        m.gpt.append(sum(len(t.value) for t in r.conversations if t.role == "gpt"))
        m.roles.update(r.media_roles())
        m.widths.extend(x.width for x in r.media)
        m.heights.extend(x.height for x in r.media)
    return m


def stats(ds: Any, limit: int | None = None) -> dict[str, Any]:
    """Counts, text lengths (characters) per role, turns and media per record, and media sizes."""
    m = measure(ds, range(len(ds) if limit is None else min(limit, len(ds))))
    return {
        "records": m.records,
        "tasks": dict(m.tasks),
        "media": {"total": sum(m.media), "inputs": m.roles["input"], "targets": m.roles["target"]},
        "turns_per_record": _describe(m.turns),
        "media_per_record": _describe(m.media),
        "human_chars": _describe(m.human),
        "gpt_chars": _describe(m.gpt),
        "media_width": _describe(m.widths),
        "media_height": _describe(m.heights),
    }


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
