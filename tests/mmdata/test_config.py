"""One config mechanism: builder flags, mixture recipes and training recipes are validated by `mmdata.core.options`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from mmdata.build.registry import Builder
from mmdata.cli.build import _command
from mmdata.core.options import ConfigError, from_dict, keys, opt
from mmdata.mix.recipe import MixRecipe, RecipeError, load_recipe
from trainer.recipe import TrainRecipe
from trainer.recipe import load_recipe as load_train_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny" / "stage1.yaml"


@dataclass
class Inner:
    rate: float = 0.5  # how fast
    mode: Literal["a", "b"] = "a"
    """Which mode: a or b."""
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ConfigError(f"must be >= 0, got {self.rate}", key="rate")


@dataclass
class Outer:
    name: str = opt(help="What it is called")
    inner: Inner = field(default_factory=Inner)
    parts: list[Inner] = field(default_factory=list)
    limit: int | None = None


@pytest.mark.parametrize(("raw", "message"), [
    ({"name": "x", "nmae": 1}, "nmae: unknown key; accepted keys are name, inner, parts, limit"),
    ({"name": "x", "inner": {"rat": 1}}, "inner.rat: unknown key"),
    ({"name": "x", "parts": [{}, {"mdoe": "a"}]}, "parts[1].mdoe: unknown key"),
    ({}, "name: missing"),
    ({"name": 3}, "name: must be a string, got int 3"),
    ({"name": "x", "limit": "3"}, "limit: must be an integer or null, got str '3'"),
    ({"name": "x", "limit": True}, "limit: must be an integer or null, got bool True"),
    ({"name": "x", "inner": {"mode": "c"}}, "inner.mode: must be one of ['a', 'b'], got str 'c'"),
    ({"name": "x", "inner": {"tags": ["a", 2]}}, "inner.tags[1]: must be a string, got int 2"),
    ({"name": "x", "inner": {"rate": "fast"}}, "inner.rate: must be a number, got str 'fast'"),
    ({"name": "x", "inner": [1]}, "inner: must be a mapping (Inner), got list [1]"),
    ({"name": "x", "parts": [{"rate": -1}]}, "parts[0].rate: must be >= 0, got -1.0"),  # __post_init__, re-keyed
])
def test_errors_name_the_key_and_the_expected_type(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, raw)
    assert str(e.value) == message or str(e.value).startswith(message), str(e.value)


def test_types_convert_and_yaml_exponents_are_numbers() -> None:
    # PyYAML reads `1e-300` as a string; a float key takes it as the number.
    out = from_dict(Outer, {"name": "x", "inner": {"rate": "1e-300", "tags": ["t"]}, "parts": [{"rate": 2}]})
    assert out.inner.rate == 1e-300 and out.inner.tags == ["t"] and out.parts[0].rate == 2.0
    assert isinstance(out.parts[0].rate, float) and out.limit is None


def test_help_comes_from_opt_the_docstring_or_the_comment() -> None:
    assert [k.help for k in keys(Inner)] == ["how fast", "Which mode: a or b.", ""]
    assert keys(Outer)[0].help == "What it is called"


@dataclass
class ToyOptions:
    input: list[Path] = opt(help="Toy input file (repeat for several)", factory=list)
    speed: float = 1.0  # frames per second sampled
    style: Literal["plain", "fancy"] = "plain"

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ConfigError(f"must be > 0, got {self.speed}", key="speed")


def _toy_app() -> typer.Typer:
    app = typer.Typer()
    builder = Builder(name="toy", help="toy", options=ToyOptions, units=lambda o, s, n: [], records=lambda o, u: [])
    app.command("toy")(_command(builder))
    app.command("other")(lambda: None)  # a second command keeps `toy` a subcommand
    return app


def test_builder_flags_are_generated_with_help_from_the_field_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 200)  # no wrapping inside the help texts
    out = CliRunner().invoke(_toy_app(), ["toy", "--help"]).output
    assert "--input" in out and "Toy input file (repeat for several)" in out
    assert "--speed" in out and "frames per second sampled" in out and "plain|fancy" in out


def test_builder_flags_are_validated_by_the_same_mechanism(tmp_path: Path) -> None:
    app, runner = _toy_app(), CliRunner()
    result = runner.invoke(app, ["toy", "--speed", "0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "toy.speed: must be > 0, got 0.0" in result.output
    result = runner.invoke(app, ["toy", "--sped", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--sped" in result.output  # the generated parser knows only the keys
    with pytest.raises(ConfigError, match=r"^toy\.sped: unknown key; accepted keys are input, speed, style"):
        from_dict(ToyOptions, {"sped": 2}, where="toy.")


def _mix_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    return path


def test_one_mechanism_for_all_three(tmp_path: Path) -> None:
    # The same validator, the same `section.key` message, from a mix recipe, a train recipe and an override.
    mix = _mix_recipe(tmp_path, "size: 10\nsources:\n  - {path: a, weight: 1, wieght: 2}\n")
    with pytest.raises(RecipeError, match=r"mix\.yaml: sources\[0\]\.wieght: unknown key"):
        load_recipe(mix, check_paths=False)
    mix = _mix_recipe(tmp_path, "size: 10\nsources:\n  - {path: a, weight: [1]}\n")
    with pytest.raises(RecipeError, match=r"sources\[0\]\.weight: must be a number or null, got list"):
        load_recipe(mix, check_paths=False)

    train = tmp_path / "stage1.yaml"
    train.write_text(TINY.read_text().replace("optim:\n", "optim:\n  lrr: 1\n", 1))
    assert "lrr" in train.read_text()
    with pytest.raises(ConfigError, match=r"stage1\.yaml: optim\.lrr: unknown key; accepted keys are lr, "):
        load_train_recipe(train)
    with pytest.raises(ConfigError, match=r"optim\.lr: must be a number, got str 'fast'"):
        load_train_recipe(TINY, {"optim.lr": "fast"})
    with pytest.raises(ConfigError, match=r"optim\.nope: unknown key"):
        load_train_recipe(TINY, {"optim.nope": 1})
    with pytest.raises(ConfigError, match=r"sectionx: unknown key; accepted keys are stage, output_dir, data"):
        load_train_recipe(TINY, {"sectionx.key": 1})
    with pytest.raises(ConfigError, match=r"model\.num_image_tokens: must be >= 1, got 0"):
        load_train_recipe(TINY, {"model.num_image_tokens": 0})
    assert load_train_recipe(TINY, {"optim.lr": "1e-300"}).optim.lr == 1e-300

    assert issubclass(RecipeError, ConfigError)
    assert {k.name for k in keys(MixRecipe)} == {"sources", "name", "seed", "size", "filters", "license"}  # not file, data
    assert [k.name for k in keys(TrainRecipe)][:3] == ["stage", "output_dir", "data"]


def test_mmtrain_keys_lists_every_key_with_its_doc() -> None:
    from trainer.cli import app

    out = CliRunner().invoke(app, ["keys"]).output
    assert "optim.lr " in out and "data.mixture" in out and "a directory written by `mmdata mix`" in out


def test_mmdata_mix_help_lists_the_recipe_keys_with_their_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdata.cli import app

    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 200)
    out = CliRunner().invoke(app, ["mix", "--help"]).output
    assert "sources[].weight (a number or null): a share of the recipe's `size`" in out
