"""vstar builder: SEAL search items → the boxed copy as the visual thought; focus line, xywh boxes, quirks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import mmdata
from builders.vstar import GPT_TEMPLATES, HUMAN_PREFIXES, VStarOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.testing.visual_cot import write_json_array
from mmdata.testing.vstar import BACKGROUND, OBJECT, demo_source, vstar_item, write_scene

RED = np.array([255, 0, 0])


def run(tmp: Path, items: list[Any], root: Path, name: str = "out", **kw: Any) -> tuple[Any, Any, dict[str, str]]:
    src = write_json_array(tmp / "GQA_data.json", items)
    manifest = build("vstar", VStarOptions(input=[src], media_root=root, **kw), BuildSettings(out=tmp / name))
    c = manifest.counts
    assert c["read"] == c["written"] + c["rejected"]
    rejects = [orjson.loads(x) for x in (tmp / name / "rejects.jsonl").read_bytes().splitlines()]
    return manifest, mmdata.open(tmp / name), {r["ref"]: r["reason"] for r in rejects}


def test_boxed_copy_is_the_generated_thought(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_scene(root, "gqa/images/2354786.png", (200, 150), [[40, 30, 50, 40]])
    item = vstar_item("vstar_gqa_7", "gqa/images/2354786.png", [("cup", [40, 30, 50, 40])],
                      "What color is the cup?", "The cup is blue.")
    _, ds, _ = run(tmp_path, [item], root, image_format="png")
    r = ds[0]
    assert (r.source, r.task, r.id) == ("vstar", "visual_cot", "vstar_gqa_7@GQA_data:0")
    assert r.media_roles() == ["input", "target"] and r.media[0].path == "gqa/images/2354786.png"
    human, gpt = (t.value for t in r.conversations)
    assert human.endswith("<image>\nWhat color is the cup?") and "<object>" not in human
    assert "Additional visual information" not in human and human.count("<image>") == 1
    assert "the cup" in gpt and gpt.index("<image>") < gpt.index("The cup is blue.")
    original, boxed = np.asarray(ds.image(r, 0)).astype(int), np.asarray(ds.image(r, 1)).astype(int)
    assert original.shape == boxed.shape == (150, 200, 3)
    x1, y1, x2, y2 = 40, 30, 90, 70  # [x, y, w, h] → corners
    assert r.meta["boxes_drawn"] == [[x1, y1, x2, y2]]
    for edge in (boxed[y1:y2, x1], boxed[y1:y2, x2 - 1], boxed[y2 - 1, x1:x2]):  # left, right, bottom: red
        assert (edge == RED).all()
    assert (boxed[y1 + 10, x1 + 10] == OBJECT).all()  # the object itself is not painted over
    far = (slice(100, 150), slice(120, 200))
    assert (boxed[far] == BACKGROUND).all() and (original[far] == BACKGROUND).all()
    assert not (original == RED).all(axis=-1).any()  # the input stays the untouched original


@pytest.mark.parametrize("n", [1, 2, 3])
def test_focus_line_removed_for_any_object_count_and_image_at_either_end(tmp_path: Path, n: int) -> None:
    root = tmp_path / "img"
    objects = [("dog", [5, 5, 20, 20]), ("ball", [40, 5, 10, 10]), ("tree", [5, 40, 30, 30])][:n]
    write_scene(root, "a.jpg", (80, 80), [b for _, b in objects])
    items = [vstar_item(f"v{k}", "a.jpg", objects, "Is the dog near the ball?", "Yes.", image_first=k == 0)
             for k in (0, 1)]
    assert items[0]["conversations"][0]["value"].count("<object>") == n
    _, ds, _ = run(tmp_path, items, root)
    for r in ds:
        assert r.conversations[0].value.endswith("<image>\nIs the dog near the ball?")
        assert "<object>" not in r.conversations[0].value and len(r.meta["boxes_drawn"]) == n
    listing = {1: "the dog", 2: "the dog and the ball", 3: "the dog, the ball, and the tree"}[n]
    assert listing in ds[0].conversations[1].value


def test_quirks_are_clamped_passed_through_or_rejected_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_scene(root, "s.jpg", (100, 80), [])
    write_scene(root, "coco/1.jpg", (40, 30), [])
    items: list[Any] = [
        vstar_item("clamp", "s.jpg", [("lamp", [80, 60, 50, 50]), ("ghost", [300, 300, 5, 5])], "Q?", "A."),
        vstar_item("outside", "s.jpg", [("ghost", [300, 300, 5, 5])], "Q?", "A."),
        vstar_item("badbox", "s.jpg", [("cup", [1, 2, 3])], "Q?", "A."),
        vstar_item("missing", "nope.jpg", [("cup", [1, 1, 5, 5])], "Q?", "A."),
        {**vstar_item("noanswer", "s.jpg", [("cup", [1, 1, 5, 5])], "Q?", "A."),
         "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": " "}]},
        {"id": "llava_1", "image": "coco/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A field."}]},
        {**vstar_item("negative", "s.jpg", [], "Is there a cat?", "No."), "target_instances": []},
    ]
    manifest, ds, reasons = run(tmp_path, items, root)
    assert manifest.counts == {"read": 7, "written": 3, "rejected": 4}
    assert manifest.tasks == {"visual_cot": 1, "vqa": 2}
    clamp = ds[0]
    assert clamp.meta["boxes_drawn"] == [[80, 60, 100, 80]] and clamp.meta["clamped"] is True
    assert clamp.meta["boxes_dropped"] == ["ghost"]
    assert "no target box has area" in reasons["GQA_data.json[1]"]
    assert "'bbox' must be [x, y, width, height]" in reasons["GQA_data.json[2]"]
    assert "not found" in reasons["GQA_data.json[3]"]
    assert "empty answer" in reasons["GQA_data.json[4]"]
    # LLaVA instructions and negative samples (no targets) are ordinary VQA, as SEAL trains on them.
    assert [(r.task, r.source) for r in ds][1:] == [("vqa", "vstar"), ("vqa", "vstar")]
    manifest, _, reasons = run(tmp_path, items, root, name="strict", non_search="reject")
    assert manifest.counts["written"] == 1
    assert all("not a visual-search sample" in reasons[f"GQA_data.json[{i}]"] for i in (5, 6))


def test_phrasing_is_seeded_and_uses_the_pools(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_scene(root, "a.jpg", (32, 32), [[4, 4, 8, 8]])
    items = [vstar_item(f"v{i}", "a.jpg", [("cup", [4, 4, 8, 8])], f"Q{i}?", f"A{i}.") for i in range(40)]
    _, a, _ = run(tmp_path, items, root, name="a")
    _, b, _ = run(tmp_path, items, root, name="b")
    _, c, _ = run(tmp_path, items, root, name="c", seed=3)
    turns = [[t.value for t in r.conversations] for r in a]
    assert turns == [[t.value for t in r.conversations] for r in b] != [[t.value for t in r.conversations] for r in c]
    humans = {next(p for p in HUMAN_PREFIXES if h == f"{p} <image>\nQ{n}?".lstrip()) for n, (h, _) in enumerate(turns)}
    gpts = {next(t for t in GPT_TEMPLATES if g == t.format(objects="the cup", answer=f"A{n}.")) for n, (_, g) in
            enumerate(turns)}
    assert humans == set(HUMAN_PREFIXES) and gpts == set(GPT_TEMPLATES)


def test_demo_source_and_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmdata.cli import app

    with demo_source(tmp_path / "src") as args:
        result = CliRunner().invoke(app, ["build", "vstar", *args, "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = mmdata.open(tmp_path / "out").manifest
    assert manifest.counts == {"read": 7, "written": 5, "rejected": 2}
    assert manifest.tasks == {"visual_cot": 4, "vqa": 1}
