"""The one config mechanism: plain dataclasses, validated here, for builder options, build settings, dedup and
decontamination options, mixture and training recipes.

A config is a `@dataclass` whose fields are its keys. `from_dict(cls, raw)` builds it from parsed YAML or flags and
is the only validator: an unknown key, a missing required key or a wrong type is a `ConfigError` naming the key as a
path (`sources[1].weight`, `optim.lr`), nested dataclasses, `X | None`, `Literal[...]` and `list[X]` included. A
float field also takes a numeric string. Value rules live in the dataclass's `__post_init__`; raise
`ConfigError(msg, key="field")` there and the error is re-keyed with the field's full path.

A field's help text (for `--help`) is `opt(help=...)`'s, else the attribute docstring under the field, else the
comment on the field's line (an inherited field's, in the class that declares it), so sections stay plain dataclass
definitions. `mmdata.core.flags` makes command lines from the same fields; `opt(flag=, short=, metavar=, parse=)`
shapes a key's flag.

YAML is read as people write numbers (`safe_load`): `1e-5` and `1e-300` are floats (YAML 1.1, PyYAML's default,
reads them as strings unless written `1.0e-5`)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from mmdata.core.errors import InputError


class _Loader(yaml.SafeLoader):
    pass


# Appended after the YAML 1.1 float pattern: only forms it misses (no dot, or a dot and an unsigned exponent).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


T = TypeVar("T")


class ConfigError(InputError):
    """A config key is unknown, missing, or of the wrong type / value. The message names the key.

    `key` (relative to the dataclass that raised it) lets `from_dict` prefix the full path, e.g. `weight` raised by
    a source becomes `sources[1].weight`; `key=""` names the dataclass itself (`sources[1]`).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.message, self.key = message, key
        super().__init__(message if key is None else f"{key}: {message}" if key else message)


def opt(default: Any = MISSING, *, help: str, flag: str | None = None, short: str | None = None,
        metavar: str | None = None, parse: Callable[[str], Any] | None = None, factory: Any = MISSING,
        repr: bool = True, compare: bool = True) -> Any:
    """A field with its help text and, for its command-line flag (`mmdata.core.flags`), a name other than
    `--field-name`, a short alias (`-o`), a metavar, or `parse` turning the flag's text into the value (e.g. JSON)."""
    metadata = {"help": help, "flag": flag, "short": short, "metavar": metavar, "parse": parse}
    kwargs: dict[str, Any] = {"metadata": metadata, "repr": repr, "compare": compare}
    if factory is not MISSING:
        return field(default_factory=factory, **kwargs)
    return field(**kwargs) if default is MISSING else field(default=default, **kwargs)


@dataclass(frozen=True)
class Key:
    """One key of a config dataclass, as `--help` and the flag generator see it."""

    name: str
    type: Any
    default: Any  # MISSING when required; the factory's value for default_factory fields
    help: str
    metadata: Any

    @property
    def required(self) -> bool:
        return self.default is MISSING


def keys(cls: type) -> list[Key]:
    """The keys of a config dataclass, in definition order (fields with `init=False` are not keys)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        out.append(Key(f.name, hints[f.name], default, f.metadata.get("help") or _doc(cls, f.name), f.metadata))
    return out


def _doc(cls: type, name: str) -> str:
    """The doc of field `name` where it is written: in `cls` or, for an inherited field, in a base class."""
    return next((doc for c in cls.__mro__ if dataclasses.is_dataclass(c) and (doc := _source_docs(c).get(name))), "")


def find_key(cls: type, name: str) -> Key:
    """The key `name` of config dataclass `cls` (KeyError if it has none)."""
    for k in keys(cls):
        if k.name == name:
            return k
    raise KeyError(f"{cls.__name__} has no key {name!r}")


def type_name(tp: Any) -> str:
    """What a value of `tp` is, in words: `an integer or null`, `one of ['pad', 'resize']`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is list:
        return f"a list of {_PLURALS.get(args[0], f'({type_name(args[0])})') if args else 'values'}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin is dict:
        return "a mapping"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path",
          type(None): "null", Any: "any value"}


_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans", Path: "paths"}


def from_dict(cls: type[T], raw: Any, *, where: str = "") -> T:
    """Build config dataclass `cls` from `raw`; every error is a ConfigError naming `where` + the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping with keys {', '.join(k.name for k in keys(cls))}, got "
                          f"{type(raw).__name__} {_short(raw)}", key=where.rstrip(".") or cls.__name__)
    known = keys(cls)
    names = [k.name for k in known]
    for name in raw:
        if name not in names:
            raise ConfigError(f"unknown key; accepted keys are {', '.join(names)}", key=f"{where}{name}")
    values = {}
    for k in known:
        if k.name in raw:
            values[k.name] = convert(raw[k.name], k.type, f"{where}{k.name}")
        elif k.required:
            raise ConfigError(f"missing; {cls.__name__} requires it", key=f"{where}{k.name}")
    try:
        return cls(**values)
    except ConfigError as e:
        if e.key is None or not where:
            raise
        raise ConfigError(e.message, key=where + e.key if e.key else where.rstrip(".")) from None


class _Mismatch(Exception):
    """`value` is not of this type (a union tries its next member)."""


def convert(value: Any, tp: Any, key: str) -> Any:
    """`value` checked (and, for floats and paths, converted) as a `tp` at `key`."""
    try:
        return _convert(value, tp, key)
    except _Mismatch:
        raise ConfigError(f"must be {type_name(tp)}, got {type(value).__name__} {_short(value)}", key=key) from None


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return _convert(value, arm, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and True not in args and False not in args):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        return [convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return from_dict(tp, value, where=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {k: convert(v, args[1], f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if isinstance(value, bool) and tp is not bool:
        raise _Mismatch  # YAML `true` is not the number 1
    if tp is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-5 as a string; a number is what anyone typing it means
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is Path:
        if isinstance(value, str) and "://" in value:
            return value.rstrip("/")  # a URL stays a string: `Path` would fold `s3://` into `s3:/`
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--a.b value` / `--a.b=value` pairs → {"a.b": value}; values are YAML (`null`, `[x, y]`, `true`, `1.0e-5`)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"override {arg!r}: expected --section.key VALUE (e.g. --optim.lr 1.0e-4)")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"override --{key} has no value; write --{key} VALUE (a YAML value: true, 3, "
                                  f"null, [a, b]) or --{key}=VALUE")
            value, i = args[i + 1], i + 1
        try:
            out[key.replace("-", "_")] = safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.replace("-", "_")] = value  # e.g. a path with a colon; the field's type check decides
        i += 1
    return out


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested mappings (creating sections); validation happens when the whole dict is built."""
    node = raw
    parts = dotted.split(".")
    for i, k in enumerate(parts[:-1]):
        if node.get(k) is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise ConfigError(f"is not a section, so --{dotted} cannot set a key in it", key=".".join(parts[:i + 1]))
        node = node[k]
    node[parts[-1]] = value


def overview(cls: type, *, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, type, help and default) for every leaf key of `cls`; sections flattened (`optim.lr`,
    `sources[].weight`)."""
    rows = []
    for k in keys(cls):
        section, suffix = _section(k.type)
        if section is not None:
            rows += overview(section, prefix=f"{prefix}{k.name}{suffix}.")
            continue
        default = "" if k.required or k.default in (None, []) else f" (default {yaml_text(k.default)})"
        rows.append((prefix + k.name, type_name(k.type), (k.help + default).strip()))
    return rows


def describe(cls: type) -> str:
    """One line per key (`optim.lr (a number): help (default 2.0e-05)`) for a command's `--help` epilog."""
    return "\n".join(f"{key} ({kind}): {text}".rstrip(": ") for key, kind, text in overview(cls))


def yaml_text(value: Any) -> str:
    """`value` as it is written in YAML or after `--key` (`true`, `skip`, `[0.9, 0.999]`, `2.0e-05`)."""
    plain = str(value) if isinstance(value, Path) else value
    return yaml.safe_dump(plain, default_flow_style=True, width=1 << 16).removesuffix("...\n").strip()


def _section(tp: Any) -> tuple[type | None, str]:
    """The dataclass a key holds (itself, optional, or a list of them) and the path suffix (`[]` for a list)."""
    arms = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    for arm in arms:
        if dataclasses.is_dataclass(arm):
            return arm, ""  # type: ignore[return-value]
        if typing.get_origin(arm) is list and typing.get_args(arm) and dataclasses.is_dataclass(typing.get_args(arm)[0]):
            return typing.get_args(arm)[0], "[]"
    return None, ""


@functools.cache
def _source_docs(cls: type) -> dict[str, str]:
    """Field → its attribute docstring or same-line comment, read from the class source ({} without a source)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
        elif stmt.end_lineno in comments:
            docs[stmt.target.id] = comments[stmt.end_lineno]
    return docs


__all__ = ["opt"]
