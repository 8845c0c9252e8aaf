"""The one-line error wrapper of both CLIs: the project's user errors are one line and exit 1; anything else is a
bug and keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import mmdata
from mmdata.build.driver import BuildError
from mmdata.cli import app
from mmdata.core.commands import user_errors
from mmdata.core.errors import InputError, NotFound, UserError
from mmdata.core.media import MediaError
from mmdata.core.schema import RecordError
from mmdata.mix.recipe import RecipeError
from trainer.cli import app as train_app
from trainer.config import ConfigError
from trainer.templates import LabelError

runner = CliRunner()


@pytest.mark.parametrize("error", [BuildError, RecipeError, RecordError, MediaError, ConfigError, LabelError,
                                   InputError, NotFound])
def test_project_errors_are_user_errors_and_keep_their_builtin_base(error: type[Exception]) -> None:
    assert issubclass(error, UserError)
    assert issubclass(error, ValueError if error is not NotFound else FileNotFoundError)


def test_user_error_is_one_line_on_stderr_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    @user_errors
    def command() -> None:
        raise InputError("--thing 3: must be >= 4")

    with pytest.raises(typer.Exit) as e:
        command()
    assert e.value.exit_code == 1
    assert capsys.readouterr().err == "error: --thing 3: must be >= 4\n"


@pytest.mark.parametrize("bug", [KeyError("shard"), ValueError("bad offset"), FileNotFoundError("x"), TypeError()])
def test_internal_errors_are_not_swallowed(bug: Exception) -> None:
    @user_errors
    def command() -> None:
        raise bug

    with pytest.raises(type(bug)):
        command()


def test_mmdata_cli_shows_a_traceback_for_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path, **_: object) -> None:
        raise KeyError("an internal lookup")

    monkeypatch.setattr(mmdata, "open", broken)
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert isinstance(result.exception, KeyError) and "error:" not in result.output
    assert result.exc_info is not None and result.exc_info[2] is not None  # the traceback is there


def test_mmdata_cli_builder_option_error_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "cc12m", "--input", str(tmp_path / "x.tsv"), "--image-size", "0",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and not isinstance(result.exception, InputError)
    assert "error: --image-size must be >= 1, got 0" in result.output and "Traceback" not in result.output


def test_mmtrain_cli_user_error_and_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(train_app, ["stage1", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "error: " in result.output and "missing.yaml" in result.output

    import trainer.recipe

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal invariant")

    monkeypatch.setattr(trainer.recipe, "load_recipe", broken)
    result = runner.invoke(train_app, ["stage1", "--config", str(tmp_path / "missing.yaml")])
    assert isinstance(result.exception, ValueError) and "error:" not in result.output
