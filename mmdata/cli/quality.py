"""`mmdata dedup`, `mmdata decontaminate` and `mmdata card`: flags parsed here (the options' flags generated from
`mmdata.quality.options` by `mmdata.core.flags`), the work done by the library."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from mmdata.core.commands import STORAGE_OPTIONS, parse_storage_options, user_errors
from mmdata.core.flags import OptionsCommand, typed_command
from mmdata.format.names import REMOVED
from mmdata.quality.options import DecontaminateOptions, DedupOptions
from mmdata.storage.location import as_location, join


def _summary(where: str, manifest: object) -> None:
    out = as_location(where)
    counts, removed = manifest.counts, manifest.removed  # type: ignore[attr-defined]
    typer.echo(f"{out}: {counts['read']:,} read, {counts['kept']:,} kept, {counts['removed']:,} removed "
               f"(see {join(out, REMOVED)})")
    for source, reasons in removed.items():
        for reason, n in reasons.items():
            typer.echo(f"  {source}: {n:,} {reason}")


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_OUT = _param("out", str, typer.Option(..., "--out", "-o", help="The view to write: a directory or a URL "
                                     "(s3://bucket/prefix)"))
_STORAGE = _param("storage_options", Optional[str], STORAGE_OPTIONS)


def _dedup(opts: DedupOptions, inputs: list[Path], out: str, storage_options: str | None) -> None:
    """Drop duplicate records within and across inputs into a view (first occurrence kept; removed.jsonl says
    which record each removed one duplicates)."""
    from mmdata.quality.dedup import dedup as run

    _summary(out, run(inputs, out, opts, storage_options=parse_storage_options(storage_options)))


def _decontaminate(opts: DecontaminateOptions, inputs: list[Path], against: list[Path], out: str,
                   storage_options: str | None) -> None:
    """Drop training records whose images match an eval image or whose questions share an n-gram with an eval
    question, into a view with removed.jsonl; counts per source and eval set."""
    from mmdata.quality.decontaminate import decontaminate as run

    _summary(out, run(inputs, against, out, opts, parse_storage_options(storage_options)))


dedup = user_errors(typed_command(_dedup, {"opts": DedupOptions}, before=[
    _param("inputs", list[Path], typer.Argument(..., help="Datasets, views or mixtures; earlier ones win ties")),
    _OUT, _STORAGE]))
decontaminate = user_errors(typed_command(_decontaminate, {"opts": DecontaminateOptions}, before=[
    _param("inputs", list[Path], typer.Argument(..., help="Datasets, views or mixtures")),
    _param("against", list[Path], typer.Option(..., "--against", help="Eval set: a folder of images and/or a "
                                               "JSON/JSONL of questions (repeat for several)")),
    _OUT, _STORAGE]))


@user_errors
def card(
    path: Path = typer.Argument(..., help="A built dataset, view or mixture"),
    out: Path = typer.Option(..., "--out", "-o", help="Markdown file to write"),
    license: list[str] = typer.Option([], "--license", help="A licence to declare (for a dataset; a mixture's "
                                      "come from its recipe)"),
) -> None:
    """A Markdown datasheet: provenance, counts, reject and removal reasons, licences."""
    from mmdata.report.card import write_card

    typer.echo(f"card: {write_card(path, out, license)}")


def register(app: typer.Typer) -> None:
    app.command("dedup", help=_dedup.__doc__, cls=OptionsCommand)(dedup)
    app.command("decontaminate", help=_decontaminate.__doc__, cls=OptionsCommand)(decontaminate)
    app.command()(card)
