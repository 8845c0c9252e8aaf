"""The video builder on generated videos whose frames carry their own index (a bar code), so every test checks that
the extracted frame is the one on screen at its time stamp: mp4 and webm, constant and variable frame rate."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import mmdata
from builders.video import VideoOptions
from builders.video.frames import sample_times
from mmdata.build import BuildSettings, build
from mmdata.schema import Record
from mmdata.testing.video import (
    demo_source,
    expected_index,
    read_counter,
    vfr_times,
    write_corrupt_video,
    write_frames_folder,
    write_howto100m,
    write_sharegptvideo,
    write_ssv2,
    write_truncated_video,
    write_video,
    write_videostar,
    write_zero_frame_video,
)

VIDEOS: dict[str, dict[str, Any]] = {  # name → write_video arguments: constant and variable frame rates
    "cfr.mp4": {"n": 60, "fps": 10}, "cfr.webm": {"n": 75, "fps": 15},
    "vfr.mp4": {"pts": vfr_times(6.0, seed=3)}, "vfr.webm": {"pts": vfr_times(6.0, seed=4)},
    "ntsc.mp4": {"n": 150, "fps": 29.97},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("video_world")
    pts = {name: write_video(root / name, **kw) for name, kw in VIDEOS.items()}
    ann = write_videostar(root / "star.json", [(n.replace(".", "_"), n) for n in VIDEOS])
    return {"root": root, "pts": pts, "ann": ann}


def run(tmp_path: Path, fmt: str = "jsonl", **kw: Any) -> tuple[mmdata.Dataset, list[dict[str, str]]]:
    out = tmp_path / f"out_{fmt}"
    manifest = build("video", VideoOptions(**kw), BuildSettings(out=out, format=fmt, shard_size=3))
    c = manifest.counts
    assert c["read"] == c["written"] + c["rejected"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return mmdata.open(out), rejects


def frame_counters(ds: mmdata.Dataset, r: Record) -> list[int]:
    return [read_counter(ds.image(r, j)) for j in range(len(r.media))]


def test_sample_times() -> None:
    assert sample_times(0, 5.0, 1.0, 45) == [0, 1, 2, 3, 4]
    assert sample_times(0, 5.03, 1.0, 45) == [0, 1, 2, 3, 4, 5]
    assert sample_times(2, 4.0, 2.0, 45) == [2, 2.5, 3, 3.5]
    assert sample_times(0, 100, 1.0, 4) == [0, 25, 50, 75]  # capped: spread over the whole video
    assert sample_times(3, 3, 1.0, 45) == []


@pytest.mark.parametrize("fps", [1.0, 2.5])
def test_video_qa_frames_are_the_ones_on_screen(world: dict[str, Any], tmp_path: Path, fps: float) -> None:
    ds, rejects = run(tmp_path, input=[world["ann"]], task="video_qa", fps=fps, frame_size=64)
    assert rejects == [] and len(ds) == len(VIDEOS)
    for r in ds:
        name = r.meta["video"]
        pts = world["pts"][name]
        duration = pts[-1] + (pts[-1] - pts[-2])
        times = [m.t for m in r.media]
        assert times == pytest.approx([k / fps for k in range(len(times))]) and times[-1] < duration
        assert duration - times[-1] <= 1 / fps + 0.05  # nothing left out at the end
        assert frame_counters(ds, r) == [expected_index(pts, t) for t in times], name
        assert {(m.kind, m.video) for m in r.media} == {("frame", name)}
        assert all(max(m.width, m.height) <= 64 for m in r.media)
        human = r.conversations[0].value
        assert human.startswith("<image>" * len(times) + "\n") and "<video>" not in human
        assert human.count("<image>") == len(r.media) == len(r.inputs()) and not r.targets()
        assert r.conversations[1].value == "B" and r.task == "video_qa" and r.source == "video"
        assert len({m.path for m in r.media}) == len(r.media)


def test_max_frames_spreads_over_the_video_and_wds_carries_frames(world: dict[str, Any], tmp_path: Path) -> None:
    ds, _ = run(tmp_path, "wds", input=[world["ann"]], task="video_qa", max_frames=4, frame_size=0)
    r = next(r for r in ds if r.meta["video"] == "cfr.mp4")
    assert [m.t for m in r.media] == [0.0, 1.5, 3.0, 4.5]
    assert frame_counters(ds, r) == [0, 15, 30, 45]
    assert (r.media[0].width, r.media[0].height) == (96, 64)
    assert Image.open(io.BytesIO(r.media[0].data or b"")).format == "JPEG"


def test_sharegptvideo_frames_folder_is_subsampled_in_natural_order(tmp_path: Path) -> None:
    write_frames_folder(tmp_path / "frames" / "a", 9, pattern="frame_{}.jpg", start=0)  # frame_10 sorts after _9
    write_frames_folder(tmp_path / "frames" / "b", 13)
    ann = write_sharegptvideo(tmp_path / "share.jsonl", [("a", "frames/a"), ("b", "frames/b")])
    ds, rejects = run(tmp_path, input=[ann], task="video_qa", frames_fps=2.0)
    assert rejects == []
    by_id = {r.meta["orig_id"]: r for r in ds}
    assert frame_counters(ds, by_id["a"]) == [0, 2, 4, 6, 8]
    assert frame_counters(ds, by_id["b"]) == [0, 2, 4, 6, 8, 10, 12]
    assert [m.t for m in by_id["b"].media] == [0, 1, 2, 3, 4, 5, 6]


def test_multi_video_item_keeps_each_videos_frames_in_order(world: dict[str, Any], tmp_path: Path) -> None:
    ann = write_videostar(tmp_path / "two.json", [("two", ["cfr.mp4", "vfr.webm"])])
    ds, _ = run(tmp_path, input=[ann], media_root=world["root"], task="video_qa", max_frames=6)
    r = ds[0]
    assert [m.video for m in r.media] == ["cfr.mp4"] * 3 + ["vfr.webm"] * 3
    assert frame_counters(ds, r)[:3] == [0, 20, 40]


def test_frame_pred_context_inputs_and_future_targets(world: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("cfr.mp4", "vfr.webm", "ntsc.mp4"):
        (folder / name).symlink_to(world["root"] / name)
    opts: dict[str, Any] = {"input": [folder], "task": "frame_pred", "future_min": 1, "future_max": 3,
                            "gap_min": 1, "gap_max": 2, "seed": 7}
    ds, rejects = run(tmp_path, **opts)
    assert rejects == [] and len(ds) == 3
    for r in ds:
        k, s = r.meta["future"], r.meta["gap"]
        assert 1 <= k <= 3 and 1 <= s <= 2
        ctx, fut = r.inputs(), r.targets()
        assert len(fut) == k and len(ctx) >= 1 and r.conversations[1].value == "<image>" * k
        assert [m.t for m in ctx] == pytest.approx([ctx[0].t + i for i in range(len(ctx))])
        assert [m.t for m in fut] == pytest.approx([ctx[-1].t + s * j for j in range(1, k + 1)])
        ask = r.conversations[0].value
        assert (f"next {k} frames" in ask if k > 1 else "frame" in ask or "later" in ask) and f"{s} second" in ask
        pts = world["pts"][r.media[0].video]
        assert frame_counters(ds, r) == [expected_index(pts, m.t) for m in r.media]
    again, _ = run(tmp_path / "again", **opts)
    assert [x.to_dict() for x in again] == [x.to_dict() for x in ds]  # seeded per record: same choices
    other, _ = run(tmp_path / "other", **{**opts, "seed": 8})
    assert [x.id for x in other] == [x.id for x in ds]


def test_howto100m_clips_cut_at_caption_segments(world: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "vid1.mp4").symlink_to(world["root"] / "cfr.mp4")
    cap = write_howto100m(tmp_path / "caption.json", {
        "vid1": [(0.0, 3.0, "open the box"), (2.0, 6.0, "take it out"), (5.5, 6.0, "too short")],
        "gone": [(0.0, 3.0, "no video")]})
    ds, rejects = run(tmp_path, input=[cap], media_root=tmp_path / "v", task="frame_pred", gap_max=1)
    assert [r.id for r in ds] == ["vid1#0@caption", "vid1#1@caption"]
    for r, (start, end) in zip(ds, [(0, 3), (2, 6)], strict=True):
        assert all(start <= m.t < end for m in r.media) and r.media[0].video == "vid1.mp4"
        assert frame_counters(ds, r) == [round(m.t * 10) for m in r.media]
    assert ds[1].meta["caption"] == "take it out" and ds[1].meta["clip"] == 1
    reasons = {x["ref"]: x["reason"] for x in rejects}
    assert "too short for frame_pred" in reasons["caption[vid1#2]"]
    assert "video not found" in reasons["caption[gone#0]"]


def test_ssv2_with_labels(world: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "45.webm").symlink_to(world["root"] / "cfr.webm")
    ann = write_ssv2(tmp_path / "something-something-v2-train.json", ["45"], labels=tmp_path / "labels.json")
    ds, rejects = run(tmp_path, input=[ann], media_root=tmp_path / "v", task="frame_pred",
                      labels=tmp_path / "labels.json")
    assert rejects == [] and ds[0].id == "45@something-something-v2-train"
    assert ds[0].meta["class"] == 0 and ds[0].meta["placeholders"] == ["a cup", "a table"]


def test_bad_inputs_are_rejects_with_reasons(tmp_path: Path) -> None:
    v = tmp_path / "v"
    write_video(v / "ok.mp4", n=30, fps=10)
    write_video(v / "short.mp4", n=5, fps=10)  # 0.5 s
    write_corrupt_video(v / "corrupt.mp4")
    write_truncated_video(v / "truncated.mp4")
    write_zero_frame_video(v / "zero.webm")
    (v / "empty.mp4").write_bytes(b"")
    (tmp_path / "frames" / "none").mkdir(parents=True)
    twice = {"id": "twice", "video": "ok.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "<video> this"}]}
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps(
        [{"id": n, "video": n, "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}
         for n in ("ok.mp4", "corrupt.mp4", "truncated.mp4", "zero.webm", "empty.mp4", "missing.mp4", "../frames/none")]
        + [twice]))
    ds, rejects = run(tmp_path, input=[ann], media_root=v, task="video_qa")
    assert [r.meta["orig_id"] for r in ds] == ["ok.mp4"]
    reasons = {x["ref"]: x["reason"] for x in rejects}
    assert "does not open" in reasons["bad.json[1]"] and "corrupt.mp4" in reasons["bad.json[1]"]
    assert "does not open" in reasons["bad.json[2]"]
    assert "does not open" in reasons["bad.json[3]"] or "no frames" in reasons["bad.json[3]"]
    assert "empty file (0 bytes)" in reasons["bad.json[4]"]
    assert "video not found" in reasons["bad.json[5]"]
    assert "frames folder is empty" in reasons["bad.json[6]"]
    assert "<video> appears 2 times" in reasons["bad.json[7]"]
    short = write_videostar(tmp_path / "short.json", [("s", "short.mp4"), ("ok", "ok.mp4")])
    ds, rejects = run(tmp_path / "qa_min", input=[short], media_root=v, task="video_qa", min_frames=2)
    assert [r.meta["orig_id"] for r in ds] == ["ok"]
    assert "is 0.5 s: 1 frame(s) at --fps 1, fewer than --min-frames 2" in rejects[0]["reason"]
    ds, rejects = run(tmp_path / "pred", input=[v], task="frame_pred", gap_min=1, gap_max=1)
    assert [r.id for r in ds] == ["ok@v"]
    assert "too short for frame_pred" in {x["ref"]: x["reason"] for x in rejects}["v/short.mp4"]
    assert len(rejects) == 5


def test_wrong_task_or_unknown_input_is_an_error_naming_the_flag(world: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="builds --task video_qa, not --task frame_pred"):
        run(tmp_path, input=[world["ann"]], task="frame_pred")
    (tmp_path / "x.json").write_text('[{"foo": 1}]')
    with pytest.raises(ValueError, match="not a recognised video source"):
        run(tmp_path / "b", input=[tmp_path / "x.json"], task="video_qa")
    with pytest.raises(ValueError, match="--fps must be > 0"):
        run(tmp_path / "c", input=[world["ann"]], fps=0)


@pytest.mark.parametrize("task", ["video_qa", "frame_pred"])
def test_demo_source_through_the_cli(tmp_path: Path, task: str) -> None:
    cli = pytest.importorskip("mmdata.cli")
    from typer.testing import CliRunner

    with demo_source(tmp_path / "src", task) as args:
        result = CliRunner().invoke(cli.app, ["build", "video", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    ds = mmdata.open(tmp_path / "out")
    c = ds.manifest.counts
    assert c["written"] >= 4 and c["rejected"] == 2 and c["read"] == c["written"] + c["rejected"]
    assert all(r.task == task for r in ds)
    assert all((tmp_path / "out" / "media" / m.path).is_file() for r in ds for m in r.media)


def test_units_are_stable_spans_and_honour_limit(world: dict[str, Any], tmp_path: Path) -> None:
    from builders.video import units

    opts = VideoOptions(input=[world["ann"], world["root"]], task="video_qa")
    with pytest.raises(ValueError, match="is a folder of videos, which builds --task frame_pred"):
        units(opts, 2, None)
    opts = VideoOptions(input=[world["ann"]], task="video_qa")
    assert [u.span.count for u in units(opts, 2, None) if u.span] == [2, 2, 1]
    assert [u.span.count for u in units(opts, 2, 3) if u.span] == [2, 1]
    assert units(opts, 2, None) == units(opts, 2, None)
