"""InstructPix2Pix builder: parquet shards (both input column names), the seeds.json release, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

import builders.instructpix2pix as ip2p
import mmdata
from builders.instructpix2pix import InstructPix2PixOptions, ParquetUnit, ReleaseUnit, units
from mmdata.build.driver import BuildSettings, build
from mmdata.read.dataset import Dataset
from mmdata.testing.instructpix2pix import AFTER, BEFORE, demo_source, hf_row, write_parquet, write_release


def run(tmp: Path, inputs: list[Path], name: str = "out", **settings: Any) -> tuple[Any, Any, list[dict]]:
    manifest = build("instructpix2pix", InstructPix2PixOptions(input=inputs), BuildSettings(out=tmp / name,
                                                                                           **settings))
    c = manifest.counts
    assert c["read"] == c["written"] + c["rejected"]
    rejects = [orjson.loads(line) for line in (tmp / name / "rejects.jsonl").read_bytes().splitlines()]
    return manifest, mmdata.open(tmp / name), rejects


def colour(ds: Any, record: Any, j: int) -> np.ndarray:
    return np.asarray(ds.image(record, j)).reshape(-1, 3).mean(axis=0)


def assert_direction(ds: Any, record: Any) -> None:
    before, after = colour(ds, record, 0), colour(ds, record, 1)
    assert np.abs(before - BEFORE).sum() < np.abs(before - AFTER).sum()
    assert np.abs(after - AFTER).sum() < np.abs(after - BEFORE).sum()


@pytest.mark.parametrize("input_column", ["original_image", "input_image"])
def test_parquet_records(tmp_path: Path, input_column: str) -> None:
    shard = write_parquet(tmp_path / "train-00000-of-00002.parquet", [hf_row(i) for i in range(5)],
                          input_column=input_column, row_group_size=2)
    manifest, ds, rejects = run(tmp_path, [shard])
    assert manifest.counts == {"read": 5, "written": 5, "rejected": 0} and manifest.tasks == {"edit": 5}
    r = ds[3]
    assert r.id == "train-00000-of-00002:3" and r.task == "edit" and r.source == "instructpix2pix"
    assert [t.value for t in r.conversations] == ["<image> make it a rainy day 3", "<image>"]
    assert r.media_roles() == ["input", "target"]
    assert r.media[0].path == "instructpix2pix/train-00000-of-00002/0000003_0.jpg"
    assert r.meta["input_caption"] == "a photo of a house 3"
    assert r.meta["output_caption"] == "a photo of a house on a rainy day 3"
    assert r.meta["ref"] == "train-00000-of-00002.parquet row 3"
    assert (tmp_path / "out" / "media" / r.media[1].path).is_file()
    for rec in ds:
        assert_direction(ds, rec)


def test_forms_are_detected(tmp_path: Path) -> None:
    shards = tmp_path / "data"
    write_parquet(shards / "train-00000-of-00002.parquet", [hf_row(i) for i in range(3)])
    write_parquet(shards / "train-00001-of-00002.parquet", [hf_row(i) for i in range(3, 5)])
    release = write_release(tmp_path / "release", [("0000000", {"input": "a", "edit": "b", "output": "c"}, [1, 2])])
    found = units(InstructPix2PixOptions(input=[shards, release]), 100, None)
    assert [type(u) for u in found] == [ParquetUnit, ParquetUnit, ReleaseUnit]
    manifest, ds, _ = run(tmp_path, [shards, release])
    assert manifest.counts["written"] == 7
    assert [r.id for r in ds][-3:] == ["train-00001-of-00002:1", "release:0000000/1", "release:0000000/2"]
    with pytest.raises(ValueError, match="seeds.json"):
        units(InstructPix2PixOptions(input=[tmp_path / "release" / "0000000"]), 10, None)
    with pytest.raises(FileNotFoundError):
        units(InstructPix2PixOptions(input=[tmp_path / "nope"]), 10, None)


@pytest.mark.parametrize(("drop", "named"), [(["edited_image"], "edited_image"), (["edit_prompt"], "edit_prompt"),
                                             (["original_image"], "original_image")])
def test_missing_column_is_a_clear_error(tmp_path: Path, drop: list[str], named: str) -> None:
    shard = write_parquet(tmp_path / "s.parquet", [hf_row(0)], drop=drop)
    with pytest.raises(ValueError) as e:
        run(tmp_path, [shard])
    message = str(e.value)
    assert "s.parquet" in message and f"missing column {named!r}" in message
    assert "columns found: original_prompt" in message


def test_row_group_units_limit_and_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ip2p, "BATCH_ROWS", 3)  # batches that straddle row groups
    shard = write_parquet(tmp_path / "s.parquet", [hf_row(i) for i in range(10)], row_group_size=4)
    found = units(InstructPix2PixOptions(input=[shard]), 5, None)
    assert [(u.row_groups, u.first_row, u.count) for u in found] == [((0, 1), 0, 8), ((2,), 8, 2)]
    cut = units(InstructPix2PixOptions(input=[shard]), 5, 6)
    assert [(u.row_groups, u.first_row, u.count) for u in cut] == [((0, 1), 0, 6)]
    manifest, ds, _ = run(tmp_path, [shard], shard_size=5)
    assert [r.meta["input_caption"] for r in ds] == [f"a photo of a house {i}" for i in range(10)]
    assert [r.id for r in ds] == [f"s:{i}" for i in range(10)]
    _, limited, _ = run(tmp_path, [shard], name="lim", shard_size=5, limit=6)
    assert len(limited) == 6


def test_bad_rows_are_rejected(tmp_path: Path) -> None:
    rows = [hf_row(i) for i in range(7)]
    rows[0]["edit_prompt"] = ""
    rows[1]["edit_prompt"] = "   "
    rows[2]["edit_prompt"] = None
    rows[3]["edited_image"] = {"bytes": b"\xff\xd8\xff\xe0 corrupt", "path": "x.jpg"}
    rows[4]["original_image"] = None
    rows[5]["edited_image"] = {"bytes": b"", "path": "y.jpg"}
    shard = write_parquet(tmp_path / "s.parquet", rows, row_group_size=3)
    manifest, ds, rejects = run(tmp_path, [shard], shard_size=3)
    assert manifest.counts == {"read": 7, "written": 1, "rejected": 6}
    reasons = {r["ref"]: r["reason"] for r in rejects}
    assert all("'edit_prompt' is empty" in reasons[f"s.parquet row {i}"] for i in range(3))
    assert "does not decode" in reasons["s.parquet row 3"]
    assert "column 'original_image': no image bytes (null)" in reasons["s.parquet row 4"]
    assert "column 'edited_image': no image bytes (bytes is empty" in reasons["s.parquet row 5"]
    assert ds[0].id == "s:6"


def test_captions_kept_as_released(tmp_path: Path) -> None:
    rows = [hf_row(i) for i in range(2)]
    rows[0]["original_prompt"] = "a ca\u00e2\u20ac\u2122t \u00e2\u20ac\u0153quoted\u00e2\u20ac\x9d".encode()
    rows[1]["original_prompt"] = "caf\xe9 \u201cquoted\u201d".encode("cp1252")  # not UTF-8
    for r in rows:
        r["edit_prompt"] = r["edit_prompt"].encode()
        r["edited_prompt"] = r["edited_prompt"].encode()
    shard = write_parquet(tmp_path / "s.parquet", rows, caption_type=pa.binary())
    _, ds, rejects = run(tmp_path, [shard])
    assert not rejects
    assert ds[0].meta["input_caption"] == "a ca\u00e2\u20ac\u2122t \u00e2\u20ac\u0153quoted\u00e2\u20ac\x9d"
    assert "not_utf8" not in ds[0].meta
    assert ds[1].meta["input_caption"] == "caf\u00e9 \u201cquoted\u201d" and ds[1].meta["not_utf8"] == [
        "original_prompt"]


def test_extra_score_columns_go_to_meta(tmp_path: Path) -> None:
    rows = [dict(hf_row(0), clip_sim_dir=0.25, clip_sim_image=0.8)]
    _, ds, _ = run(tmp_path, [write_parquet(tmp_path / "s.parquet", rows)])
    assert ds[0].meta["scores"] == {"clip_sim_dir": 0.25, "clip_sim_image": 0.8}


def test_wds_form_and_worker_independence(tmp_path: Path) -> None:
    shard = write_parquet(tmp_path / "s.parquet", [hf_row(i) for i in range(6)], row_group_size=2)
    m1, _, _ = run(tmp_path, [shard], name="w1", format="both", shard_size=2)
    m2, _, _ = run(tmp_path, [shard], name="w2", format="both", shard_size=2, workers=2)
    assert len(m1.shards) == 3 and [s.files for s in m1.shards] == [s.files for s in m2.shards]
    wds = Dataset(tmp_path / "w2", form="wds")
    r = wds[4]
    assert r.id == "s:4" and all(m.data for m in r.media)
    assert_direction(wds, r)


def test_release_directory(tmp_path: Path) -> None:
    release = write_release(tmp_path / "clip-filtered-dataset", [
        ("0000000", {"input": "a cat", "edit": "make it a dog", "output": "a dog"}, [11, 12]),
        ("0000001", {"caption": "a car", "edit": "paint it blue", "output": "a blue car"}, [21]),
        ("0000002", "{\"input\": \"caf\xe9\", \"edit\": \"add \u201csnow\u201d\", \"output\": \"x\"}".encode("cp1252"),
         [31]),
        ("0000003", None, [41, 42]),                                      # no prompt.json
        ("0000004", {"input": "a", "edit": "", "output": "b"}, [51]),     # empty instruction
        ("0000005", {"input": "a", "edit": "e", "output": "b"}, [61]),
    ])
    (release / "0000005" / "61_1.jpg").unlink()
    manifest, ds, rejects = run(tmp_path, [release])
    assert manifest.counts == {"read": 8, "written": 4, "rejected": 4}
    assert manifest.media_root == "media"
    by_id = {r.id: r for r in ds}
    r = by_id["clip-filtered-dataset:0000000/12"]
    assert [t.value for t in r.conversations] == ["<image> make it a dog", "<image>"]
    assert [m.path for m in r.media] == ["0000000/12_0.jpg", "0000000/12_1.jpg"]
    assert r.meta["input_caption"] == "a cat" and r.meta["output_caption"] == "a dog"
    assert r.meta["scores"]["clip_sim_dir"] == 0.18 and r.meta["seed"] == "12"
    assert_direction(ds, r)
    # One release directory is the media root: its images are linked, not copied.
    assert (tmp_path / "out" / "media" / "0000000" / "12_0.jpg").stat().st_nlink == 2
    assert by_id["clip-filtered-dataset:0000001/21"].meta["input_caption"] == "a car"
    odd = by_id["clip-filtered-dataset:0000002/31"]
    assert odd.conversations[0].value == "<image> add \u201csnow\u201d" and odd.meta["not_utf8"] == ["prompt.json"]
    reasons = {r["ref"]: r["reason"] for r in rejects}
    assert "prompt.json: file not found" in reasons["clip-filtered-dataset/0000003/41"]
    assert "'edit' is empty" in reasons["clip-filtered-dataset/0000004/51"]
    assert "61_1.jpg: edited image not found" in reasons["clip-filtered-dataset/0000005/61"]


def test_two_release_directories_do_not_collide(tmp_path: Path) -> None:
    a = write_release(tmp_path / "a", [("0000000", {"input": "x", "edit": "first", "output": "y"}, [1])])
    b = write_release(tmp_path / "b", [("0000000", {"input": "x", "edit": "second", "output": "y"}, [1])])
    _, ds, _ = run(tmp_path, [a, b])
    assert [r.media[0].path for r in ds] == ["instructpix2pix/a/0000000/1_0.jpg", "instructpix2pix/b/0000000/1_0.jpg"]
    assert [r.conversations[0].value for r in ds] == ["<image> first", "<image> second"]


def test_demo_source(tmp_path: Path) -> None:
    with demo_source(tmp_path / "src") as args:
        inputs = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--input"]
        manifest, ds, rejects = run(tmp_path, inputs)
    assert manifest.counts == {"read": 9, "written": 7, "rejected": 2}
    mangled = next(r for r in ds if r.id.endswith(":4"))
    assert mangled.meta["output_caption"] == "a house\u00e2\u20ac\u2122s roof in the rain"  # verbatim, not "fixed"


def test_cli(tmp_path: Path) -> None:
    cli = pytest.importorskip("mmdata.cli", reason="mmdata.cli not written yet")
    from typer.testing import CliRunner

    with demo_source(tmp_path / "src") as args:
        result = CliRunner().invoke(cli.app, ["build", "instructpix2pix", *args, "--out", str(tmp_path / "out"),
                                              "--format", "wds"])
    assert result.exit_code == 0, result.output
    assert len(mmdata.open(tmp_path / "out")) == 7


def test_damaged_parquet_never_crashes_mid_run(tmp_path: Path) -> None:
    shard = write_parquet(tmp_path / "s.parquet", [hf_row(i) for i in range(9)], row_group_size=3)
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = b"\x00" * 2000  # inside the second row group's pages
    shard.write_bytes(bytes(data))
    manifest, _, rejects = run(tmp_path, [shard], shard_size=3)
    assert manifest.counts["read"] == 9 and manifest.counts["rejected"] >= 1
    assert all(r["ref"].startswith("s.parquet row ") for r in rejects)


def test_not_parquet_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.parquet"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="notes.parquet: not a readable parquet file"):
        units(InstructPix2PixOptions(input=[bad]), 10, None)
