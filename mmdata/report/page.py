"""A visual report of a dataset, view or mixture: one self-contained HTML file (plots and thumbnails inlined).

Plots (`mmdata.report.plots`: records per task and source, text lengths, image sizes, media per record, reject or removal
reasons), counts and breakdowns, the most common reject reasons, and a seeded sample of records drawn per task,
each shown as its conversation with every `<image>` replaced by the picture it stands for: inputs framed blue,
generation targets framed orange — so a wrong side, a wrong order or a bad crop is visible at a glance.
"""

from __future__ import annotations

import base64
import html
import io
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mmdata.core.schema import IMAGE, Record
from mmdata.format.manifests import Manifest, MixtureManifest, ViewManifest
from mmdata.format.names import REJECTS
from mmdata.read.dataset import Dataset
from mmdata.read.view import View
from mmdata.report.plots import figures, figures_html
from mmdata.storage.base import Storage

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.rec{border:1px solid #ccc;border-radius:6px;padding:10px;margin:12px 0}
.hdr{color:#555;font-size:12px;margin-bottom:6px}.turn{margin:4px 0;white-space:pre-wrap}
.role{font-weight:600;margin-right:6px}.human{color:#0b5cad}.gpt{color:#18794e}.system{color:#8a3ffc}
img{max-height:128px;max-width:192px;vertical-align:middle;margin:2px;border:3px solid}
figure.plot{display:inline-block;margin:6px;vertical-align:top}figure.plot svg{width:460px;height:auto}
figcaption{font-weight:600;font-size:13px}
img.input{border-color:#3b82f6}img.target{border-color:#f59e0b}.cap{font-size:11px;color:#666}
"""


def _thumb(image: Any, size: int = 192) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _record_html(index: int, record: Record, source: Dataset) -> str:
    roles = record.media_roles()
    counter = iter(range(len(record.media)))
    parts = [f'<div class="rec"><div class="hdr">[{index}] <b>{html.escape(record.id)}</b> · '
             f"{html.escape(record.source)} / {html.escape(record.task)} · {len(record.media)} media</div>"]
    for turn in record.conversations:
        pieces = turn.value.split(IMAGE)
        body = html.escape(pieces[0])
        for piece in pieces[1:]:
            j = next(counter)
            m = record.media[j]
            when = f" t={m.t:.1f}s" if m.t is not None else ""
            try:
                data = _thumb(source.image(record, j))
                tag = (f'<img class="{roles[j]}" src="data:image/jpeg;base64,{data}" '
                       f'title="{html.escape(m.path)} {m.width}x{m.height}{when}">')
            except (OSError, ValueError) as e:
                tag = f"<span class=cap>[media {j} unreadable: {html.escape(str(e))}]</span>"
            body += f"{tag}<span class=cap>{roles[j]}{when}</span>" + html.escape(piece)
        parts.append(f'<div class="turn"><span class="role {turn.role}">{turn.role}</span>{body}</div>')
    parts.append("</div>")
    return "".join(parts)


def _table(rows: list[tuple[str, Any]], head: tuple[str, str]) -> str:
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{head[0]}</th><th>{head[1]}</th></tr>{cells}</table>"


def _reject_reasons(storage: Storage, top: int = 10) -> list[tuple[str, int]]:
    if not storage.exists(REJECTS):
        return []
    import orjson

    reasons: Counter[str] = Counter()
    with storage.stream(REJECTS) as f:
        for line in f:
            reason = orjson.loads(line)["reason"]
            # group by the reason's shape, not its particulars (paths, ids, numbers)
            reasons[re.sub(r"'[^']*'|\d+", "…", reason)[:160]] += 1
    return reasons.most_common(top)


def sample_indices(ds: Any, n: int, seed: int) -> list[int]:
    """Up to `n` indices, spread over tasks: a seeded scan of at most 20·n records, then round-robin per task."""
    rng = random.Random(seed)
    total = len(ds)
    scan = rng.sample(range(total), min(total, 20 * n))
    by_task: dict[str, list[int]] = {}
    for i in scan:
        by_task.setdefault(ds[i].task, []).append(i)
    chosen: list[int] = []
    while len(chosen) < min(n, len(scan)):
        for task in sorted(by_task):
            if by_task[task] and len(chosen) < n:
                chosen.append(by_task[task].pop())
    return sorted(chosen)


def removal_reasons(manifest: ViewManifest) -> list[tuple[str, int]]:
    """A view's removals as ("source: reason", records), most common first."""
    rows = [(f"{source}: {reason}", n) for source, reasons in manifest.removed.items() for reason, n in reasons.items()]
    return sorted(rows, key=lambda kv: (-kv[1], kv[0]))


def _manifest_html(storage: Storage, manifest: Manifest | MixtureManifest | ViewManifest) -> list[str]:
    if isinstance(manifest, ViewManifest):  # what was kept of each input, and why the rest was not
        rows = [(src.name, f"{src.length:,} records ({src.path})") for src in manifest.sources]
        return [f"<p>{html.escape(manifest.kind)} view</p>", _table(list(manifest.counts.items()), ("count", "value")),
                "<h2>Inputs</h2>" + _table(rows, ("source", "records")),
                "<h2>Removed, per source and reason</h2>" + _table(removal_reasons(manifest), ("reason", "records"))]
    if isinstance(manifest, MixtureManifest):  # what each dataset contributes
        rows = [(src.name, f"{src.count:,} ({100 * src.proportion:.1f} %, {src.epochs:.2f} epochs)")
                for src in manifest.sources]
        return ["<h2>Sources</h2>" + _table(rows, ("dataset", "samples"))] + [
            f"<p class=cap>warning: {html.escape(warning)}</p>" for warning in manifest.warnings]
    sections = [_table(list(manifest.counts.items()), ("count", "value")),
                "<h2>Per task</h2>" + _table(sorted(manifest.tasks.items(), key=lambda kv: -kv[1]), ("task", "records"))]
    reasons = _reject_reasons(storage)
    if reasons:
        sections.append("<h2>Most common reject reasons</h2>" + _table(reasons, ("reason", "rejects")))
    return sections


def write_report(ds: Dataset | View, out: Path, n: int = 24, seed: int = 0) -> Path:
    if isinstance(ds.manifest, ViewManifest):
        reasons = [("Removal reasons", removal_reasons(ds.manifest))]
    elif isinstance(ds.manifest, Manifest):
        reasons = [("Reject reasons", _reject_reasons(ds.storage))]
    else:
        reasons = []
    sections = [f"<h1>{html.escape(str(ds.root))}</h1>", f"<p>{len(ds):,} records</p>",
                "<h2>At a glance</h2>", figures_html(figures(ds, reasons)), *_manifest_html(ds.storage, ds.manifest)]
    picked = sample_indices(ds, n, seed) if len(ds) else []
    sections.append(f"<h2>{len(picked)} sampled records (seed {seed})</h2>"
                    "<p class=cap>blue frame: input image · orange frame: generation target</p>")
    sections.extend(_record_html(i, *ds.get(i)) for i in picked)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>mmdata report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
