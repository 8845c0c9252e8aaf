"""`mmdata build <name>`: one subcommand per registered builder, its flags generated from the options dataclass."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from mmdata.build.driver import DEFAULT_SHARD_SIZE, BuildSettings, build
from mmdata.build.registry import Builder, discover
from mmdata.core.commands import STORAGE_OPTIONS, parse_storage_options, user_errors
from mmdata.core.options import from_dict, keys
from mmdata.format.names import REJECTS
from mmdata.storage.location import join

app = typer.Typer(help="Convert a raw source into a dataset (JSONL + index and/or webdataset tars).",
                  no_args_is_help=True)

_COMMON: list[tuple[str, Any, Any]] = [
    ("out", str, typer.Option(..., "--out", "-o", help="Output dataset directory or URL (s3://bucket/prefix)")),
    ("format", Literal["jsonl", "wds", "both"], typer.Option("jsonl", "--format",
                                                         help="jsonl (+ offset index), wds (webdataset tars) or both")),
    ("workers", int, typer.Option(1, "--workers", "-w", help="Worker processes (--engine local); the output does "
                                                             "not depend on it")),
    ("engine", Literal["local", "ray"], typer.Option("local", "--engine", help="local: this machine's processes; "
                                                     "ray: one Ray task per shard on a cluster (same output)")),
    ("ray_address", str, typer.Option("auto", "--ray-address", help="--engine ray: the cluster, auto (the one "
                                                                     "`ray start` runs here) or HOST:PORT")),
    ("copy_media", bool, typer.Option(False, "--copy-media", help="Store media under <out>/media instead of "
                                                                  "referencing them in place")),
    ("shard_size", int, typer.Option(DEFAULT_SHARD_SIZE, "--shard-size", help="Input items per shard")),
    ("limit", Optional[int], typer.Option(None, "--limit", help="Read at most this many input items")),
    ("overwrite", bool, typer.Option(False, "--overwrite", help="Replace an existing, different build in --out")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bar")),
    ("storage_options", Optional[str], STORAGE_OPTIONS),
]


def _annotation(tp: Any) -> Any:
    """A dataclass field type → the annotation Typer understands (`X | None` → `Optional[X]`)."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return Optional[_annotation(inner[0])]
    if tp is Path:  # parsed by `config.from_dict`, which keeps a URL (`s3://…`) intact; Typer's Path would not
        return str
    if typing.get_origin(tp) is list:
        return list[_annotation(typing.get_args(tp)[0])]  # type: ignore[misc]
    return tp


def _command(builder: Builder) -> Any:
    """Flags, defaults and help from the options' config keys; the values go through `config.from_dict`."""
    params: list[inspect.Parameter] = []
    option_names: list[str] = []
    for key in keys(builder.options):
        ann = _annotation(key.type)
        is_list = typing.get_origin(ann) is list
        default = ... if key.required else None if is_list else key.default  # an empty list is "not given"
        metavar = "PATH" if is_list or "Path" in str(key.type) else None  # not "<list[Path]>"; repeat the flag
        option = typer.Option(default, key.metadata.get("flag") or "--" + key.name.replace("_", "-"),
                              help=key.help, metavar=metavar)
        params.append(inspect.Parameter(key.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=ann))
        option_names.append(key.name)
    for name, ann, option in _COMMON:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=ann))

    @user_errors
    def run(**kwargs: Any) -> None:
        given = {k: kwargs[k] for k in option_names if kwargs[k] is not None}
        options = from_dict(builder.options, given, where=f"{builder.name}.")
        settings = BuildSettings(out=kwargs["out"], format=kwargs["format"], workers=kwargs["workers"],
                                 copy_media=kwargs["copy_media"], shard_size=kwargs["shard_size"],
                                 limit=kwargs["limit"], overwrite=kwargs["overwrite"], engine=kwargs["engine"],
                                 ray_address=kwargs["ray_address"],
                                 storage_options=parse_storage_options(kwargs["storage_options"]))
        manifest = build(builder.name, options, settings, progress=not kwargs["quiet"])
        c = manifest.counts
        typer.echo(f"{settings.out}: {c['written']:,} written, {c['rejected']:,} rejected of {c['read']:,} read"
                   + (f" (reasons in {join(settings.out, REJECTS)})" if c["rejected"] else ""))

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__doc__ = builder.help
    return run


def register_builders() -> None:
    for name, builder in sorted(discover().items()):
        command = _command(builder)
        app.command(name.replace("_", "-"), help=builder.help)(command)
        if "_" in name:  # `visual-cot` is the documented spelling; the registry name works too
            app.command(name, help=builder.help, hidden=True)(command)
