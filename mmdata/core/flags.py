"""Command lines generated from config dataclasses (`mmdata.core.options`), for `mmdata` and `mmtrain` alike.

A key is declared once, as a typed dataclass field with its doc and default; this module makes the rest of it:

- **Options** (`typed_command`): one Typer option per key of one or more dataclasses — `mmdata build <name>` (the
  builder's options and `BuildSettings`), `mmdata dedup` / `decontaminate`. The flag is `--key-name` (`_` → `-`) or
  `opt(flag=..., short=...)`'s, its help the key's doc, its default the field's. `X | None` is an optional flag,
  `Literal[...]` a choice, `list[X]` a repeated flag (`--input a --input b`), a `Path` is taken as text (a URL stays
  a string), a `bool` is a switch with both spellings (`--copy-media` / `--no-copy-media`). Click converts the text
  (`--workers abc` is refused naming the flag); the values given are then built into the dataclass by `from_dict`,
  so a flag passes exactly the checks of the same key in a YAML file (`toy.speed: must be > 0, got 0.0`).
- **Recipes** (`recipe_command`): a YAML file whose keys can be overridden as `--key VALUE` / `--section.key VALUE`
  (YAML values, applied to the file before it is validated, by `parse_overrides` / `set_key` / `from_dict`) —
  `mmdata mix` and `mmtrain stage1|stage2|visualizer`. `--help` lists every key with its type, doc and default.

Both kinds of command (`OptionsCommand`) also take a switch's value as a word, as YAML reads it: `--copy-media true`
/ `--copy-media=false` (or yes/no, on/off) mean `--copy-media` / `--no-copy-media`, which is what someone used to
`mmtrain --data.packing true` types; any other word after `=` is refused in one line saying how to write it.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import typer
import yaml
from rich.markup import escape
from typer.core import TyperCommand

from mmdata.core.options import Key, describe, from_dict, keys, safe_load


def switch_word(word: str) -> bool | None:
    """What `word` says to a switch: the words YAML reads as booleans (`true`, `false`, `yes`, `no`, `on`, `off`),
    as in `mmtrain --data.packing true`; None for any other word."""
    try:
        value = safe_load(word)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, bool) else None


class OptionsCommand(TyperCommand):
    """A Typer command whose boolean switches also take `true` / `false` as their value (see the module doc)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        params = self.get_params(ctx)
        if ctx.allow_extra_args:  # a recipe command: `--key VALUE` overrides may come before its arguments
            args = overrides_last(params, args)
        return super().parse_args(ctx, switch_words(params, args, ctx))


def overrides_last(params: Sequence[Any], args: list[str]) -> list[str]:
    """`args` with every `--key VALUE` / `--key=VALUE` that is not an option of the command moved to the end, so
    that `mmdata mix --seed 3 recipe.yaml` finds its recipe (click would take `3` for it)."""
    takes_value = {name: not p.is_flag for p in params if getattr(p, "param_type_name", "") == "option"
                   for name in (*p.opts, *p.secondary_opts)}
    head: list[str] = []
    tail: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            head += args[i:]
            break
        name = arg.partition("=")[0]
        if arg.startswith("--") and name not in takes_value:
            n = 1 if "=" in arg or i + 1 == len(args) else 2  # an override takes one value (`--x --y`: none)
            tail += args[i:i + n]
        else:
            n = 2 if takes_value.get(arg) else 1  # an option of the command and its value
            head += args[i:i + n]
        i += n
    return head + tail


def switch_words(params: Sequence[Any], args: list[str], ctx: typer.Context | None = None) -> list[str]:
    """`args` with `--x true|false` and `--x=true|false` of every boolean switch `--x` among the command's `params`
    (click parameters) written as `--x` / `--no-x`."""
    switches: dict[str, tuple[Any, str | None]] = {}  # a switch's name → (its parameter, the name turning it off)
    for p in params:
        if getattr(p, "is_bool_flag", False):  # duck-typed: Typer ships its own copy of click
            switches |= dict.fromkeys(p.opts, (p, p.secondary_opts[0] if p.secondary_opts else None))
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after it is an argument
            return out + args[i:]
        name, eq, word = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        text = arg
        if name in switches and not eq and i + 1 < len(args) and switch_word(args[i + 1]) is not None:
            word, eq, text, i = args[i + 1], "=", f"{arg} {args[i + 1]}", i + 1
        if name not in switches or not eq:
            out.append(arg)
            i += 1
            continue
        param, off = switches[name]
        value = switch_word(word)
        if value is None or (value is False and off is None):
            how = f"{name} or {off} (or {name} true / {name} false)" if off else f"{name} or leave it out"
            raise typer.BadParameter(f"write {how}, not {text}", ctx=ctx, param=param, param_hint=name)
        out.append(name if value else off)  # type: ignore[arg-type]
        i += 1
    return out


@dataclasses.dataclass(frozen=True)
class Flag:
    """One key of a config dataclass as a command-line option."""

    group: str  # which dataclass of the command it belongs to
    key: Key
    names: tuple[str, ...]  # ("--out", "-o"); a switch's first name is "--x/--no-x"

    @property
    def param(self) -> str:
        """The Python parameter Typer passes the value by (unique across the command's groups)."""
        return f"{self.group}__{self.key.name}"

    @property
    def parse(self) -> Callable[[str], Any] | None:
        return self.key.metadata.get("parse")

    def parameter(self) -> inspect.Parameter:
        annotation, metavar = _annotation(self.key.type, self.key)
        key = self.key
        is_list = typing.get_origin(annotation) is list
        default: Any
        if key.required:
            default = ...
        elif is_list or key.default is None or self.parse is not None:
            default = None  # not given: the field's default applies (an empty list means "not given" too)
        else:
            default = str(key.default) if isinstance(key.default, Path) else key.default
        shown: Any = True
        if is_list and key.default:
            shown = ", ".join(map(str, key.default))
        option = typer.Option(default, *self.names, help=escape(key.help), metavar=key.metadata.get("metavar") or metavar,
                              show_default=shown)
        if default is None and not key.required:
            annotation = Optional[annotation]
        return inspect.Parameter(self.param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)

    def value(self, given: Any) -> Any:
        """The flag's value as `from_dict` takes it."""
        if self.parse is not None:
            return self.parse(given)
        return list(given) if isinstance(given, (list, tuple)) else given


def flags(cls: type, group: str = "") -> list[Flag]:
    """The options of every key of config dataclass `cls` (a key no flag can give, e.g. a section, raises TypeError)."""
    out = []
    for key in keys(cls):
        long = key.metadata.get("flag") or "--" + key.name.replace("_", "-")
        first = f"{long}/--no-{long[2:]}" if _annotation(key.type, key)[0] is bool else long
        short = key.metadata.get("short")
        out.append(Flag(group, key, (first, short) if short else (first,)))
    return out


def typed_command(run: Callable[..., Any], groups: Mapping[str, type], *, where: Mapping[str, str] | None = None,
                  before: Sequence[inspect.Parameter] = (), after: Sequence[inspect.Parameter] = ()) -> Callable[..., Any]:
    """A function for `app.command(cls=OptionsCommand)`: the parameters `before`, an option per key of each dataclass
    in `groups`, the parameters `after`. Called, it builds each group with `from_dict` (errors prefixed with
    `where[group]`, e.g. `cambrian.`) from the flags given, and calls `run(**{group: instance}, **other values)`."""
    every = [f for group, cls in groups.items() for f in flags(cls, group)]
    params = [*before, *(f.parameter() for f in every), *after]
    _check_unique(params)

    def command(**kwargs: Any) -> Any:
        given: dict[str, dict[str, Any]] = {group: {} for group in groups}
        for f in every:
            value = kwargs.pop(f.param)
            if value is not None:
                given[f.group][f.key.name] = f.value(value)
        built = {group: from_dict(cls, given[group], where=(where or {}).get(group, "")) for group, cls in groups.items()}
        return run(**built, **kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


RECIPE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def recipe_command(cls: type, what: str = "Recipe keys") -> dict[str, Any]:
    """`app.command(**recipe_command(Recipe))`: a command taking `--key VALUE` overrides of a recipe file in
    `ctx.args` (read them with `mmdata.core.options.parse_overrides`), whose `--help` lists every key of `cls`."""
    epilog = (f"{what} (YAML). Any of them can be set on the command line too, as --key VALUE or --section.key VALUE "
              "(a YAML value: true, 3, 1e-4, null, [a, b]; a list of sections is given whole), applied to the file "
              "before it is validated.\n\n" + describe(cls))
    return {"cls": OptionsCommand, "context_settings": RECIPE_CONTEXT, "epilog": escape(epilog)}


def _annotation(tp: Any, key: Key) -> tuple[Any, str | None]:
    """A key's type → what Typer parses (`X | None` → X; a path as text: `Path` would fold `s3://` into `s3:/`)
    and a metavar."""
    arms = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        Union, types.UnionType) else [tp]
    if key.metadata.get("parse") is not None:
        return str, None
    if len(arms) > 1 and all(a in (str, Path) for a in arms):  # a location: a local path or a URL
        return str, "PATH"
    if len(arms) != 1:
        raise TypeError(f"{key.name}: a {tp} key has no command-line flag; give it in a recipe file")
    tp = arms[0]
    if tp is bool and tp is not key.type:
        raise TypeError(f"{key.name}: a switch is on or off; give the key a default of true or false, not {tp}")
    if tp is Path:
        return str, "PATH"
    if typing.get_origin(tp) is list:
        inner, metavar = _annotation(typing.get_args(tp)[0], key)
        return list[inner], metavar  # type: ignore[valid-type]
    if tp in (str, int, float, bool) or typing.get_origin(tp) is Literal:
        return tp, None
    raise TypeError(f"{key.name}: a {tp} key has no command-line flag; give it in a recipe file")


def _check_unique(params: Sequence[inspect.Parameter]) -> None:
    """Two keys of a command's groups (or a key and another parameter) must not claim the same flag."""
    seen: dict[str, str] = {}
    for p in params:
        decls = getattr(p.default, "param_decls", ()) or ()
        for decl in (n for d in decls for n in d.split("/")):
            if decl in seen:
                raise ValueError(f"{decl} is the flag of both {seen[decl]} and {p.name}")
            seen[decl] = p.name
