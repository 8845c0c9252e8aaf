"""`mmdata card PATH --out CARD.md`: a Markdown datasheet of a dataset, view or mixture.

Provenance (what it was made from, by which builder or command, with which flags, and the versions of the tools
now), counts, tasks and sources, the most common reject and removal reasons, and licences: those the recipe
declares (`license:` per source and for the mixture) and any given with `--license`. Sources of a view or mixture
are described one level down, so the card says where every record comes from.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from mmdata.format.manifests import Manifest, MixtureManifest, ViewManifest
from mmdata.format.names import REMOVED
from mmdata.quality.selection import tool_versions
from mmdata.read.dataset import Dataset
from mmdata.read.view import View, open_any
from mmdata.report.page import _reject_reasons, removal_reasons

_PACKAGES = ("mmdata", "numpy", "pillow", "imagehash", "datasketch", "matplotlib")


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _versions() -> list[tuple[str, str]]:
    return [("python", platform.python_version()), *tool_versions(_PACKAGES).items()]


def _kind(ds: Dataset | View) -> str:
    if isinstance(ds.manifest, MixtureManifest):
        return "mixture"
    return f"{ds.manifest.kind} view" if isinstance(ds.manifest, ViewManifest) else "dataset"


def _one_line(root: Path) -> str:
    ds = open_any(root)
    what = f"builder `{ds.manifest.builder}`" if isinstance(ds, Dataset) else _kind(ds)
    return f"{len(ds):,} records, {what}"


def _provenance(ds: Dataset | View) -> list[str]:
    m = ds.manifest
    if isinstance(m, Manifest):
        return [f"- builder: `{m.builder}`", f"- formats: {', '.join(m.formats)}; shard size {m.shard_size:,}",
                f"- media root: `{m.media_root}`",
                "- flags:\n\n```json\n" + json.dumps(m.args, indent=2, sort_keys=True) + "\n```"]
    lines = []
    if isinstance(m, MixtureManifest):
        lines += [f"- recipe: `{m.recipe_file}` (sha256 `{m.recipe_sha256[:16]}…`), seed {m.seed}",
                  "- recipe as resolved:\n\n```json\n" + json.dumps(m.recipe, indent=2, sort_keys=True) + "\n```"]
    else:
        lines += [f"- made by `mmdata {m.kind}` with:\n\n```json\n" + json.dumps(m.params, indent=2, sort_keys=True)
                  + "\n```"]
    lines.append("\n" + _table(("source", "path", "what it is"),
                               [(s.name, s.abs_path, _one_line(Path(s.abs_path))) for s in m.sources]))
    return lines


def _licences(ds: Dataset | View, declared: list[str]) -> list[tuple[str, str]]:
    rows = [("(declared)", x) for x in declared]
    m = ds.manifest
    if isinstance(m, MixtureManifest):
        if m.recipe.get("license"):
            rows.append(("(mixture)", str(m.recipe["license"])))
        for spec, src in zip(m.recipe.get("sources", []), m.sources):
            rows.append((src.name, str(spec.get("license") or "not declared")))
    return rows


def card_markdown(path: str | Path, licenses: list[str] | None = None) -> str:
    ds = open_any(path)
    m = ds.manifest
    name = Path(path).resolve().name
    out = [f"# {name}", "", f"A {_kind(ds)} of {len(ds):,} records.", "", "## Provenance", "", *_provenance(ds), "",
           "Versions of the tools that wrote this card:", "", _table(("package", "version"), _versions()), "",
           "## Counts", ""]
    if isinstance(m, Manifest):
        out += [_table(("count", "records"), list(m.counts.items())), "", "### Tasks", "",
                _table(("task", "records"), sorted(m.tasks.items(), key=lambda kv: -kv[1])), "", "### Sources", "",
                _table(("source", "records"), sorted(m.sources.items(), key=lambda kv: -kv[1]))]
        reasons = _reject_reasons(ds.storage)
        out += ["", "## Reject reasons (most common)", "",
                _table(("reason", "records"), reasons) if reasons else "No record was rejected."]
    elif isinstance(m, MixtureManifest):
        out.append(_table(("source", "records", "share", "epochs"),
                          [(s.name, f"{s.count:,}", f"{s.proportion:.2%}", f"{s.epochs:.2f}") for s in m.sources]))
        filtered = [(s.name, name, n) for s in m.sources for name, n in s.filtered.items()]
        if filtered:
            out += ["", "### Removed by the recipe's filters", "", _table(("source", "filter", "records"), filtered)]
    else:
        out += [_table(("count", "records"), list(m.counts.items())), "", "## Removal reasons", "",
                _table(("source: reason", "records"), removal_reasons(m)) if m.counts.get("removed")
                else "No record was removed.", "", f"Every removed record and what it matched: `{REMOVED}`."]
    rows = _licences(ds, licenses or [])
    out += ["", "## Licences", "", _table(("applies to", "licence"), rows) if rows else
            "None declared: pass `--license`, or declare `license:` in the mixture recipe.", ""]
    return "\n".join(out)


def write_card(path: str | Path, out: str | Path, licenses: list[str] | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(card_markdown(path, licenses), encoding="utf-8")
    return out
