"""Visual-CoT builder: crop geometry pixel by pixel, record shape, phrasings, non-CoT items, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import mmdata
from builders.visual_cot import GPT_PREFIXES, HUMAN_PREFIXES, VisualCotOptions, crop_box
from mmdata.build.driver import BuildSettings, build
from mmdata.build.registry import discover
from mmdata.core.schema import RecordError
from mmdata.testing.images import write_truncated_jpeg
from mmdata.testing.visual_cot import (
    BACKGROUND,
    REGION,
    demo_source,
    metadata_row,
    viscot_item,
    write_json_array,
    write_jsonl,
    write_region_image,
)


def run(tmp: Path, inputs: list[Path], root: Path, name: str = "out", **kw: Any) -> tuple[Any, Any, list[dict]]:
    settings = {k: kw.pop(k) for k in ("format", "workers", "shard_size", "limit") if k in kw}
    options = VisualCotOptions(input=inputs, media_root=root, **kw)
    manifest = build("visual_cot", options, BuildSettings(out=tmp / name, **settings))
    c = manifest.counts
    assert c["read"] == c["written"] + c["rejected"]
    rejects = [orjson.loads(line) for line in (tmp / name / "rejects.jsonl").read_bytes().splitlines()]
    return manifest, mmdata.open(tmp / name), rejects


def test_registered() -> None:
    assert {"visual_cot", "instructpix2pix", "aurora"} <= set(discover())


# ---------------------------------------------------------------- geometry, pure
@pytest.mark.parametrize(("values", "normalised", "expected"), [
    ([20, 10, 60, 50], False, (20, 10, 60, 50)),
    ([20.5, 10.2, 59.5, 49.9], False, (20, 10, 60, 50)),        # floor the start, ceil the end
    ([0.2, 0.125, 0.6, 0.625], True, (20, 10, 60, 50)),          # normalised, 100 x 80
    ([0.3, 0.3, 0.7, 0.7], True, (30, 24, 70, 56)),              # 0.3 * 100 must not become 31 - 1 pixels
    ([20, 10, 30, 20, 50, 40, 60, 50], False, (20, 10, 60, 50)),  # several boxes: their union
    ([60, 50, 20, 10], False, (20, 10, 60, 50)),                 # corners swapped
    ([-10, -5, 60, 200], False, (0, 0, 60, 80)),                 # partly outside: clamped
])
def test_crop_box(values: list[float], normalised: bool, expected: tuple[int, ...]) -> None:
    box, _ = crop_box([float(v) for v in values], 100, 80, normalised)
    assert box == expected


@pytest.mark.parametrize("values", [[30, 30, 30, 60], [120, 10, 150, 50], [10, 90, 20, 95], [1, 2, 3], []])
def test_crop_box_rejects(values: list[float]) -> None:
    with pytest.raises(RecordError):
        crop_box([float(v) for v in values], 100, 80, False)


def test_crop_box_rescales_declared_size() -> None:
    box, notes = crop_box([10.0, 10.0, 50.0, 40.0], 100, 80, False, declared=(50, 40))
    assert box == (20, 20, 100, 80) and notes["rescaled_from"] == [50, 40]


# ---------------------------------------------------------------- geometry, through a build
REGION_BOX = (20, 10, 60, 50)


@pytest.mark.parametrize(("box", "size"), [
    ("[20, 10, 60, 50]", (100, 80)),
    ("[20.0, 10.0, 60.0, 50.0]", (100, 80)),
    ("[0.2, 0.125, 0.6, 0.625]", (100, 80)),                     # normalised floats
    ("[[20, 10, 40, 30], [45, 35, 60, 50]]", (100, 80)),         # two boxes united
    ("[20, 10, 60, 50]", (60, 50)),                              # region in the corner, box clamped to the image
    ("[20, 10, 200, 300]", (60, 50)),                            # box far outside: clamped to the same region
])
def test_crop_is_pixel_exact(tmp_path: Path, box: str, size: tuple[int, int]) -> None:
    root = tmp_path / "img"
    write_region_image(root, "cot/gqa/1.png", *size, REGION_BOX)
    src = write_json_array(tmp_path / "viscot.json", [viscot_item(1, "gqa", "cot/gqa/1.png", box, "Q?", "A", size)])
    _, ds, rejects = run(tmp_path, [src], root, crop_format="png")
    assert not rejects and len(ds) == 1
    r = ds[0]
    crop = np.asarray(ds.image(r, 1))
    x1, y1, x2, y2 = REGION_BOX
    assert crop.shape == (min(y2, size[1]) - y1, min(x2, size[0]) - x1, 3)
    assert (crop == np.array(REGION, dtype=np.uint8)).all()
    assert r.media[1].width == crop.shape[1] and r.media[1].height == crop.shape[0]
    full = np.asarray(ds.image(r, 0))
    assert full.shape == (size[1], size[0], 3) and (full[0, 0] == BACKGROUND).all()


def test_jpeg_crop_geometry(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "cot/gqa/1.jpg", 100, 80, REGION_BOX)
    src = write_json_array(tmp_path / "v.json", [viscot_item(1, "gqa", "cot/gqa/1.jpg", [20, 10, 60, 50], "Q", "A")])
    _, ds, _ = run(tmp_path, [src], root)
    r = ds[0]
    assert r.media[1].path.endswith(".jpg")
    crop = np.asarray(ds.image(r, 1)).astype(int)
    assert crop.shape == (40, 40, 3)
    # JPEG blurs colour edges, so compare with the two colours: an off-by-one crop would show a background row.
    for edge in (crop[0], crop[-1], crop[:, 0], crop[:, -1]):
        mean = edge.mean(axis=0)
        assert np.abs(mean - REGION).sum() < np.abs(mean - BACKGROUND).sum() / 3


# ---------------------------------------------------------------- record shape
def test_record_shape_and_meta(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "cot/gqa/2316539.jpg", 100, 80, REGION_BOX)
    item = viscot_item(2316539, "gqa", "cot/gqa/2316539.jpg", "[20, 10, 60, 50]", "What is red?", "The square.")
    src = write_json_array(tmp_path / "viscot_363k.json", [item])
    _, ds, _ = run(tmp_path, [src], root)
    r = ds[0]
    assert r.task == "visual_cot" and r.source == "visual_cot"
    assert r.id == "gqa/2316539@viscot_363k:0"
    assert r.media_roles() == ["input", "target"]
    assert r.media[0].path == "cot/gqa/2316539.jpg"
    assert r.media[1].path.startswith("visual_cot/crops/")
    human, gpt = r.conversations[0].value, r.conversations[1].value
    assert human.endswith("<image>\nWhat is red?") and "Please provide the bounding box" not in human
    assert gpt.index("<image>") < gpt.index("The square.")  # the visual thought comes before the answer
    assert (r.meta["dataset"], r.meta["question_id"], r.meta["split"]) == ("gqa", 2316539, "train")
    assert r.meta["box_raw"] == "[20, 10, 60, 50]" and r.meta["image_size"] == [100, 80]
    assert r.meta["crop_box"] == [20, 10, 60, 50] and r.meta["box_normalised"] is False
    assert (tmp_path / "out" / "media" / r.media[1].path).is_file()
    assert (tmp_path / "out" / "media" / r.media[0].path).is_file()


def test_integer_unit_box_is_pixels(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "a.png", 100, 80, REGION_BOX)
    src = write_json_array(tmp_path / "v.json", [viscot_item(1, "gqa", "a.png", "[0, 0, 1, 1]", "Q", "A")])
    _, ds, _ = run(tmp_path, [src], root, crop_format="png")
    assert (ds[0].media[1].width, ds[0].media[1].height) == (1, 1)
    assert ds[0].meta["box_normalised"] is False


def test_prefix_pools_stable_and_varied(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "a.jpg", 32, 24, (0, 0, 8, 8))
    src = write_json_array(tmp_path / "v.json",
                           [viscot_item(i, "gqa", "a.jpg", [0, 0, 8, 8], f"Q{i}?", f"A{i}") for i in range(120)])
    _, ds1, _ = run(tmp_path, [src], root, name="a")
    _, ds2, _ = run(tmp_path, [src], root, name="b")
    _, ds3, _ = run(tmp_path, [src], root, name="c", seed=7)
    turns = [tuple(t.value for t in r.conversations) for r in ds1]
    assert turns == [tuple(t.value for t in r.conversations) for r in ds2]
    assert turns != [tuple(t.value for t in r.conversations) for r in ds3]
    humans, gpts = set(), set()
    for n, (human, gpt) in enumerate(turns):
        # MetaMorph's shape: `{prefix} <image>\n{question}` → `{prefix} <image> {answer}`; an empty prefix leaves none.
        humans.add(next(p for p in HUMAN_PREFIXES if human == f"{p} <image>\nQ{n}?".lstrip()))
        gpts.add(next(p for p in GPT_PREFIXES if gpt == f"{p} <image> A{n}".lstrip()))
    assert (len(HUMAN_PREFIXES), len(GPT_PREFIXES)) == (13, 16) and "" in HUMAN_PREFIXES and "" in GPT_PREFIXES
    assert humans == set(HUMAN_PREFIXES) and gpts == set(GPT_PREFIXES)
    sha = [json.loads((tmp_path / n / "dataset.json").read_text())["shards"][0]["files"]["jsonl"]["sha256"]
           for n in ("a", "b")]
    assert sha[0] == sha[1]


def test_release_item_question_id_7(tmp_path: Path) -> None:
    """viscot_363k.json's item with question_id 7: GQA image 2316539 is 391 × 500, and its box fits inside."""
    root = tmp_path / "img"
    write_region_image(root, "cot/gqa/2316539.jpg", 391, 500, (217, 343, 242, 393))
    item = viscot_item(7, "gqa", "cot/gqa/2316539.jpg", "[217, 343, 242, 393]", "Is the man wearing a hat?",
                       "Yes, the man is wearing a hat.", (391, 500))
    assert item["conversations"][1]["value"] == "[0.542, 0.686, 0.592, 0.786]"  # padded-square box, as released
    _, ds, _ = run(tmp_path, [write_json_array(tmp_path / "viscot_363k.json", [item])], root, crop_format="png")
    r = ds[0]
    assert r.id == "gqa/7@viscot_363k:0" and r.conversations[0].value.endswith("<image>\nIs the man wearing a hat?")
    assert r.meta["crop_box"] == [217, 343, 242, 393] and "clamped" not in r.meta and r.meta["image_size"] == [391, 500]
    assert (r.media[1].width, r.media[1].height) == (25, 50)
    inner = np.asarray(ds.image(r, 1)).astype(int)[4:-4, 4:-4]  # the source is a JPEG: skip its blurred edges
    assert np.abs(inner - REGION).max() < 12


# ---------------------------------------------------------------- non-CoT items and the metadata JSONL
LLAVA_ITEM = {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
              "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]}


def test_non_cot_passes_through_as_vqa(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "coco/train2017/000000033471.jpg", 64, 48, (0, 0, 8, 8))
    write_region_image(root, "cot/gqa/1.jpg", 64, 48, (0, 0, 8, 8))
    src = write_json_array(tmp_path / "mixed.json", [LLAVA_ITEM, viscot_item(1, "gqa", "cot/gqa/1.jpg",
                                                                              [0, 0, 8, 8], "Q", "A")])
    manifest, ds, _ = run(tmp_path, [src], root)
    assert manifest.tasks == {"visual_cot": 1, "vqa": 1}
    assert ds[0].task == "vqa" and ds[0].source == "visual_cot" and ds[0].media_roles() == ["input"]
    manifest, _, rejects = run(tmp_path, [src], root, name="strict", non_cot="reject")
    assert manifest.counts == {"read": 2, "written": 1, "rejected": 1}
    assert rejects[0]["ref"] == "mixed.json[0]" and "not a CoT sample" in rejects[0]["reason"]


def test_metadata_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "cot/textvqa/abc.png", 100, 80, REGION_BOX)
    rows = [
        metadata_row("abc.png", [[20, 10, 40, 30], [45, 35, 60, 50]], "Q1", "A1", (100, 80), dataset="textvqa"),
        metadata_row("abc.png", [[10, 5, 30, 25]], "Q2", "A2", (50, 40), dataset="textvqa"),  # declared half size
        metadata_row("nope.png", [[1, 1, 2, 2]], "Q3", "A3", (100, 80), dataset="textvqa"),
        metadata_row("abc.png", [[1, 1, 2, 2]], "", "A4", (100, 80), dataset="textvqa"),
    ]
    src = write_jsonl(tmp_path / "metadata" / "textvqa_cot_train.jsonl", rows)
    manifest, ds, rejects = run(tmp_path, [src], root, crop_format="png")
    assert manifest.counts == {"read": 4, "written": 2, "rejected": 2}
    for r in ds:
        assert r.media[0].path == "cot/textvqa/abc.png"
        assert (np.asarray(ds.image(r, 1)) == np.array(REGION, dtype=np.uint8)).all()
        assert ds.image(r, 1).size == (40, 40)
    assert ds[0].meta["boxes_united"] == 2 and ds[1].meta["rescaled_from"] == [50, 40]
    assert ds[0].id == "textvqa@textvqa_cot_train:1"
    assert [r["ref"] for r in rejects] == ["textvqa_cot_train.jsonl:3", "textvqa_cot_train.jsonl:4"]
    assert "cot/textvqa/nope.png" in rejects[0]["reason"] and "question" in rejects[1]["reason"]


@pytest.mark.parametrize(("dataset", "folder"), [("textcap", "textvqa"), ("v7w", "v7w"), ("gqa", "gqa")])
def test_metadata_image_folders_as_the_release_maps_them(tmp_path: Path, dataset: str, folder: str) -> None:
    """`metadata/textcap_cot_train.jsonl` names TextVQA images: the release's converter writes cot/textvqa/…."""
    root = tmp_path / "img"
    write_region_image(root, f"cot/{folder}/0a1b.jpg", 100, 80, REGION_BOX)
    src = write_jsonl(tmp_path / "metadata" / f"{dataset}_cot_train.jsonl",
                      [metadata_row("0a1b.jpg", [[20, 10, 60, 50]], "What does it say?", "STOP", (100, 80), dataset)])
    manifest, ds, rejects = run(tmp_path, [src], root)
    assert manifest.counts["written"] == 1, rejects
    assert ds[0].media[0].path == f"cot/{folder}/0a1b.jpg"


# ---------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "img"
    write_region_image(root, "cot/gqa/ok.jpg", 100, 80, REGION_BOX)
    write_truncated_jpeg(root / "cot/gqa/broken.jpg")
    bad_answer = viscot_item(6, "gqa", "cot/gqa/ok.jpg", [1, 1, 9, 9], "Q", "A")
    bad_answer["conversations"][3]["value"] = "  "
    items: list[Any] = [
        viscot_item(1, "gqa", "cot/gqa/missing.jpg", [1, 1, 9, 9], "Q", "A"),
        viscot_item(2, "gqa", "cot/gqa/broken.jpg", [1, 1, 9, 9], "Q", "A"),
        viscot_item(3, "gqa", "cot/gqa/ok.jpg", [30, 30, 30, 60], "Q", "A"),
        viscot_item(4, "gqa", "cot/gqa/ok.jpg", [150, 100, 200, 120], "Q", "A"),
        viscot_item(5, "gqa", "cot/gqa/ok.jpg", "[1, 2, 3]", "Q", "A"),
        bad_answer,
        "not an object",
        viscot_item(7, "gqa", "cot/gqa/ok.jpg", [20, 10, 60, 50], "Q", "A"),
    ]
    src = write_json_array(tmp_path / "v.json", items)
    manifest, ds, rejects = run(tmp_path, [src], root, shard_size=3)
    assert manifest.counts == {"read": 8, "written": 1, "rejected": 7}
    reasons = {r["ref"]: r["reason"] for r in rejects}
    assert "not found" in reasons["v.json[0]"]
    assert "does not decode" in reasons["v.json[1]"]
    assert "degenerate" in reasons["v.json[2]"] and "degenerate" in reasons["v.json[3]"]
    assert "x1, y1, x2, y2" in reasons["v.json[4]"]
    assert "no answer" in reasons["v.json[5]"]
    assert "JSON object" in reasons["v.json[6]"]
    assert ds[0].id == "gqa/7@v:7"


def test_wds_and_worker_count_independence(tmp_path: Path) -> None:
    root = tmp_path / "img"
    items = []
    for i in range(6):
        write_region_image(root, f"cot/gqa/{i}.jpg", 64, 48, (4, 4, 20, 20))
        items.append(viscot_item(i, "gqa", f"cot/gqa/{i}.jpg", [4, 4, 20, 20], f"Q{i}", f"A{i}"))
    src = write_json_array(tmp_path / "v.json", items)
    m1, _, _ = run(tmp_path, [src], root, name="w1", format="both", shard_size=2)
    m2, ds, _ = run(tmp_path, [src], root, name="w2", format="both", shard_size=2, workers=2)
    assert [s.files for s in m1.shards] == [s.files for s in m2.shards]
    wds = mmdata.Dataset(tmp_path / "w2", form="wds")
    r = wds[3]
    assert r.media[1].data is not None and wds.image(r, 1).size == (16, 16)
    crops = sorted((tmp_path / "w1" / "media" / "visual_cot" / "crops").rglob("*.jpg"))
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in crops]
    assert len(set(digest)) == 1 and len(crops) == 6  # same content, one file per record


def test_demo_source(tmp_path: Path) -> None:
    with demo_source(tmp_path / "src") as args:
        inputs = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--input"]
        root = Path(args[args.index("--media-root") + 1])
        manifest, ds, rejects = run(tmp_path, inputs, root)
    assert manifest.counts["written"] >= 5 and rejects
    assert manifest.tasks["visual_cot"] >= 4


def test_cli(tmp_path: Path) -> None:
    cli = pytest.importorskip("mmdata.cli", reason="mmdata.cli not written yet")
    from typer.testing import CliRunner

    with demo_source(tmp_path / "src") as args:
        result = CliRunner().invoke(cli.app, ["build", "visual-cot", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(mmdata.open(tmp_path / "out")) >= 5
