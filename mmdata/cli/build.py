"""`mmdata build <name>`: one subcommand per registered builder, its flags generated (`mmdata.core.flags`) from the
builder's options dataclass and from `BuildSettings`."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from mmdata.build.driver import BuildSettings, build
from mmdata.build.registry import Builder, discover
from mmdata.core.commands import user_errors
from mmdata.core.flags import OptionsCommand, typed_command
from mmdata.format.names import REJECTS
from mmdata.storage.location import join

app = typer.Typer(help="Convert a raw source into a dataset (JSONL + index and/or webdataset tars).",
                  no_args_is_help=True)

_QUIET = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                           default=typer.Option(False, "--quiet/--no-quiet", "-q", help="No progress bar"))


def _command(builder: Builder) -> Any:
    """The builder's options and the build settings as flags; their values built by `from_dict` (errors keyed
    `<builder>.<key>`), then one `build`."""

    def run(options: Any, settings: BuildSettings, quiet: bool) -> None:
        manifest = build(builder.name, options, settings, progress=not quiet)
        c = manifest.counts
        typer.echo(f"{settings.out}: {c['written']:,} written, {c['rejected']:,} rejected of {c['read']:,} read"
                   + (f" (reasons in {join(settings.out, REJECTS)})" if c["rejected"] else ""))

    command = user_errors(typed_command(run, {"options": builder.options, "settings": BuildSettings},
                                        where={"options": f"{builder.name}."}, after=[_QUIET]))
    command.__doc__ = builder.help
    return command


def register_builders() -> None:
    for name, builder in sorted(discover().items()):
        command = _command(builder)
        app.command(name.replace("_", "-"), help=builder.help, cls=OptionsCommand)(command)
        if "_" in name:  # `visual-cot` is the documented spelling; the registry name works too
            app.command(name, help=builder.help, hidden=True, cls=OptionsCommand)(command)
