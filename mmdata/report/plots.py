"""The report's plots, drawn with matplotlib and inlined as SVG: what a dataset holds, at a glance.

Counts per task and per source are exact (from the manifests and the index); length, size and media histograms are
drawn from an evenly spaced sample of records (`SAMPLE`). Each plot is one `<figure class="plot" id="plot-…">`.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from mmdata.read.view import View
from mmdata.report.summary import Measurements, measure

SAMPLE = 20_000  # records measured for the histograms


_BLUE, _GREEN, _ORANGE = "#3b82f6", "#18794e", "#f59e0b"


def sample_positions(n: int, k: int = SAMPLE) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, k)).astype(np.int64)) if n else np.zeros(0, np.int64)


def _svg(draw: Callable[[Any], None], width: float = 6.4, height: float = 3.0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.hashsalt": "mmdata", "svg.fonttype": "none", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(width, height))
        try:
            draw(ax)
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return buf.getvalue()[buf.getvalue().index("<svg"):]  # inline: no XML prolog, no DOCTYPE


def _bars(counts: dict[str, int], xlabel: str, color: str = _BLUE, top: int = 15) -> Callable[[Any], None]:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top][::-1]

    def draw(ax: Any) -> None:
        labels = [k if len(k) <= 60 else k[:57] + "…" for k, _ in items]
        ax.barh(labels, [v for _, v in items], color=color)
        ax.set_xlabel(xlabel)
        for y, (_, v) in enumerate(items):
            ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    return draw


def _hist(series: dict[str, list[int]], xlabel: str) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        values = [v for vs in series.values() for v in vs]
        hi = max(max(values, default=1), 1)
        bins = np.unique(np.geomspace(1, hi + 1, 40).astype(int)) if hi > 50 else np.arange(0, hi + 2)
        for (label, vs), color in zip(series.items(), (_BLUE, _GREEN, _ORANGE)):
            ax.hist(np.asarray(vs) + (1 if hi > 50 else 0), bins=bins, alpha=0.6, label=f"{label} ({len(vs):,})",
                    color=color)
        if hi > 50:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("records")
        ax.legend()
    return draw


def figures(ds: Any, reasons: list[tuple[str, list[tuple[str, int]]]]) -> list[tuple[str, str, str]]:
    """(id, title, svg) of each plot that has something to show. `reasons`: (title, [(reason, count)]) tables."""
    m: Measurements = measure(ds, sample_positions(len(ds)).tolist())
    exact = getattr(ds.manifest, "tasks", None)  # a dataset's manifest counts every record
    tasks = dict(exact) if exact else dict(m.tasks)
    by_source: dict[str, int]
    if isinstance(ds, View):  # a view or mixture: records per source, from its index
        counts = np.bincount(np.asarray(ds.index["dataset"]), minlength=len(ds.names))
        by_source = dict(zip(ds.names, counts.tolist()))
    else:
        by_source = dict(ds.manifest.sources) or dict(m.sources)
    of = "" if exact and len(ds) <= SAMPLE else f" (sample of {m.records:,})"
    out = [("tasks", "Records per task" + ("" if exact else of), _bars(tasks, "records")),
           ("sources", "Records per source", _bars(by_source, "records", _GREEN)),
           ("text-length", f"Characters per record and role{of}", _hist({"human": m.human, "gpt": m.gpt}, "characters")),
           ("media-per-record", f"Media per record{of}", _bars(
               {str(k): v for k, v in sorted(Counter(m.media).items())}, "records", _ORANGE))]
    if m.widths:
        out.append(("image-size", f"Image sizes{of}", _hist({"width": m.widths, "height": m.heights}, "pixels")))
    for title, table in reasons:
        if table:
            out.append((_slug(title), title, _bars(dict(table), "records", "#b91c1c")))
    return [(pid, title, _svg(draw)) for pid, title, draw in out]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def figures_html(figs: list[tuple[str, str, str]]) -> str:
    return "".join(f'<figure class="plot" id="plot-{pid}"><figcaption>{html.escape(title)}</figcaption>{svg}</figure>'
                   for pid, title, svg in figs)
