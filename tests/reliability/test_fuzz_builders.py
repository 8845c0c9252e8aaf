"""Structural guarantee: whatever JSON a source holds, every builder's record function yields a `Record` or a
`Reject` for it, and the writer stores or rejects that record: nothing raises out of a build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders._common import InputSpan
from builders.video.sources import Unit as VideoUnit
from mmdata.build.registry import get
from mmdata.build.sources import plan
from mmdata.build.writer import ShardConfig, ShardWriter
from mmdata.core.schema import Record, Reject
from mmdata.testing.images import write_image
from mmdata.testing.instructpix2pix import write_release
from mmdata.testing.video import write_frames_folder, write_video

PATHS = ["a.jpg", "v.mp4", "frames/f1", "../a.jpg", "/etc/hostname", "a.jpg\x00", "", "A.JPG", "./a.jpg",
         "x" * 300, "frames", "a.jpg###[1, 2, 30, 40]", "v"]
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(PATHS) | st.sampled_from(["<image>", "<video>\nQ?", "human", "gpt", "user", "system"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
turn = st.fixed_dictionaries({}, optional={"from": st.sampled_from(["human", "gpt", "system", "user", "x"])
                                           | json_values, "value": st.sampled_from(["<image>\nQ?", "A.", "<video>\nQ?",
                                                                                   ""]) | json_values})
FIELDS = {"id": json_values, "image": st.sampled_from(PATHS) | json_values, "video": st.sampled_from(PATHS) | json_values,
          "conversations": st.lists(turn, max_size=4) | json_values, "instruction": json_values,
          "input": st.sampled_from(PATHS) | json_values, "output": st.sampled_from(PATHS) | json_values,
          "question": json_values, "answer": json_values, "bboxs": json_values, "width": json_values,
          "height": json_values, "dataset": json_values, "question_id": json_values,
          "template": json_values, "label": json_values, "placeholders": json_values}
items = st.fixed_dictionaries({}, optional=FIELDS) | json_values


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_root")
    write_image(root / "a.jpg", 64, 48)
    write_video(root / "v.mp4", n=20, fps=10)
    write_frames_folder(root / "frames" / "f1", 3)
    return root


def _write(path: Path, value: Any, kind: str) -> None:
    text = json.dumps(value, allow_nan=True)
    path.write_text(f"[{text}]" if kind == "json" else text + "\n")


def _drain(records: Any, out: Path, root: Path | None) -> None:
    """Every yielded item is a Record or a Reject, and the writer takes it without raising."""
    with ShardWriter(ShardConfig(out, ("jsonl", "wds"), root, False), 0) as w:
        for item in records:
            batch = item if type(item) is list else [item]
            assert all(isinstance(x, (Record, Reject)) for x in batch), batch
            w.add_many(batch)
    assert w.result.read == w.result.written + w.result.rejected


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.mark.parametrize("name, kind", [("cambrian", "jsonl"), ("cambrian", "json"), ("aurora", "json"),
                                        ("visual_cot", "json"), ("visual_cot", "jsonl")])
@FUZZ
@given(value=items)
def test_json_builders(name: str, kind: str, value: Any, root: Path, tmp_path: Path) -> None:
    src = tmp_path / f"in.{kind}"
    _write(src, value, kind)
    builder = get(name)
    options = builder.options(input=[src], media_root=root)
    for span in plan(src, 10):
        _drain(builder.records(options, InputSpan("in", span)), tmp_path / "out", root)


@pytest.mark.parametrize("kind", ["qa", "ssv2"])
@FUZZ
@given(value=items)
def test_video_annotations(kind: str, value: Any, root: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    _write(src, value, "json")
    builder = get("video")
    options = builder.options(input=[src], media_root=root, task="video_qa" if kind == "qa" else "frame_pred",
                              max_frames=4)
    for span in plan(src, 10):
        _drain(builder.records(options, VideoUnit(kind, "in", str(root), span=span)), tmp_path / "out", None)


@FUZZ
@given(clip=st.tuples(st.sampled_from(["v", "../v", "x" * 300, "v\x00"]) | st.text(max_size=8), json_values,
                      json_values, json_values))
def test_howto100m_segments(clip: tuple[Any, Any, Any, Any], root: Path, tmp_path: Path) -> None:
    vid, start, end, text = clip
    builder = get("video")
    options = builder.options(input=[root], media_root=root, task="frame_pred")
    unit = VideoUnit("howto100m", "cap", str(root), items=((vid, 0, start, end, text),))
    _drain(builder.records(options, unit), tmp_path / "out", None)


@FUZZ
@given(prompt=json_values | st.fixed_dictionaries({}, optional={"edit": json_values, "input": json_values,
                                                                "caption": json_values, "output": json_values}),
       seed_line=json_values)
def test_instructpix2pix_release_folders(prompt: Any, seed_line: Any, tmp_path: Path) -> None:
    release = write_release(tmp_path / "rel", [("0001", None, [1])])
    (release / "0001" / "prompt.json").write_text(json.dumps(prompt))
    (release / "0001" / "metadata.jsonl").write_text(json.dumps(seed_line) + "\n")
    builder = get("instructpix2pix")
    options = builder.options(input=[release])
    for unit in builder.units(options, 10, None):
        _drain(builder.records(options, unit), tmp_path / "out", release)


@FUZZ
@given(caption=st.text(max_size=40) | st.none(), url=st.text(max_size=20), key=st.text(max_size=10),
       size=json_values)
def test_cc12m_conversion(caption: Any, url: str, key: str, size: Any, root: Path, tmp_path: Path) -> None:
    from builders.cc12m import CC12MOptions, convert

    row = {"caption": caption, "url": url, "key": key, "original_width": size, "original_height": size}
    item = convert(CC12MOptions(caption_ratio=0.5), row, (root / "a.jpg").read_bytes(), "jpg", "cc", 1, "00000",
                   "cc:1")
    _drain([item], tmp_path / "out", None)
