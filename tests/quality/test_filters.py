"""Recipe filters (global and per source) and a dedup view as a mixture source; the dry-run plan counts removals."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import mmdata
from mmdata.cli import app
from mmdata.mix.planner import make_plan, mix
from mmdata.mix.recipe import RecipeError, load_recipe
from mmdata.quality.dedup import DedupOptions, dedup
from tests.quality.conftest import Built

RECIPE = """
seed: 3
filters: {exclude_tasks: [text]}
sources:
  - {path: view, epochs: 1, license: CC-BY-4.0}
  - {path: b, epochs: 2, filters: {min_side: 100, text: {gpt: {max: 38}}, exclude_tasks: []}}
"""


def test_filters_and_a_view_as_a_source(built: Built, tmp_path: Path) -> None:
    dedup([built.a, built.b], tmp_path / "view", DedupOptions(cache=built.cache))
    (tmp_path / "b").symlink_to(built.b)
    (tmp_path / "r.yaml").write_text(RECIPE)
    view, b = mmdata.open(tmp_path / "view"), mmdata.open(built.b)
    want_view = [r.id for r in view if r.task != "text"]
    gpt_chars = lambda r: sum(len(t.value.strip()) for t in r.conversations if t.role == "gpt")  # noqa: E731
    small = [r.id for r in b if any(min(m.width, m.height) < 100 for m in r.media)]
    long = [r.id for r in b if gpt_chars(r) > 38]
    want_b = [r.id for r in b if r.id not in small and r.id not in long]
    assert 0 < len(want_view) < len(view) and 0 < len(want_b) < len(b)

    plan = make_plan(load_recipe(tmp_path / "r.yaml"))
    s_view, s_b = plan.sources
    assert (s_view.available, s_view.length, s_b.length) == (len(view), len(want_view), len(want_b))
    assert s_view.filtered == {"exclude_tasks": 4}  # A's text-only records (B's copy of one was a duplicate)
    assert s_b.filtered == {"min_side": len(small), "text.gpt": len(long), "exclude_tasks": 0} and len(small) == 1

    mix(tmp_path / "r.yaml", tmp_path / "m")
    ids = [r.id for r in mmdata.open(tmp_path / "m")]
    assert sorted(ids) == sorted(want_view + 2 * want_b)

    result = CliRunner().invoke(app, ["mix", str(tmp_path / "r.yaml"), "--dry-run"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "filtered out" in result.output and "exclude_tasks 4" in result.output and "min_side 1, text.gpt" in result.output


def test_filter_errors_name_the_key(built: Built, tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(built.a)
    for body, match in [("filters: {min_sid: 3}", r"filters\.min_sid: unknown key"),
                        ("filters: {max_aspect: 0.5}", r"filters\.max_aspect: must be a number >= 1"),
                        ("filters: {text: {human: {min: 9, max: 2}}}", r"filters\.text\.human: min 9 is above max 2")]:
        (tmp_path / "r.yaml").write_text(f"{body}\nsources:\n  - {{path: a, epochs: 1}}\n")
        with pytest.raises(RecipeError, match=match):
            load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("sources:\n  - {path: a, epochs: 1, filters: {tasks: [nothing]}}\n")
    with pytest.raises(RecipeError, match=r"sources\[0\]: the filters keep no record"):
        make_plan(load_recipe(tmp_path / "r.yaml"))
