"""`mmdata dedup`, `mmdata decontaminate` and `mmdata card`: flags parsed here, the work done by the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmdata.core.commands import STORAGE_OPTIONS, parse_storage_options, user_errors
from mmdata.format.names import REMOVED
from mmdata.storage.location import as_location, join

WORKERS = typer.Option(2, "--workers", "-w", help="Processes hashing shards in parallel")
CACHE = typer.Option(None, "--cache", help="Signature cache [default: $MMDATA_CACHE/signatures or "
                     "~/.cache/mmdata/signatures]")


def _summary(where: str, manifest: object) -> None:
    out = as_location(where)
    counts, removed = manifest.counts, manifest.removed  # type: ignore[attr-defined]
    typer.echo(f"{out}: {counts['read']:,} read, {counts['kept']:,} kept, {counts['removed']:,} removed "
               f"(see {join(out, REMOVED)})")
    for source, reasons in removed.items():
        for reason, n in reasons.items():
            typer.echo(f"  {source}: {n:,} {reason}")


@user_errors
def dedup(
    inputs: list[Path] = typer.Argument(..., help="Datasets, views or mixtures; earlier ones win ties"),
    out: str = typer.Option(..., "--out", "-o", help="The view to write: a directory or a URL (s3://bucket/prefix)"),
    storage_options: Optional[str] = STORAGE_OPTIONS,
    images: str = typer.Option("phash:4", "--images", help="none | exact | phash:D (Hamming distance)"),
    text: str = typer.Option("minhash:0.8", "--text", help="none | exact | minhash:J (Jaccard)"),
    workers: int = WORKERS,
    cache: Optional[Path] = CACHE,
) -> None:
    """Drop duplicate records within and across inputs into a view (first occurrence kept; removed.jsonl says
    which record each removed one duplicates)."""
    from mmdata.quality.dedup import DedupOptions
    from mmdata.quality.dedup import dedup as run

    opts = DedupOptions(images=images, text=text, workers=workers, cache=cache)
    _summary(out, run(inputs, out, opts, storage_options=parse_storage_options(storage_options)))


@user_errors
def decontaminate(
    inputs: list[Path] = typer.Argument(..., help="Datasets, views or mixtures"),
    against: list[Path] = typer.Option(..., "--against", help="Eval set: a folder of images and/or a JSON/JSONL "
                                       "of questions (repeat for several)"),
    out: str = typer.Option(..., "--out", "-o", help="The view to write: a directory or a URL (s3://bucket/prefix)"),
    storage_options: Optional[str] = STORAGE_OPTIONS,
    distance: int = typer.Option(4, "--distance", help="pHash Hamming distance of an image match"),
    ngram: int = typer.Option(13, "--ngram", help="Words in a shared n-gram"),
    min_words: int = typer.Option(8, "--min-words", help="Shorter eval questions are ignored"),
    workers: int = WORKERS,
    cache: Optional[Path] = CACHE,
) -> None:
    """Drop training records whose images match an eval image or whose questions share an n-gram with an eval
    question, into a view with removed.jsonl; counts per source and eval set."""
    from mmdata.quality.decontaminate import DecontaminateOptions
    from mmdata.quality.decontaminate import decontaminate as run

    opts = DecontaminateOptions(distance=distance, ngram=ngram, min_words=min_words, workers=workers, cache=cache)
    _summary(out, run(inputs, against, out, opts, parse_storage_options(storage_options)))


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
    for command in (dedup, decontaminate, card):
        app.command()(command)
