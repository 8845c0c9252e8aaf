"""The `mmdata` CLI as a user runs it (Typer's CliRunner): exit codes, one-line errors, readable output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.testing.llava import World

runner = CliRunner()


@pytest.fixture(scope="module")
def built(llava_world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ds"
    result = runner.invoke(app, ["build", "cambrian", "--input", str(llava_world.jsonl), "--input",
                                 str(llava_world.json_array), "--media-root", str(llava_world.media_root),
                                 "--out", str(out), "--format", "both", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"{llava_world.expected_written} written, {llava_world.expected_rejected} rejected" in result.output
    return out


def test_help_for_every_command() -> None:
    for args in (["--help"], ["build", "--help"], ["build", "cambrian", "--help"], ["inspect", "--help"],
                 ["validate", "--help"], ["stats", "--help"], ["mix", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert "--media-root" in runner.invoke(app, ["build", "cambrian", "--help"]).output


def test_inspect_shows_counts_tables_and_records(built: Path) -> None:
    result = runner.invoke(app, ["inspect", str(built), "--n", "2"])
    assert result.exit_code == 0, result.output
    for text in ("read / written / rejected", "per task", "per source", "vqa", "media[0] input"):
        assert text in result.output


def test_stats_json(built: Path) -> None:
    result = runner.invoke(app, ["stats", str(built), "--json"])
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert stats["records"] > 0 and stats["media"]["targets"] == 0 and stats["media_width"]["max"] == 80


def test_validate_passes_then_fails_on_a_broken_media_file(built: Path, llava_world: World, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(built)])
    assert result.exit_code == 0 and "OK" in result.output
    # break one image under a copy of the dataset's media root
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    media = tmp_path / "media"
    shutil.copytree(llava_world.media_root, media)
    manifest = json.loads((copy / "dataset.json").read_text())
    manifest["media_root"] = str(media)
    (copy / "dataset.json").write_text(json.dumps(manifest))
    (media / "coco" / "000003.jpg").write_bytes(b"not an image")
    result = runner.invoke(app, ["validate", str(copy)])
    assert result.exit_code == 1
    assert "does not decode as an image" in result.output and "FAILED" in result.output


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "cambrian", "--input", str(tmp_path / "nope.jsonl"), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "error: " in result.output and "nope.jsonl: input file not found" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "not an mmdata dataset" in result.output


def test_build_resume_reports_the_same_counts(built: Path, llava_world: World) -> None:
    result = runner.invoke(app, ["build", "cambrian", "--input", str(llava_world.jsonl), "--input",
                                 str(llava_world.json_array), "--media-root", str(llava_world.media_root),
                                 "--out", str(built), "--format", "both", "--quiet"])
    assert result.exit_code == 0 and f"{llava_world.expected_written} written" in result.output


def test_report_shows_sampled_records_with_their_images(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(built), "--out", str(out), "--n", "6"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count('class="rec"') == 6
    assert page.count('<img class="input"') >= 3  # the world is mostly VQA: inputs, inline as data URIs
    assert "Most common reject reasons" in page and "file not found under media root" in page


def test_report_of_a_mixture_lists_its_sources(built: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nseed: 1\nsize: 30\nsources:\n  - path: {built}\n    weight: 1\n")
    assert runner.invoke(app, ["mix", str(recipe), "--out", str(tmp_path / "mix")]).exit_code == 0
    result = runner.invoke(app, ["report", str(tmp_path / "mix"), "--out", str(tmp_path / "m.html"), "--n", "3"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "m.html").read_text()
    assert "<h2>Sources</h2>" in page and "30 (100.0 %" in page and page.count('class="rec"') == 3
