"""Flags generated from typed options (`mmdata.core.flags`): names, switches, lists, optional keys, choices, URLs,
unknown flags; the real commands keep their flags and defaults; `mmdata mix` takes `--key VALUE` overrides."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from mmdata.build.driver import BuildSettings
from mmdata.core.commands import user_errors
from mmdata.core.flags import OptionsCommand, overrides_last, switch_words, typed_command
from mmdata.core.options import ConfigError, opt, overview, parse_overrides

runner = CliRunner()


@dataclass
class Toy:
    name: str = opt(short="-n", help="What it is called")
    input: list[Path] = opt(help="Input file (repeat for several)", factory=list)
    root: Path | None = opt(None, help="Folder the inputs are relative to")
    mode: Literal["plain", "fancy"] = "plain"  # how it looks
    limit: int | None = None  # at most this many
    rate: float = 0.5  # frames per second
    borders: bool = False  # draw borders
    size: int = opt(3, flag="--toy-size", help="Cells per side")

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError(f"must be > 0, got {self.rate}", key="rate")


@dataclass
class Display:
    verbose: bool = opt(True, short="-v", help="Say what happens")


def _app(seen: list[dict[str, Any]]) -> typer.Typer:
    def run(toy: Toy, display: Display, quiet: bool) -> None:
        seen.append({"toy": toy, "display": display, "quiet": quiet})

    quiet = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                              default=typer.Option(False, "--quiet", "-q", help="No output"))
    app = typer.Typer()
    command = user_errors(typed_command(run, {"toy": Toy, "display": Display}, where={"toy": "toy."}, after=[quiet]))
    app.command("toy", cls=OptionsCommand)(command)
    app.command("other")(lambda: None)  # a second command keeps `toy` a subcommand
    return app


def _run(*args: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []
    result = runner.invoke(_app(seen), ["toy", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def _flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())  # an error box's lines, joined


def _fails(*args: str, code: int = 2) -> str:
    result = runner.invoke(_app([]), ["toy", *args])
    assert result.exit_code == code, result.output
    return _flat(result.output)


def _options(command: Any) -> set[str]:
    return {name for p in command.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}


def test_flag_names_aliases_and_switch_pairs() -> None:
    command = typer.main.get_command(_app([])).commands["toy"]  # type: ignore[attr-defined]
    assert _options(command) == {"--name", "-n", "--input", "--root", "--mode", "--limit", "--rate", "--borders",
                                 "--no-borders", "--toy-size", "--verbose", "-v", "--no-verbose", "--quiet", "-q"}
    defaults = {p.name: p.default for p in command.params}
    assert defaults["toy__rate"] == 0.5 and defaults["toy__size"] == 3
    assert defaults["toy__mode"] == "plain" and defaults["display__verbose"] is True
    assert defaults["toy__limit"] is None and defaults["toy__root"] is None
    required = {p.name for p in command.params if p.required}
    assert required == {"toy__name"}


def test_help_shows_every_key_with_its_doc_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 250)
    out = runner.invoke(_app([]), ["toy", "--help"]).output
    for text in ("What it is called", "Input file (repeat for several)", "how it looks", "plain|fancy",
                 "[default: plain]", "frames per second", "[default: 0.5]", "draw borders", "[default: no-borders]",
                 "Cells per side", "[default: 3]", "Say what happens", "[default: verbose]", "[required]"):
        assert text in out, text


def test_values_are_built_by_from_dict_and_urls_stay_strings() -> None:
    seen = _run("-n", "x", "--input", "a.json", "--input", "s3://bucket/b.json/", "--root", "s3://bucket/media/",
                "--mode", "fancy", "--limit", "3", "--rate", "2", "--toy-size", "5")
    assert seen["toy"] == Toy(name="x", input=[Path("a.json"), "s3://bucket/b.json"], root="s3://bucket/media",
                              mode="fancy", limit=3, rate=2.0, size=5)
    assert isinstance(seen["toy"].rate, float) and isinstance(seen["toy"].input[0], Path)
    assert _run("-n", "x", "--root", "/data/media")["toy"].root == Path("/data/media")


def test_keys_not_given_keep_the_dataclass_defaults() -> None:
    seen = _run("--name", "x")
    assert seen["toy"] == Toy(name="x") and seen["toy"].input == [] and seen["toy"].limit is None
    assert seen["display"] == Display() and seen["quiet"] is False


@pytest.mark.parametrize(("args", "borders", "verbose"), [
    ((), False, True),
    (("--borders",), True, True),
    (("--no-borders", "--no-verbose"), False, False),
    (("--borders", "true"), True, True),
    (("--borders", "false"), False, True),
    (("--borders=TRUE", "--verbose=false"), True, False),
    (("--borders=yes", "-v", "no"), True, False),
    (("--borders", "false", "--borders", "true"), True, True),  # the last one wins, as for any flag
    (("-v", "false"), False, False),
])
def test_switches_take_both_spellings_and_yaml_words(args: tuple[str, ...], borders: bool, verbose: bool) -> None:
    seen = _run("-n", "x", *args)
    assert (seen["toy"].borders, seen["display"].verbose) == (borders, verbose)


def test_a_switch_word_does_not_swallow_the_next_flag() -> None:
    seen = _run("--borders", "-n", "true")  # `true` is the name here, after -n
    assert seen["toy"].borders is True and seen["toy"].name == "true"
    assert _run("--quiet", "true", "-n", "x")["quiet"] is True


def test_a_wrong_switch_word_is_one_line_saying_how() -> None:
    out = _fails("-n", "x", "--borders=maybe")
    assert "write --borders or --no-borders (or --borders true / --borders false), not --borders=maybe" in out
    out = _fails("-n", "x", "--quiet", "false")  # a switch without an off spelling
    assert "write --quiet or leave it out, not --quiet false" in out


def test_unknown_flags_choices_and_types_are_refused_naming_the_flag() -> None:
    assert "No such option: --sped" in _fails("-n", "x", "--sped", "2")
    assert "'ugly' is not one of 'plain', 'fancy'" in _fails("-n", "x", "--mode", "ugly")
    assert "Invalid value for '--limit': Input should be a valid integer" in _fails("-n", "x", "--limit", "many")
    assert "Missing option '--name'" in _fails()
    # Value rules of the dataclass: the same check and message as the key in a YAML file, keyed `toy.rate`.
    assert "error: toy.rate: must be > 0, got 0.0" in _fails("-n", "x", "--rate", "0", code=1)


def test_two_keys_claiming_one_flag_or_a_key_without_a_flag_are_refused() -> None:
    @dataclass
    class Clash:
        toy_size: int = 1  # its flag is --toy-size, Toy's `size` claims it too

    with pytest.raises(ValueError, match="--toy-size is the flag of both toy__size and clash__toy_size"):
        typed_command(lambda **kw: None, {"toy": Toy, "clash": Clash})

    @dataclass
    class Nested:
        inner: Toy = field(default_factory=lambda: Toy(name="x"))

    with pytest.raises(TypeError, match="inner: a .* key has no command-line flag"):
        typed_command(lambda **kw: None, {"n": Nested})

    @dataclass
    class Maybe:
        flag: bool | None = None

    with pytest.raises(TypeError, match="flag: a switch is on or off"):
        typed_command(lambda **kw: None, {"m": Maybe})


def test_build_settings_flags_keep_their_names_aliases_and_values() -> None:
    seen: list[BuildSettings] = []
    app = typer.Typer()
    app.command("b", cls=OptionsCommand)(typed_command(lambda settings: seen.append(settings), {"settings": BuildSettings}))
    app.command("other")(lambda: None)
    result = runner.invoke(app, ["b", "-o", "s3://bucket/ds/", "--format", "both", "-w", "3", "--copy-media", "true",
                                 "--shard-size", "7", "--limit", "0", "--overwrite", "--engine", "ray",
                                 "--ray-address", "head:6379", "--storage-options", '{"anon": true}'])
    assert result.exit_code == 0, result.output
    assert seen[0] == BuildSettings(out="s3://bucket/ds", format="both", workers=3, copy_media=True, shard_size=7,
                                    limit=0, overwrite=True, engine="ray", ray_address="head:6379")
    assert seen[0].storage_options == {"anon": True}  # not compared by ==: it is never stored
    result = runner.invoke(app, ["b", "--out", "d"])
    assert seen[1] == BuildSettings(out=Path("d")) and seen[1].storage_options is None and seen[1].out == Path("d")


def test_mmdata_build_keeps_every_flag_and_shows_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from builders.cambrian import CambrianOptions
    from mmdata.cli import app

    command = typer.main.get_command(app).commands["build"].commands["cambrian"]  # type: ignore[attr-defined]
    assert _options(command) == {
        "--input", "--media-root", "--out", "-o", "--format", "--workers", "-w", "--copy-media", "--no-copy-media",
        "--shard-size", "--limit", "--overwrite", "--no-overwrite", "--engine", "--ray-address", "--storage-options",
        "--quiet", "-q", "--no-quiet"}
    defaults = {p.name: p.default for p in command.params}
    assert (defaults["settings__format"], defaults["settings__workers"], defaults["settings__shard_size"],
            defaults["settings__engine"], defaults["settings__ray_address"]) == ("jsonl", 1, 10_000, "local", "auto")
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 400)
    out = runner.invoke(app, ["build", "cambrian", "--help"]).output
    for key in (*overview(CambrianOptions), *overview(BuildSettings)):
        assert key[2].split(" (default")[0] in out, key


def test_dedup_and_decontaminate_flags_keep_their_names_and_defaults() -> None:
    from mmdata.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    dedup, decontaminate = commands["dedup"], commands["decontaminate"]
    assert _options(dedup) == {"--out", "-o", "--storage-options", "--images", "--text", "--workers", "-w", "--cache"}
    assert _options(decontaminate) == {"--against", "--out", "-o", "--storage-options", "--distance", "--ngram",
                                       "--min-words", "--workers", "-w", "--cache"}
    assert {p.name: p.default for p in dedup.params if p.name.startswith("opts")} == {
        "opts__images": "phash:4", "opts__text": "minhash:0.8", "opts__workers": 2, "opts__cache": None}
    assert {p.name: p.default for p in decontaminate.params if p.name.startswith("opts")} == {
        "opts__distance": 4, "opts__ngram": 13, "opts__min_words": 8, "opts__workers": 2, "opts__cache": None}


def test_dedup_flags_are_checked_by_the_options_dataclass(tmp_path: Path) -> None:
    from mmdata.cli import app

    r = runner.invoke(app, ["dedup", str(tmp_path), "--out", str(tmp_path / "v"), "--images", "none", "--text", "none"])
    assert r.exit_code == 1 and "error: images: both criteria are `none`" in r.output
    r = runner.invoke(app, ["decontaminate", str(tmp_path), "--against", str(tmp_path), "--out", str(tmp_path / "v"),
                            "--ngram", "2"])
    assert r.exit_code == 1 and "error: ngram: must be in [3, 64], got 2" in r.output


@pytest.mark.parametrize(("argv", "help_of"), [(("stage1",), "TrainRecipe"), (("visualizer",), "VisualizerRecipe")])
def test_mmtrain_help_lists_every_recipe_key_with_doc_and_default(argv: tuple[str, ...], help_of: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import recipe
    from trainer.cli import app
    from trainer.visualizer import config

    cls = getattr(recipe, help_of, None) or getattr(config, help_of)
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 400)
    out = runner.invoke(app, [*argv, "--help"]).output
    rows = overview(cls)
    assert len(rows) > 40
    for key, kind, text in rows:
        assert f"{key} ({kind}): {text}".rstrip(": ") in out, key
    # An inherited key keeps its doc (the visualizer's optim section subclasses the stages'); defaults read as YAML.
    assert "optim.lr (a number): peak learning rate (reached at the end of the warmup) (default 2.0e-05)" in out
    assert "logging.tensorboard (true or false): TensorBoard logs in <output_dir>/tb (default true)" in out


def test_mmtrain_overrides_may_come_before_the_config_and_switch_words_are_checked() -> None:
    from trainer.cli import app

    tiny = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "stage1.yaml"
    r = runner.invoke(app, ["stage1", "--optim.lrr", "1", "--config", str(tiny)])
    assert r.exit_code == 1 and "optim.lrr: unknown key; accepted keys are lr, " in r.output
    r = runner.invoke(app, ["stage1", "--config", str(tiny), "--resume", "false"])
    assert r.exit_code == 2 and "write --resume or leave it out, not --resume false" in _flat(r.output)


def test_overrides_last_and_switch_words_rewrite_only_what_they_own() -> None:
    from mmdata.cli import app

    mix = typer.main.get_command(app).commands["mix"]  # type: ignore[attr-defined]
    params = mix.get_params(typer.Context(mix))
    args = ["--seed", "3", "r.yaml", "--dry-run", "--name=x", "-o", "out", "--size", "-1", "--filters.max_media"]
    assert overrides_last(params, args) == ["r.yaml", "--dry-run", "-o", "out", "--seed", "3", "--name=x", "--size",
                                            "-1", "--filters.max_media"]
    assert overrides_last(params, ["r.yaml", "--", "--seed", "3"]) == ["r.yaml", "--", "--seed", "3"]
    assert switch_words(params, ["--dry-run", "off", "--out", "true"]) == ["--no-dry-run", "--out", "true"]
    assert switch_words(params, ["--", "--dry-run", "false"]) == ["--", "--dry-run", "false"]


def test_an_override_without_its_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"override --data\.packing has no value; write --data\.packing VALUE"):
        parse_overrides(["--data.packing", "--optim.lr", "1e-4"])
    assert parse_overrides(["--optim.lr", "-1", "--x=--y"]) == {"optim.lr": -1, "x": "--y"}


# ------------------------------------------------------------------------------------------ mix overrides


@pytest.fixture(scope="module")
def mix_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import build

    root = tmp_path_factory.mktemp("mixflags")
    for name, n in (("a", 40), ("b", 15)):
        src = root / f"{name}.jsonl"
        src.write_text("".join(json.dumps({"id": f"{name}{i}", "conversations": [
            {"from": "human", "value": f"question {i}"}, {"from": "gpt", "value": f"answer {i}"}]}) + "\n"
            for i in range(n)))
        build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=root / "data" / name, shard_size=16))
    (root / "recipes").mkdir()
    (root / "recipes" / "r.yaml").write_text(
        "seed: 0\nsize: 20\nsources:\n  - {path: ../data/a, weight: 2}\n  - {path: ../data/b, weight: 1}\n")
    return root


def test_mix_overrides_equal_the_same_keys_written_in_the_file(mix_world: Path, tmp_path: Path) -> None:
    from mmdata.cli import app

    recipes = mix_world / "recipes"
    written = recipes / "written.yaml"
    written.write_text("seed: 3\nsize: 30\nname: x\nfilters: {max_media: 0}\n"
                       "sources:\n  - {path: ../data/a, weight: 2}\n  - {path: ../data/b, weight: 1}\n")
    r = runner.invoke(app, ["mix", "--seed", "3", str(recipes / "r.yaml"), "--size=30", "--name", "x",
                            "--filters.max_media", "0", "--out", str(tmp_path / "over")])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["mix", str(written), "--out", str(tmp_path / "file")]).exit_code == 0
    assert (tmp_path / "over" / "index.npy").read_bytes() == (tmp_path / "file" / "index.npy").read_bytes()
    over, file = (json.loads((tmp_path / d / "mixture.json").read_text()) for d in ("over", "file"))
    assert over["recipe"] == file["recipe"] == {"seed": 3, "size": 30, "name": "x", "filters": {"max_media": 0},
                                                "sources": file["recipe"]["sources"]}
    assert over["name"] == "x" and over["recipe_sha256"] == file["recipe_sha256"]
    base = runner.invoke(app, ["mix", str(recipes / "r.yaml"), "--out", str(tmp_path / "base")])
    assert base.exit_code == 0
    assert json.loads((tmp_path / "base" / "mixture.json").read_text())["recipe"] == {
        "seed": 0, "size": 20, "sources": [{"path": "../data/a", "weight": 2}, {"path": "../data/b", "weight": 1}]}


def test_mix_override_errors_name_the_file_and_key(mix_world: Path) -> None:
    from mmdata.cli import app

    recipe = str(mix_world / "recipes" / "r.yaml")
    r = runner.invoke(app, ["mix", recipe, "--sed", "3", "--dry-run"])
    assert r.exit_code == 1
    assert f"error: {recipe}: sed: unknown key; accepted keys are sources, name, seed, size, filters, license" in r.output
    r = runner.invoke(app, ["mix", recipe, "--size", "many", "--dry-run"])
    assert r.exit_code == 1 and f"{recipe}: size: must be an integer or null, got str 'many'" in r.output
    r = runner.invoke(app, ["mix", recipe, "--seed", "-1", "--dry-run"])
    assert r.exit_code == 1 and "seed: must be >= 0, got -1" in r.output
    r = runner.invoke(app, ["mix", recipe, "--dry-run", "maybe"])  # not a switch word: taken for an override
    assert r.exit_code == 1 and "override 'maybe': expected --section.key VALUE" in r.output


def test_mix_override_sources_are_relative_to_the_working_directory(mix_world: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdata.mix.recipe import load_recipe

    monkeypatch.chdir(mix_world / "data")
    recipe = load_recipe(mix_world / "recipes" / "r.yaml", overrides={"sources": [{"path": "b", "epochs": 2}], "size": None})
    assert [s.path for s in recipe.sources] == [mix_world / "data" / "b"] and recipe.sources[0].epochs == 2.0
    recipe = load_recipe(mix_world / "recipes" / "r.yaml")  # the file's own paths: relative to the file
    assert [s.path for s in recipe.sources] == [mix_world / "data" / "a", mix_world / "data" / "b"]
