"""Decontamination: the planted image and question leaks are found, nothing else; counts per source and eval set."""

from __future__ import annotations

from pathlib import Path

import pytest

import mmdata
from mmdata.core.errors import InputError, NotFound
from mmdata.quality.decontaminate import DecontaminateOptions, decontaminate, load_eval
from tests.quality.conftest import Built
from tests.quality.test_dedup import removed, short


def test_every_leak_found_and_nothing_else(built: Built, tmp_path: Path) -> None:
    ev = built.world.evals
    manifest = decontaminate([built.a, built.b], [ev / "images", ev / "questions.jsonl", ev / "llava.json"],
                             tmp_path / "v", DecontaminateOptions(cache=built.cache))
    gone = removed(tmp_path / "v")
    # a7 leaks its image; a9 its question. dup_resized etc. copy other A records and leak nothing.
    assert {rid: e["kind"].split(": ")[1] for rid, e in gone.items()} == built.world.leaks
    assert gone["a7"]["eval"] == "images" and gone["a9"]["eval"] == "questions"
    assert manifest.removed == {"a": {"images: image": 1, "questions: question": 1}, "b": {}}
    assert manifest.params["questions_skipped_as_too_short"] == 1
    assert not {short(r.id) for r in mmdata.open(tmp_path / "v")} & set(gone)


def test_an_eval_folder_is_images_and_questions(built: Built, tmp_path: Path) -> None:
    ev = load_eval(built.world.evals)
    assert sorted(ref for ref, _ in ev.images) == ["images/clean.png", "images/leak.jpg"]
    assert len(ev.questions) == 4
    decontaminate([built.a, built.b], [built.world.evals], tmp_path / "v", DecontaminateOptions(cache=built.cache))
    assert set(removed(tmp_path / "v")) == set(built.world.leaks)


def test_bad_eval_sets(tmp_path: Path, built: Built) -> None:
    with pytest.raises(NotFound, match="not found"):
        load_eval(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image"):
        load_eval(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        load_eval(tmp_path / "bad.json")
