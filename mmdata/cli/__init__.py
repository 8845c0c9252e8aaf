"""The `mmdata` command line. Each command parses its flags and calls one library function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from mmdata.cli import build as build_cli
from mmdata.cli import quality as quality_cli
from mmdata.core.commands import STORAGE_OPTIONS, parse_storage_options, user_errors
from mmdata.core.flags import recipe_command
from mmdata.core.options import parse_overrides
from mmdata.mix.recipe import MixRecipe
from mmdata.storage.location import basename, is_url

app = typer.Typer(
    name="mmdata",
    help="Turn raw multimodal sources into clean, training-ready conversation datasets; inspect and mix them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
build_cli.register_builders()
app.add_typer(build_cli.app, name="build")
console = Console()
DATASET: Any = typer.Argument(..., help="A built dataset or a mixture: a directory or a URL (s3://…)")


@app.command()
@user_errors
def inspect(
    path: str = DATASET,
    storage_options: Optional[str] = STORAGE_OPTIONS,
    n: int = typer.Option(3, "--n", "-n", help="How many records to print"),
    start: int = typer.Option(0, "--start", help="Index of the first record printed"),
) -> None:
    """Counts, the per-task and per-source tables, and N records with their media."""
    import mmdata
    from mmdata.report.summary import record_panel, summary_table

    ds = mmdata.open(path, storage_options=parse_storage_options(storage_options))
    for renderable in summary_table(ds):
        console.print(renderable)
    for i in range(start, min(start + n, len(ds))):
        console.print(record_panel(ds[i], i))


@app.command()
@user_errors
def validate(
    path: str = DATASET,
    storage_options: Optional[str] = STORAGE_OPTIONS,
    no_media: bool = typer.Option(False, "--no-media", help="Check records only, do not decode media"),
) -> None:
    """Re-check every record and decode every media file; exit 1 with a summary on any problem."""
    from rich.progress import track

    import mmdata
    from mmdata.report.validate import validate as run_validate

    ds = mmdata.open(path, storage_options=parse_storage_options(storage_options))
    report = run_validate(ds, check_media=not no_media,
                          progress=iter(track(range(len(ds)), description="validating", console=Console(stderr=True),
                                              transient=True)))
    for p in report.problems[:20]:
        where = "" if p.index < 0 else f"[{p.index}] {p.id}: " if p.id else f"[{p.index}] "
        typer.echo(f"  {where}{p.reason}", err=True)
    if len(report.problems) > 20:
        typer.echo(f"  … and {len(report.problems) - 20} more", err=True)
    if not report.counts_ok:
        typer.echo("  manifest counts do not reconcile (read != written + rejected, or written != the shards' records)",
                   err=True)
    verdict = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
    typer.echo(f"{path}: {report.records:,} records, {report.media:,} media checked: {verdict}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@user_errors
def stats(
    path: str = DATASET,
    storage_options: Optional[str] = STORAGE_OPTIONS,
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N records"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables"),
) -> None:
    """Counts, text lengths per role, turns and media per record, and media sizes."""
    from rich.table import Table

    import mmdata
    from mmdata.report.summary import stats as compute

    result = compute(mmdata.open(path, storage_options=parse_storage_options(storage_options)), limit)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console.print(f"[bold]{result['records']:,}[/] records; tasks {result['tasks']}; media {result['media']}")
    table = Table("distribution", "min", "mean", "p50", "p95", "max")
    for key in ("turns_per_record", "media_per_record", "human_chars", "gpt_chars", "media_width", "media_height"):
        d = result[key]
        table.add_row(key, *(f"{d[k]:,.1f}" for k in ("min", "mean", "p50", "p95", "max")))
    console.print(table)


@app.command()
@user_errors
def report(
    path: str = DATASET,
    storage_options: Optional[str] = STORAGE_OPTIONS,
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="HTML file [default: PATH/report.html, ./NAME-report.html for a URL]"),
    n: int = typer.Option(24, "--n", "-n", help="How many records to show, spread over tasks"),
    seed: int = typer.Option(0, "--seed", help="Which records are sampled"),
) -> None:
    """A self-contained HTML report: counts, reject reasons, sampled records with their images inline."""
    import mmdata
    from mmdata.report.page import write_report

    ds = mmdata.open(path, storage_options=parse_storage_options(storage_options))
    default = Path(f"{basename(path)}-report.html") if is_url(path) else Path(path) / "report.html"
    written = write_report(ds, out or default, n=n, seed=seed)
    typer.echo(f"report: {written}")


@app.command()
@user_errors
def export(
    path: str = DATASET,
    storage_options: Optional[str] = STORAGE_OPTIONS,
    to: str = typer.Option(..., "--to", help="Target loader format: metamorph (JSONL) or llava (LLaVA-1.5 JSON array)"),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (metamorph: *.jsonl, llava: *.json)"),
    absolute_paths: bool = typer.Option(False, "--absolute-paths",
                                        help="Write absolute image paths (required for a mixture)"),
) -> None:
    """Write the records a reference loader can read, in its format; the others are refused with a reason."""
    from mmdata.report.export import export as run_export

    result = run_export(path, to, out, absolute_paths, storage_options=parse_storage_options(storage_options))
    typer.echo(f"{result.out}: {result.written:,} written, {sum(result.refused.values()):,} refused")
    for reason, n in result.refused.most_common():
        typer.echo(f"  refused {n:,}: {reason} (e.g. {result.examples[reason]})", err=True)
    if result.image_folder is not None:
        typer.echo(f"image paths are relative to {result.image_folder} (LLaVA: --image_folder; MetaMorph opens "
                   "paths as written: run it from there, or export with --absolute-paths)")


@app.command(**recipe_command(MixRecipe))
@user_errors
def mix(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., help="A mixture recipe (YAML); then any --key VALUE overriding it"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Mixture directory or URL (s3://bucket/prefix)"),
    dry_run: bool = typer.Option(False, "--dry-run/--no-dry-run", help="Print the plan, write nothing"),
    storage_options: Optional[str] = STORAGE_OPTIONS,
) -> None:
    """Resolve a recipe into a weighted, seeded, deterministic mixture of built datasets."""
    from mmdata.mix.planner import mix as run_mix
    from mmdata.mix.planner import plan_table

    plan = run_mix(recipe, out, dry_run, parse_storage_options(storage_options), parse_overrides(list(ctx.args)))
    console.print(plan_table(plan))
    for warning in plan.warnings:
        typer.secho(f"warning: {warning}", err=True, fg="yellow")


quality_cli.register(app)


def main() -> None:
    app()
