"""The quality commands as a user runs them, and the data card."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.report.card import card_markdown
from tests.quality.conftest import Built

runner = CliRunner()


def test_dedup_decontaminate_mix_card(built: Built, tmp_path: Path) -> None:
    cache = ["--cache", str(built.cache)]
    r = runner.invoke(app, ["dedup", str(built.a), str(built.b), "--out", str(tmp_path / "d"), *cache])
    assert r.exit_code == 0, r.output
    assert "6 removed" in r.output and "b: 2 identical text + near-identical images" in r.output
    for command in (["inspect", "--n", "1"], ["stats"], ["validate", "--no-media"]):  # a view reads like a dataset
        r = runner.invoke(app, [command[0], str(tmp_path / "d"), *command[1:]])
        assert r.exit_code == 0, (command, r.output)
    assert "dedup view: read / kept / removed" in runner.invoke(app, ["inspect", str(tmp_path / "d")]).output
    r = runner.invoke(app, ["decontaminate", str(tmp_path / "d"), "--against", str(built.world.evals),
                            "--out", str(tmp_path / "c"), *cache])
    assert r.exit_code == 0, r.output
    assert "2 removed" in r.output and "d: 1 evals: image" in r.output and "d: 1 evals: question" in r.output
    (tmp_path / "r.yaml").write_text("license: research only\nsources:\n"
                                     "  - {path: c, epochs: 1, license: CC-BY-4.0}\n")
    assert runner.invoke(app, ["mix", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "m")]).exit_code == 0

    r = runner.invoke(app, ["card", str(tmp_path / "m"), "--out", str(tmp_path / "CARD.md")])
    assert r.exit_code == 0, r.output
    card = (tmp_path / "CARD.md").read_text()
    assert "A mixture of" in card and "| c | CC-BY-4.0 |" in card and "| (mixture) | research only |" in card
    assert "decontaminate view" in card  # its source, one level down
    view_card = card_markdown(tmp_path / "c")
    assert "| d: evals: image | 1 |" in view_card and '"ngram": 13' in view_card and "| datasketch |" in view_card
    data_card = card_markdown(built.a, ["CC-BY-SA-4.0"])
    assert "builder: `cambrian`" in data_card and "| (declared) | CC-BY-SA-4.0 |" in data_card
    assert "No record was rejected." in data_card


def test_cli_errors_are_one_line(built: Built, tmp_path: Path) -> None:
    r = runner.invoke(app, ["dedup", str(built.a), "--out", str(tmp_path / "v"), "--images", "blurry"])
    assert r.exit_code == 1 and "images: 'blurry' is not one of none, exact, phash" in r.output
    r = runner.invoke(app, ["decontaminate", str(built.a), "--against", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "v")])
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output
