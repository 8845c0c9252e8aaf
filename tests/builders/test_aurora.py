"""AURORA builder: direction from the keys (never file names), instruction lists, bad items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

import mmdata
from builders.aurora import AuroraOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.testing.instructpix2pix import AFTER, BEFORE, write_aurora


def test_aurora(tmp_path: Path) -> None:
    root = tmp_path / "AURORA"
    src = write_aurora(root, [
        # Named the wrong way round on purpose: the direction is `input` → `output`.
        {"instruction": "move the cup to the left", "input": "something/123_after.png",
         "output": "something/123_before.png"},
        {"instruction": ["", "open the drawer", "pull the drawer open"], "input": "ag/1_0.png", "output": "ag/1_1.png"},
        {"instruction": [], "input": "ag/2_0.png", "output": "ag/2_1.png"},
        {"instruction": "  ", "input": "ag/3_0.png", "output": "ag/3_1.png"},
        {"instruction": "x", "input": "ag/4_0.png", "output": ""},
        {"instruction": "close it", "input": "ag/5_0.png", "output": "ag/5_1.png"},
    ])
    (root / "ag/5_1.png").unlink()
    manifest = build("aurora", AuroraOptions(input=[src], media_root=root), BuildSettings(out=tmp_path / "out"))
    assert manifest.counts == {"read": 6, "written": 2, "rejected": 4}
    ds = mmdata.open(tmp_path / "out")
    first, listed = ds[0], ds[1]
    assert first.id == "train:0" and first.task == "edit" and first.source == "aurora"
    assert [t.value for t in first.conversations] == ["<image> move the cup to the left", "<image>"]
    assert [m.path for m in first.media] == ["something/123_after.png", "something/123_before.png"]
    before = np.asarray(ds.image(first, 0)).reshape(-1, 3).mean(axis=0)
    after = np.asarray(ds.image(first, 1)).reshape(-1, 3).mean(axis=0)
    assert np.abs(before - BEFORE).sum() < np.abs(before - AFTER).sum()
    assert np.abs(after - AFTER).sum() < np.abs(after - BEFORE).sum()
    assert listed.conversations[0].value in ("<image> open the drawer", "<image> pull the drawer open")
    assert listed.meta["instructions"] == ["", "open the drawer", "pull the drawer open"]
    rejects = [orjson.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_bytes().splitlines()]
    reasons = {r["ref"]: r["reason"] for r in rejects}
    assert "'instruction' is empty" in reasons["train.json[2]"] and "'instruction' is empty" in reasons["train.json[3]"]
    assert "'output' must be an image path" in reasons["train.json[4]"]
    assert "file not found" in reasons["train.json[5]"]


def test_validation_and_bench_files_name_it_prompt(tmp_path: Path) -> None:
    """Items as `data/something/valid.json` and `test.json` write them: `prompt`, `pos`, `id`, `mask`, `task`."""
    root = tmp_path / "AURORA"
    src = write_aurora(root, [
        {"id": "36", "prompt": "Make remote fall down", "pos": "Make remote stand up",
         "input": "data/something/frames_validation_2K/36/first.jpg",
         "output": "data/something/frames_validation_2K/36/last.jpg"},
        {"input": "data/magicbrush/images/242679/242679-input.png", "mask": "242679-mask1.png",
         "output": "data/magicbrush/images/242679/242679-output1.png", "prompt": "Put a cat on the seat.",
         "task": "magicbrush"},
        {"edit": "no instruction key", "input": "data/ag/images/a_left.png", "output": "data/ag/images/a_right.png"},
    ], name="valid.json")
    manifest = build("aurora", AuroraOptions(input=[src], media_root=root), BuildSettings(out=tmp_path / "out"))
    assert manifest.counts == {"read": 3, "written": 2, "rejected": 1}
    ds = mmdata.open(tmp_path / "out")
    assert [r.conversations[0].value for r in ds] == ["<image> Make remote fall down", "<image> Put a cat on the seat."]
    assert ds[0].meta["pos"] == "Make remote stand up" and ds[0].meta["id"] == "36"
    assert ds[1].meta["task"] == "magicbrush" and ds[1].meta["mask"] == "242679-mask1.png"
    reason = orjson.loads((tmp_path / "out" / "rejects.jsonl").read_bytes())["reason"]
    assert "instruction, prompt" in reason and "'edit', 'input', 'output'" in reason
