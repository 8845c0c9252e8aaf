"""Mixture recipes: `recipes/*.yaml` → typed `Recipe`, validated once, here, with errors that name the key.

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
```
Each source is sized by exactly one of `weight` (a share of `size`) or `epochs` (a multiple of its own length).
Without `size` every source must use `epochs`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from mmdata.manifest import MANIFEST

_TOP_KEYS = ("name", "seed", "size", "sources")
_SOURCE_KEYS = ("path", "name", "weight", "epochs", "max")


class RecipeError(ValueError):
    """A recipe is unusable; the message starts with `<file>: <key>:` and says how to fix it."""


@dataclass(frozen=True)
class SourceSpec:
    path: Path  # absolute, resolved against the recipe's folder
    name: str  # unique in the recipe; seeds this source's permutations, so renaming it reshuffles it
    weight: float | None = None
    epochs: float | None = None
    max: int | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    size: int | None
    sources: tuple[SourceSpec, ...]
    file: Path
    data: dict[str, Any]  # the YAML as parsed, for the mixture manifest and the hash

    @property
    def sha256(self) -> str:
        """Hash of the recipe's content (not its formatting or comments)."""
        return hashlib.sha256(orjson.dumps(self.data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_recipe(path: str | Path, *, check_paths: bool = True) -> Recipe:
    """Read and validate a recipe. `check_paths=False` skips "is every source a built dataset" (for linting
    recipes whose datasets are built elsewhere)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: recipe not found")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{file}: not valid YAML: {e}") from None
    return parse_recipe(data, file, check_paths=check_paths)


def parse_recipe(data: Any, file: Path, *, check_paths: bool = True) -> Recipe:
    def fail(key: str, msg: str) -> RecipeError:
        return RecipeError(f"{file}: {key}: {msg}")

    if not isinstance(data, dict):
        raise RecipeError(f"{file}: a recipe is a mapping with keys {', '.join(_TOP_KEYS)}")
    _no_unknown(data, _TOP_KEYS, "", fail)
    name = data.get("name", file.stem)
    if not isinstance(name, str) or not name.strip():
        raise fail("name", f"must be a non-empty string, got {name!r}")
    seed = _integer(data.get("seed", 0), "seed", 0, fail)
    size = None if data.get("size") is None else _integer(data["size"], "size", 1, fail)
    raw_sources = data.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise fail("sources", "must be a non-empty list of {path, weight | epochs, max?}")
    sources = tuple(_source(s, f"sources[{i}]", file, fail) for i, s in enumerate(raw_sources))

    seen: dict[str, int] = {}
    for i, s in enumerate(sources):
        if s.name in seen:
            raise fail(f"sources[{i}].name", f"{s.name!r} is already the name of sources[{seen[s.name]}]; give one "
                       "of them a distinct `name:`")
        seen[s.name] = i
    weighted = [i for i, s in enumerate(sources) if s.weight is not None]
    if size is None and weighted:
        raise fail(f"sources[{weighted[0]}].weight", "a weight is a share of `size`, and the recipe has no size; "
                   "add a top-level `size:` or give this source `epochs:` instead")
    if size is not None and not weighted:
        raise fail("size", "every source is sized by `epochs`, so `size` would be a second sizing mode; remove "
                   "`size` or give some sources a `weight:`")
    if check_paths:
        for i, s in enumerate(sources):
            if not (s.path / MANIFEST).is_file():
                what = "does not exist" if not s.path.exists() else f"is not a built mmdata dataset (no {MANIFEST})"
                raise fail(f"sources[{i}].path", f"{s.path} {what}; build it with `mmdata build` or fix the path "
                           "(relative paths are relative to the recipe file)")
    return Recipe(name=name, seed=seed, size=size, sources=sources, file=file, data=data)


def _source(raw: Any, key: str, file: Path, fail: Any) -> SourceSpec:
    if not isinstance(raw, dict):
        raise fail(key, f"must be a mapping with keys {', '.join(_SOURCE_KEYS)}, got {type(raw).__name__}")
    _no_unknown(raw, _SOURCE_KEYS, f"{key}.", fail)
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip():
        raise fail(f"{key}.path", "missing; give the folder of a built dataset")
    resolved = (file.parent / path).resolve()
    name = raw.get("name", resolved.name)
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{key}.name", f"must be a non-empty string, got {name!r}")
    weight = None if raw.get("weight") is None else _positive(raw["weight"], f"{key}.weight", fail)
    epochs = None if raw.get("epochs") is None else _positive(raw["epochs"], f"{key}.epochs", fail)
    if weight is not None and epochs is not None:
        raise fail(key, "has both `weight` and `epochs`, two sizing modes at once; keep one")
    if weight is None and epochs is None:
        raise fail(key, "needs `weight:` (a share of `size`) or `epochs:` (repeats of the whole source)")
    cap = None if raw.get("max") is None else _integer(raw["max"], f"{key}.max", 1, fail)
    return SourceSpec(path=resolved, name=name, weight=weight, epochs=epochs, max=cap)


def _no_unknown(d: dict[str, Any], known: tuple[str, ...], prefix: str, fail: Any) -> None:
    for k in d:
        if k not in known:
            raise fail(f"{prefix}{k}", f"unknown key; accepted keys are {', '.join(known)}")


def _integer(value: Any, key: str, minimum: int, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(key, f"must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise fail(key, f"must be >= {minimum}, got {value}")
    return value


def _positive(value: Any, key: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(key, f"must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise fail(key, f"must be > 0, got {value}")
    return float(value)
