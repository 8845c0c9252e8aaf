"""Mixture recipes: `recipes/*.yaml` → typed `MixRecipe`, validated by `mmdata.core.options` with errors that name the key.

```yaml
name: metamorph-demo
seed: 0
size: 100000            # total records; weighted sources share what `epochs` sources leave
sources:
  - path: ../data/cambrian      # relative to the recipe file
    weight: 0.6
  - path: ../data/cc12m
    weight: 0.3
    max: 50000                  # at most this many records of this source (repeats included)
  - path: ../data/video
    epochs: 2                   # instead of a weight: the whole source, twice
    filters: {max_media: 8}     # records kept (also top-level, for every source; see mmdata.mix.filters)
    license: CC-BY-4.0          # stated on the data card (`mmdata card`)
```
A source's `path` is a built dataset or a view (`mmdata dedup` / `mmdata decontaminate` output).
Each source is sized by exactly one of `weight` (a share of `size`) or `epochs` (a multiple of its own length).
Without `size` every source must use `epochs`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from mmdata.core.errors import NotFound
from mmdata.core.options import ConfigError, from_dict, safe_load, set_key
from mmdata.format.names import MANIFEST, VIEW
from mmdata.mix.filters import Filters
from mmdata.read.view import manifest_file
from mmdata.storage.base import open_storage
from mmdata.storage.location import basename, resolve


class RecipeError(ConfigError):
    """A recipe is unusable; the message starts with `<file>: <key>:` and says how to fix it."""


@dataclass
class SourceSpec:
    path: Any  # str in YAML: a built dataset's folder relative to the recipe file, or a URL; a `Location` once loaded
    name: str | None = None  # unique in the recipe (default: the folder's name); seeds this source's permutations
    weight: float | None = None  # a share of the recipe's `size`
    epochs: float | None = None  # instead of a weight: this many passes over the whole source
    max: int | None = None  # at most this many records of this source (repeats included)
    filters: Filters | None = None  # records kept from this source (over the recipe's `filters`, key by key)
    license: str | None = None  # this source's licence, as the data card states it

    def __post_init__(self) -> None:
        if self.name is not None and not self.name.strip():
            raise ConfigError(f"must be a non-empty string, got {self.name!r}", key="name")
        for key in ("weight", "epochs"):
            value = getattr(self, key)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"must be > 0, got {value}", key=key)
        if self.weight is not None and self.epochs is not None:
            raise ConfigError("has both `weight` and `epochs`, two sizing modes at once; keep one", key="")
        if self.weight is None and self.epochs is None:
            raise ConfigError("needs `weight:` (a share of `size`) or `epochs:` (repeats of the whole source)",
                              key="")
        if self.max is not None and self.max < 1:
            raise ConfigError(f"must be >= 1, got {self.max}", key="max")


@dataclass
class MixRecipe:
    sources: list[SourceSpec]  # the datasets mixed, each sized by `weight` or `epochs`
    name: str | None = None  # the mixture's name (default: the recipe file's name)
    seed: int = 0  # seeds every source's permutation
    size: int | None = None  # total records; weighted sources share what `epochs` sources leave
    filters: Filters | None = None  # records kept from every source (mmdata.mix.filters)
    license: str | None = None  # the mixture's licence, as the data card states it
    file: Path = field(init=False, default=Path())  # the recipe file (set by `parse_recipe`)
    data: dict[str, Any] = field(init=False, default_factory=dict)  # the YAML as parsed, for the manifest and hash

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("must be a non-empty list of {path, weight | epochs, max?}", key="sources")
        if self.name is not None and not self.name.strip():
            raise ConfigError(f"must be a non-empty string, got {self.name!r}", key="name")
        if self.name is not None and ("/" in self.name or "\\" in self.name or "\0" in self.name
                                      or self.name.strip() in (".", "..")):
            # It names the output folder mixtures/<name>: one plain folder name, never a path out of it.
            raise ConfigError(f"{self.name!r} must be a plain folder name (no '/', '\\', NUL, '.' or '..')",
                              key="name")
        if self.seed < 0:
            raise ConfigError(f"must be >= 0, got {self.seed}", key="seed")
        if self.size is not None and self.size < 1:
            raise ConfigError(f"must be >= 1, got {self.size}", key="size")

    @property
    def sha256(self) -> str:
        """Hash of the recipe's content (not its formatting or comments)."""
        return hashlib.sha256(orjson.dumps(self.data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_recipe(path: str | Path, *, overrides: Mapping[str, Any] | None = None, check_paths: bool = True,
                storage_options: dict[str, Any] | None = None) -> MixRecipe:
    """Read and validate a recipe. `overrides` ({"seed": 3, "filters.max_media": 8}, from `mmdata mix`'s `--key
    VALUE`) are applied to the file first and validated with it; source paths given there are relative to the working
    directory. `check_paths=False` skips "is every source a built dataset" (for linting recipes whose datasets are
    built elsewhere)."""
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"{file}: recipe not found")
    try:
        data = safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{file}: not valid YAML: {e}") from None
    if overrides and isinstance(data, dict):
        try:
            for dotted, value in overrides.items():
                set_key(data, dotted, _cwd_paths(value) if dotted == "sources" else value)
        except ConfigError as e:
            raise RecipeError(f"{file}: {e}") from None
    return parse_recipe(data, file, check_paths=check_paths, storage_options=storage_options)


def _cwd_paths(sources: Any) -> Any:
    """A `--sources` list typed on the command line: its relative paths are the working directory's, not the file's."""
    if not isinstance(sources, list):
        return sources  # from_dict says what it should be
    return [s | {"path": str(resolve(Path.cwd(), s["path"]))} if isinstance(s, dict) and isinstance(s.get("path"), str)
            and s["path"] else s for s in sources]


def parse_recipe(data: Any, file: Path, *, check_paths: bool = True,
                 storage_options: dict[str, Any] | None = None) -> MixRecipe:
    def fail(key: str, msg: str) -> RecipeError:
        return RecipeError(f"{file}: {key}: {msg}")

    try:
        recipe = from_dict(MixRecipe, data)
    except ConfigError as e:
        raise RecipeError(f"{file}: {e}") from None
    recipe.file, recipe.data = file, data
    recipe.name = recipe.name or file.stem
    for i, s in enumerate(recipe.sources):
        if not isinstance(s.path, str) or not s.path:
            raise fail(f"sources[{i}].path", f"must be a path or a URL, got {s.path!r}")
        s.path = resolve(file.parent, s.path)
        s.name = s.name or basename(s.path)

    seen: dict[str, int] = {}
    for i, s in enumerate(recipe.sources):
        if s.name in seen:
            raise fail(f"sources[{i}].name", f"{s.name!r} is already the name of sources[{seen[s.name]}]; give one "
                       "of them a distinct `name:`")
        seen[s.name] = i  # type: ignore[index]
    weighted = [i for i, s in enumerate(recipe.sources) if s.weight is not None]
    if recipe.size is None and weighted:
        raise fail(f"sources[{weighted[0]}].weight", "a weight is a share of `size`, and the recipe has no size; "
                   "add a top-level `size:` or give this source `epochs:` instead")
    if recipe.size is not None and not weighted:
        raise fail("size", "every source is sized by `epochs`, so `size` would be a second sizing mode; remove "
                   "`size` or give some sources a `weight:`")
    if check_paths:
        for i, s in enumerate(recipe.sources):
            if manifest_file(s.path, storage_options) is None:
                storage = open_storage(s.path, storage_options)
                storage.check()
                what = "does not exist" if storage.empty() else \
                    f"is not a built mmdata dataset or view (no {MANIFEST} or {VIEW})"
                raise fail(f"sources[{i}].path", f"{s.path} {what}; build it with `mmdata build` or fix the path "
                           "(relative paths are relative to the recipe file)")
    return recipe
