"""Nothing stale: a rerun after an input changed rebuilds exactly the shards whose input bytes changed, and the
result is the dataset a fresh build of the new input gives; a damaged finished shard is rebuilt, never trusted."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.build.freshness import unit_inputs
from mmdata.testing.images import write_image
from tests.reliability.conftest import turns, write_jsonl

SHARD = 4


def _source(root: Path, name: str, n: int, answer: str = "A thing.") -> Path:
    write_image(root / "img" / "a.jpg", 32, 24)
    return write_jsonl(root / name, [{"id": f"{name}-{i}", "image": "a.jpg" if i % 2 else None,
                                      "conversations": turns("<image>\nWhat?" if i % 2 else "What?", f"{answer} {i}")}
                                     for i in range(n)])


def _build(root: Path, inputs: list[Path], out: Path, **settings: object) -> None:
    build("cambrian", CambrianOptions(input=inputs, media_root=root / "img"),
          BuildSettings(out=out, shard_size=SHARD, **settings))  # type: ignore[arg-type]


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir()) if not p.name.endswith(".done.json")} | {
        "dataset.json": (out / "dataset.json").read_bytes(), "rejects.jsonl": (out / "rejects.jsonl").read_bytes()}


def _inodes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (out / "shards").iterdir() if p.suffix == ".jsonl"}


def _edit(path: Path, old: str, new: str) -> None:
    """Change a line keeping the file's size (and, as careless tools do, its mtime)."""
    st = path.stat()
    text = path.read_text()
    assert old in text and len(old) == len(new)
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))


def test_a_same_size_edit_rebuilds_only_the_shard_it_falls_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _source(tmp_path, "a.jsonl", 8), _source(tmp_path, "b.jsonl", 8)
    out = tmp_path / "out"
    _build(tmp_path, [a, b], out)
    before = _inodes(out)
    _edit(b, "A thing. 5", "A THING. 5")
    with caplog.at_level(logging.WARNING):
        _build(tmp_path, [a, b], out)
    after = _inodes(out)
    assert [k for k in before if before[k] != after[k]] == ["000003.jsonl"]  # b's second span: items 4..7
    assert f"input {b} changed" in caplog.text
    fresh = tmp_path / "fresh"
    _build(tmp_path, [a, b], fresh)
    assert _files(out) == _files(fresh)
    assert b"A THING. 5" in (out / "shards" / "000003.jsonl").read_bytes()


def test_appended_and_removed_rows_give_the_fresh_build(tmp_path: Path) -> None:
    a = _source(tmp_path, "a.jsonl", 10)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    _build(tmp_path, [a], out)
    before = _inodes(out)
    _source(tmp_path, "a.jsonl", 13)  # appended: the last span grows, a new shard appears
    _build(tmp_path, [a], out)
    after = _inodes(out)
    assert [k for k in before if before[k] == after[k]] == ["000000.jsonl", "000001.jsonl"]  # untouched spans kept
    _build(tmp_path, [a], fresh)
    assert _files(out) == _files(fresh)
    _source(tmp_path, "a.jsonl", 5)  # shortened: shards 2 and 3 must go
    _build(tmp_path, [a], out)
    _build(tmp_path, [a], fresh, overwrite=True)
    assert _files(out) == _files(fresh)
    assert sorted(p.name for p in (out / "shards").iterdir())[-1].startswith("000001.")


def test_a_touched_input_with_the_same_bytes_rebuilds_nothing(tmp_path: Path) -> None:
    a = _source(tmp_path, "a.jsonl", 8)
    out = tmp_path / "out"
    _build(tmp_path, [a], out)
    before = _inodes(out)
    os.utime(a, ns=(1, 1))
    _build(tmp_path, [a], out)
    assert _inodes(out) == before


def test_overwrite_always_rebuilds(tmp_path: Path) -> None:
    a = _source(tmp_path, "a.jsonl", 8)
    out = tmp_path / "out"
    _build(tmp_path, [a], out)
    before = _inodes(out)
    _build(tmp_path, [a], out, overwrite=True)
    after = _inodes(out)
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)


@pytest.mark.parametrize("damage", ["truncate", "edit", "index"])
def test_a_finished_shard_that_no_longer_matches_its_done_file_is_rebuilt(tmp_path: Path, damage: str) -> None:
    a = _source(tmp_path, "a.jsonl", 8)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    _build(tmp_path, [a], out)
    (out / "dataset.json").unlink()  # a build killed before its manifest: the rerun resumes
    shard = out / "shards" / "000001.jsonl"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[:-10])
    elif damage == "edit":
        shard.write_bytes(data.replace(b"A thing. 7", b"A THING. 7"))
    else:
        (out / "shards" / "000001.idx").write_bytes(b"")
    _build(tmp_path, [a], out)
    _build(tmp_path, [a], fresh)
    assert _files(out) == _files(fresh)


def test_an_input_no_unit_names_feeds_every_unit() -> None:
    described = [{"span": {"path": "a.json", "start": 0, "end": 9}}, {"file": "b.json"}, {"shard": 3}]
    inputs = [Path("a.json"), Path("b.json"), Path("labels.json")]  # labels: read by every unit, named by none
    assert unit_inputs(described, inputs) == [{"a.json": (0, 9), "labels.json": None},
                                              {"b.json": None, "labels.json": None},
                                              {"a.json": None, "b.json": None, "labels.json": None}]
