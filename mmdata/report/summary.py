"""Look at a dataset in the terminal: counts, the per-task and per-source tables, a record as a panel, and
length/media statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmdata.core.schema import Record
from mmdata.format.manifests import ViewManifest


# ---------------------------------------------------------------------------------------------- summary
def summary_table(ds: Any) -> list[Any]:
    """Rich renderables: counts and the per-task / per-source breakdown (from the manifest when there is one)."""
    from rich.table import Table

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
