"""`mmdata build <name>`: one subcommand per registered builder, its flags generated from the options dataclass."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from mmdata.build import DEFAULT_SHARD_SIZE, BuildSettings, build
from mmdata.cli._errors import user_errors
from mmdata.registry import Builder, discover

app = typer.Typer(help="Convert a raw source into a dataset (JSONL + index and/or webdataset tars).",
                  no_args_is_help=True)

_COMMON: list[tuple[str, Any, Any]] = [
    ("out", Path, typer.Option(..., "--out", "-o", help="Output dataset directory")),
    ("format", Literal["jsonl", "wds", "both"], typer.Option("jsonl", "--format",
                                                         help="jsonl (+ .idx), wds (webdataset tars) or both")),
    ("workers", int, typer.Option(1, "--workers", "-w", help="Worker processes; the output does not depend on it")),
    ("copy_media", bool, typer.Option(False, "--copy-media", help="Store media under <out>/media instead of "
                                                                  "referencing them in place")),
    ("shard_size", int, typer.Option(DEFAULT_SHARD_SIZE, "--shard-size", help="Input items per shard")),
    ("limit", Optional[int], typer.Option(None, "--limit", help="Read at most this many input items")),
    ("overwrite", bool, typer.Option(False, "--overwrite", help="Replace an existing, different build in --out")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bar")),
]


def _annotation(tp: Any) -> Any:
    """A dataclass field type → the annotation Typer understands (`X | None` → `Optional[X]`)."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return Optional[_annotation(inner[0])]
    return tp


def _command(builder: Builder) -> Any:
    hints = typing.get_type_hints(builder.options)
    params: list[inspect.Parameter] = []
    option_names: list[str] = []
    for f in dataclasses.fields(builder.options):
        ann = _annotation(hints[f.name])
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = None if typing.get_origin(ann) is list else f.default_factory()
        else:
            default = ...
        metavar = "PATH" if typing.get_origin(ann) is list else None  # not "<list[Path]>"; repeat the flag
        option = typer.Option(default, flag, help=f.metadata.get("help", ""), metavar=metavar)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=ann))
        option_names.append(f.name)
    for name, ann, option in _COMMON:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=ann))

    @user_errors
    def run(**kwargs: Any) -> None:
        values = {k: kwargs[k] for k in option_names}
        for f in dataclasses.fields(builder.options):
            if values[f.name] is None and f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
        options = builder.options(**values)
        settings = BuildSettings(out=kwargs["out"], format=kwargs["format"], workers=kwargs["workers"],
                                 copy_media=kwargs["copy_media"], shard_size=kwargs["shard_size"],
                                 limit=kwargs["limit"], overwrite=kwargs["overwrite"])
        manifest = build(builder.name, options, settings, progress=not kwargs["quiet"])
        c = manifest.counts
        typer.echo(f"{settings.out}: {c['written']:,} written, {c['rejected']:,} rejected of {c['read']:,} read"
                   + (f" (reasons in {settings.out / 'rejects.jsonl'})" if c["rejected"] else ""))

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__doc__ = builder.help
    return run


def register_builders() -> None:
    for name, builder in sorted(discover().items()):
        command = _command(builder)
        app.command(name.replace("_", "-"), help=builder.help)(command)
        if "_" in name:  # `visual-cot` is the documented spelling; the registry name works too
            app.command(name, help=builder.help, hidden=True)(command)
