"""`mmdata export`: the output is read back by the reference loaders' parsing logic, re-implemented here from their
code (MetaMorph's and LLaVA-1.5's `LazySupervisedDataset.__getitem__` + `preprocess_multimodal`)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdata.build.driver import DatasetWriter
from mmdata.cli import app
from mmdata.core.schema import Media, Record, Turn
from mmdata.report.export import export

VIDEO_EXTS = [".mp4", ".avi", ".mov", ".mkv", ".wmv", ".flv", ".webm"]
ROLES = {"human": "user", "gpt": "assistant"}  # both loaders' role table: no "system"


def metamorph_reads(line: str, cwd: Path) -> tuple[list[Image.Image], list[dict[str, str]]]:
    """MetaMorph: one JSON line; a list `image` is opened path by path as written (no image folder) unless its first
    path names `visual_cot`; a string is dispatched on extension and id; image tokens must match the images."""
    src = json.loads(line)
    images: list[Image.Image] = []
    if "image" in src and src["image"] is not None:
        f = src["image"]
        if isinstance(f, list):
            assert "visual_cot" not in f[0], "would be parsed as a raw Visual-CoT item"
            images = [Image.open(os.path.join(cwd, p)).convert("RGB") for p in f]
        else:
            assert not any(ext in f for ext in VIDEO_EXTS), "would be decoded as a video"
            assert "vstar" not in str(src.get("id", "NA")), "would need target_instances"
            images = [Image.open(os.path.join(cwd, f)).convert("RGB")]
    convs = src["conversations"]
    if ROLES[convs[0]["from"]] != "user":  # a KeyError here (system) is a skipped sample in the reference
        convs = convs[1:]
    for j, t in enumerate(convs):
        assert ROLES[t["from"]] == ("user", "assistant")[j % 2]
    count = sum(t["value"].count("<image>") for t in convs)
    assert count == len(images) and count <= 70, "skipped by its count check"
    return images, convs


def llava_reads(item: dict[str, Any], folder: Path) -> tuple[list[Image.Image], list[dict[str, str]]]:
    """LLaVA-1.5: `image` is one path joined to --image_folder; every `<image>` is moved to the start of its turn."""
    images = [Image.open(os.path.join(folder, item["image"])).convert("RGB")] if "image" in item else []
    convs = copy.deepcopy(item["conversations"])
    for t in convs:
        if "<image>" in t["value"]:
            assert t["value"].count("<image>") == 1, "several tokens in one turn collapse into one"
            t["value"] = ("<image>\n" + t["value"].replace("<image>", "").strip()).strip()
    for j, t in enumerate(convs):
        assert ROLES[t["from"]] == ("user", "assistant")[j % 2]
        assert t["from"] == "human" or "<image>" not in t["value"], "a gpt image would be read as an input"
    assert sum(t["value"].count("<image>") for t in convs) == len(images)
    return images, convs


def _image(root: Path, rel: str, color: tuple[int, int, int]) -> Media:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), color).save(root / rel)
    return Media(path=rel)


def make_dataset(tmp: Path, root: Path) -> Path:
    """Records as the builders write them: LLaVA-665K VQA (image at the end), text, video frames, t2i, edit, a
    system turn, and a 71-frame clip."""
    red, blue = (200, 0, 0), (0, 0, 200)
    recs = [
        Record("000000033471@llava_v1_5_mix665k:12", "cambrian", "vqa",
               [Turn("human", "What are the colors of the bus in the image?\n<image>"), Turn("gpt", "White and red.")],
               [_image(root, "coco/train2017/000000033471.jpg", red)]),
        Record("vstar_llava_1@GQA_data:5", "vstar", "vqa",  # an id MetaMorph would dispatch on, were `image` a str
               [Turn("human", "<image>\nDescribe it."), Turn("gpt", "A red square.")],
               [_image(root, "coco/train2017/1.jpg", red)]),
        Record("text@sharegpt:0", "cambrian", "text", [Turn("human", "Hi"), Turn("gpt", "Hello.")]),
        Record("k700_abc@kinetics:0", "video", "video_qa",
               [Turn("human", "<image><image><image>\nWhat happens?"), Turn("gpt", "A man runs.")],
               [_image(root, f"video/abc/{k}.jpg", red) for k in range(3)]),
        Record("cc12m-000000001", "cc12m", "t2i", [Turn("human", "Draw a blue square."), Turn("gpt", "Here: <image>")],
               [_image(root, "cc12m/1.jpg", blue)]),
        Record("edit:0", "instructpix2pix", "edit", [Turn("human", "<image> Make it blue."), Turn("gpt", "<image>")],
               [_image(root, "ip2p/0_0.jpg", red), _image(root, "ip2p/0_1.jpg", blue)]),
        Record("sys:0", "cambrian", "text", [Turn("system", "Be brief."), Turn("human", "Hi"), Turn("gpt", "Yo.")]),
        Record("long@clip:0", "video", "video_qa", [Turn("human", "<image>" * 71 + "\nWhat?"), Turn("gpt", "Rain.")],
               [_image(root, f"video/long/{k}.jpg", blue) for k in range(71)]),
    ]
    with DatasetWriter(tmp / "ds", media_root=root) as w:
        for r in recs:
            assert w.add(r)
    return tmp / "ds"


def test_metamorph_export_is_read_back_by_its_loader(tmp_path: Path) -> None:
    root = tmp_path / "media"
    ds = make_dataset(tmp_path, root)
    result = export(ds, "metamorph", tmp_path / "mm.jsonl", absolute_paths=True)
    assert result.written == 6 and sum(result.refused.values()) == 2
    assert result.examples == {
        "has a system turn: the metamorph loader knows only human and gpt turns": "sys:0",
        "has more than 70 images: the metamorph loader skips such samples": "long@clip:0"}
    lines = (tmp_path / "mm.jsonl").read_text().splitlines()
    read = {json.loads(x)["id"]: metamorph_reads(x, Path("/nonexistent")) for x in lines}  # absolute: cwd unused
    assert [len(read[k][0]) for k in read] == [1, 1, 0, 3, 1, 2]
    t2i_images, t2i_convs = read["cc12m-000000001"]
    assert t2i_convs[1]["value"] == "Here: <image>"
    assert max(abs(a - b) for a, b in zip(t2i_images[0].getpixel((0, 0)), (0, 0, 200))) < 4  # the blue JPEG
    assert all(isinstance(json.loads(x).get("image", []), list) for x in lines)
    assert "image" not in json.loads(lines[2])  # text: no image key, as the loader expects


def test_relative_paths_resolve_from_the_media_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    ds = make_dataset(tmp_path, root)
    result = export(ds, "metamorph", tmp_path / "rel.jsonl")
    assert result.image_folder == root.resolve()
    for line in (tmp_path / "rel.jsonl").read_text().splitlines():
        metamorph_reads(line, root)


def test_visual_cot_named_first_path_is_refused_for_metamorph(tmp_path: Path) -> None:
    root = tmp_path / "visual_cot" / "images"  # where a user might well keep it
    ds = make_dataset(tmp_path, root)
    result = export(ds, "metamorph", tmp_path / "mm.jsonl", absolute_paths=True)
    assert result.written == 1  # the text record: no path
    assert result.refused.most_common(1)[0] == (
        "its first image path contains 'visual_cot', which MetaMorph's loader parses as a raw Visual-CoT item "
        "(export relative paths, or keep the data under folders not named so)", 5)
    assert export(ds, "metamorph", tmp_path / "rel.jsonl").written == 6  # relative paths do not name it


def test_llava_export_keeps_only_what_llava_reads_correctly(tmp_path: Path) -> None:
    root = tmp_path / "media"
    ds = make_dataset(tmp_path, root)
    result = export(ds, "llava", tmp_path / "llava.json")
    assert result.written == 3
    assert result.refused == {
        "has 3 images: llava loads one image per sample": 1,
        "has a generation target (an <image> in a gpt turn): llava would read it as an input image": 2,
        "has a system turn: the llava loader knows only human and gpt turns": 1,
        "has 71 images: llava loads one image per sample": 1,
    }
    data = json.loads((tmp_path / "llava.json").read_text())  # LLaVA's json.load of the whole file
    read = {item["id"]: llava_reads(item, root) for item in data}
    images, convs = read["000000033471@llava_v1_5_mix665k:12"]
    assert len(images) == 1 and convs[0]["value"] == "<image>\nWhat are the colors of the bus in the image?"
    assert read["text@sharegpt:0"][0] == [] and isinstance(data[0]["image"], str)


def test_cli_and_errors(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, tmp_path / "media")
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(ds), "--to", "llava", "--out", str(tmp_path / "l.json")])
    assert result.exit_code == 0, result.output
    assert "3 written, 5 refused" in result.output and "refused 2: has a generation target" in result.output
    assert "relative to" in result.output
    bad = runner.invoke(app, ["export", str(ds), "--to", "llava", "--out", str(tmp_path / "l.jsonl")])
    assert bad.exit_code == 1 and "name it *.json" in bad.output
    bad = runner.invoke(app, ["export", str(ds), "--to", "qwen", "--out", str(tmp_path / "l.json")])
    assert bad.exit_code == 1 and "metamorph, llava" in bad.output
    with pytest.raises(ValueError, match="webdataset tars only"):
        with DatasetWriter(tmp_path / "wds", format="wds") as w:
            w.add(Record("t", "x", "text", [Turn("human", "a"), Turn("gpt", "b")]))
        export(tmp_path / "wds", "metamorph", tmp_path / "w.jsonl")


def test_mixture_export_needs_and_writes_absolute_paths(tmp_path: Path) -> None:
    from mmdata.mix.planner import mix

    ds = make_dataset(tmp_path, tmp_path / "media")
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: m\nseed: 0\nsources:\n  - path: {ds}\n    epochs: 1\n")
    mix(recipe, tmp_path / "mixture")
    with pytest.raises(ValueError, match="pass --absolute-paths"):
        export(tmp_path / "mixture", "metamorph", tmp_path / "m.jsonl")
    result = export(tmp_path / "mixture", "metamorph", tmp_path / "m.jsonl", absolute_paths=True)
    assert result.written == 6 and result.image_folder is None
    for line in (tmp_path / "m.jsonl").read_text().splitlines():
        metamorph_reads(line, Path("/nonexistent"))
