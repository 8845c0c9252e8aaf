"""Recipe loading: every validation error names its key; every recipe shipped in `recipes/` loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdata.mix.recipe import RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _dataset(path: Path) -> Path:
    # Recipes only look at dataset.json when loading; its content matters to `mix`, not here.
    path.mkdir(parents=True, exist_ok=True)
    (path / "dataset.json").write_text(json.dumps({"schema_version": 1}))
    return path


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    _dataset(tmp_path / "data" / "a")
    _dataset(tmp_path / "data" / "b")

    def _write(text: str) -> Path:
        path = tmp_path / "recipes" / "r.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    return _write


GOOD = """
name: demo
seed: 3
size: 1000
sources:
  - path: ../data/a
    weight: 0.6
  - path: ../data/b
    weight: 2
    max: 50
"""


def test_loads_typed_and_resolves_paths_against_the_recipe(write) -> None:  # type: ignore[no-untyped-def]
    recipe = load_recipe(write(GOOD))
    assert (recipe.name, recipe.seed, recipe.size) == ("demo", 3, 1000)
    a, b = recipe.sources
    assert a.path == (recipe.file.parent.parent / "data" / "a").resolve() and a.name == "a"
    assert (a.weight, a.epochs, a.max) == (0.6, None, None)
    assert (b.weight, b.max) == (2.0, 50)
    assert load_recipe(write(GOOD.replace("seed: 3", "seed: 3  # a comment"))).sha256 == recipe.sha256


def test_yaml_exponents_are_numbers_for_float_keys(write) -> None:  # type: ignore[no-untyped-def]
    # PyYAML reads `1e-300` (no dot) as a string; a float key takes it as the number it spells.
    recipe = load_recipe(write(GOOD.replace("weight: 0.6", "weight: 1e-300")))
    assert recipe.sources[0].weight == 1e-300


def test_epochs_only_needs_no_size(write) -> None:  # type: ignore[no-untyped-def]
    recipe = load_recipe(write("seed: 0\nsources:\n  - {path: ../data/a, epochs: 2}\n  - {path: ../data/b, "
                               "epochs: 0.5}\n"))
    assert recipe.size is None and [s.epochs for s in recipe.sources] == [2.0, 0.5] and recipe.name == "r"


@pytest.mark.parametrize(("old", "new", "key"), [
    ("seed: 3", "sed: 3", ": sed: unknown key"),
    ("    max: 50", "    maxx: 50", "sources[1].maxx: unknown key"),
    ("seed: 3", "seed: three", "seed: must be an integer"),
    ("seed: 3", "seed: true", "seed: must be an integer"),
    ("seed: 3", "seed: -1", "seed: must be >= 0"),
    ("size: 1000", "size: 10.5", "size: must be an integer"),
    ("size: 1000", "size: 0", "size: must be >= 1"),
    ("weight: 2", "weight: 0", "sources[1].weight: must be > 0"),
    ("weight: 2", "weight: -1", "sources[1].weight: must be > 0"),
    ("weight: 2", "weight: heavy", "sources[1].weight: must be a number"),
    ("weight: 2", "weight: .nan", "sources[1].weight: must be > 0"),
    ("max: 50", "max: 0", "sources[1].max: must be >= 1"),
    ("max: 50", "max: 2.5", "sources[1].max: must be an integer"),
    ("weight: 2", "weight: 2\n    epochs: 1", "sources[1]: has both `weight` and `epochs`"),
    ("    weight: 2\n", "", "sources[1]: needs `weight:`"),
    ("../data/b", "../data/missing", "sources[1].path: "),
    ("../data/b", "../data", "is not a built mmdata dataset"),
    ("  - path: ../data/b", "  - name: x", "sources[1].path: missing"),
    ("size: 1000\n", "", "sources[0].weight: a weight is a share of `size`"),
    ("../data/b", "../data/a", "sources[1].name: 'a' is already the name of sources[0]"),
    ("name: demo", "name: 5", ": name: must be a string or null, got int 5"),
    ("name: demo", "name: ' '", ": name: must be a non-empty string"),
    ("size: 1000", "size: 1e3", ": size: must be an integer or null, got float 1000.0"),
])
def test_every_error_names_its_key(write, old: str, new: str, key: str) -> None:  # type: ignore[no-untyped-def]
    assert old in GOOD
    path = write(GOOD.replace(old, new))
    with pytest.raises(RecipeError, match=None) as e:
        load_recipe(path)
    assert str(e.value).startswith(str(path)) and key in str(e.value), str(e.value)


def test_size_with_only_epochs_is_two_sizing_modes(write) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError, match=r": size: every source is sized by `epochs`"):
        load_recipe(write("size: 10\nsources:\n  - {path: ../data/a, epochs: 1}\n"))


@pytest.mark.parametrize("text", ["[1, 2]", "sources: []", "sources: {path: x}", "sources:\n  - just-a-path\n",
                                  "sources: [\n"])
def test_malformed_recipes(write, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError):
        load_recipe(write(text))


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path: Path) -> None:
    # Their datasets are built by `make demo` (or elsewhere), so only the recipe itself is checked here.
    recipe = load_recipe(path, check_paths=False)
    assert recipe.sources
