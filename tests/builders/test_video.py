"""The video builder on generated videos whose frames carry their own index (a bar code), so every test checks that
the extracted frame is the one on screen at its time stamp: mp4 and webm, constant and variable frame rate."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import mmdata
from builders.video import VideoOptions
from builders.video.families import FAMILIES, TWO_FRAMES, make_task, seconds
from builders.video.frames import sample_times
from mmdata.build.driver import BuildSettings, build
from mmdata.core.schema import Record
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
    assert sample_times(0, 100, 1.0, 4) == [0, 1, 2, 3]  # capped: cut, exactly 1 FPS (MetaMorph)
    assert sample_times(0, 100, 1.0, 4, "spread") == [0, 25, 50, 75]  # or spread over the whole video
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


def test_long_video_is_cut_at_exact_1fps_by_default_or_spread(world: dict[str, Any], tmp_path: Path) -> None:
    ds, _ = run(tmp_path, "wds", input=[world["ann"]], task="video_qa", max_frames=4, frame_size=0)
    r = next(r for r in ds if r.meta["video"] == "cfr.mp4")
    assert [m.t for m in r.media] == [0.0, 1.0, 2.0, 3.0] and frame_counters(ds, r) == [0, 10, 20, 30]
    assert (r.media[0].width, r.media[0].height) == (96, 64)
    assert Image.open(io.BytesIO(r.media[0].data or b"")).format == "JPEG"
    ds, _ = run(tmp_path / "spread", input=[world["ann"]], task="video_qa", max_frames=4, long_video="spread")
    r = next(r for r in ds if r.meta["video"] == "cfr.mp4")
    assert [m.t for m in r.media] == [0.0, 1.5, 3.0, 4.5] and frame_counters(ds, r) == [0, 15, 30, 45]
    assert ds.manifest.args["long_video"] == "spread"  # the choice is recorded with the build


def test_a_60_s_clip_gives_frames_at_0_to_44_s(tmp_path: Path) -> None:
    pts = write_video(tmp_path / "v" / "k700_long.mp4", n=120, fps=2, width=32, height=32)  # 60 s
    ann = write_videostar(tmp_path / "kinetics700_tune_.json", [("k700_long", "k700_long.mp4")])
    ds, _ = run(tmp_path, input=[ann], media_root=tmp_path / "v", task="video_qa")
    r = ds[0]
    assert [m.t for m in r.media] == [float(k) for k in range(45)]
    assert frame_counters(ds, r) == [expected_index(pts, k) for k in range(45)]
    assert ds.manifest.args["long_video"] == "cut" and ds.manifest.args["max_frames"] == 45


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
    assert frame_counters(ds, r)[:3] == [0, 10, 20]


def test_video_llava_tag_per_video_image_beside_video_and_later_turns(world: dict[str, Any], tmp_path: Path) -> None:
    """Video-LLaVA writes `<video><video>\n…` for two videos; records may also carry `image`, or ask about the
    video in a later turn. Each placeholder becomes its own media, in order; no literal `<video>` is left."""
    root = world["root"]
    Image.new("RGB", (20, 10), (250, 0, 0)).save(root / "still.png")
    items: list[dict[str, Any]] = json.loads(write_videostar(tmp_path / "a.json", [("two", ["cfr.mp4", "vfr.webm"])],
                                                             tag_per_video=True).read_text())
    items.append({"id": "mixed", "video": "cfr.mp4", "image": "still.png", "conversations": [
        {"from": "human", "value": "<image>\nThis photo and <video>\nthis clip: same place?"},
        {"from": "gpt", "value": "Yes."}]})
    items.append({"id": "later", "video": "vfr.webm", "conversations": [
        {"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi."},
        {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "B"}]})
    ann = tmp_path / "items.json"
    ann.write_text(json.dumps(items))
    ds, rejects = run(tmp_path, input=[ann], media_root=root, task="video_qa", max_frames=6)
    assert rejects == []
    two, mixed, later = ds
    assert two.conversations[0].value.startswith("<image>" * 6 + "\nWhat is the person doing?")
    assert [m.video for m in two.media] == ["cfr.mp4"] * 3 + ["vfr.webm"] * 3
    assert frame_counters(ds, two) == [0, 10, 20] + [expected_index(world["pts"]["vfr.webm"], t) for t in (0, 1, 2)]
    assert mixed.conversations[0].value == "<image>\nThis photo and " + "<image>" * 6 + "\nthis clip: same place?"
    assert [m.kind for m in mixed.media] == ["image"] + ["frame"] * 6 and mixed.meta["image"] == "still.png"
    assert ds.image(mixed, 0).getpixel((0, 0)) == (250, 0, 0) and frame_counters(ds, mixed)[1:] == [
        0, 10, 20, 30, 40, 50]
    assert later.conversations[0].value == "Hello" and later.conversations[2].value.startswith("<image>" * 6 + "\n")
    assert all("<video>" not in t.value for r in ds for t in r.conversations)


@pytest.mark.parametrize("family", [*FAMILIES, TWO_FRAMES])
def test_families_show_and_produce_the_frames_they_say(family: str) -> None:
    import random

    n = 2 if family == TWO_FRAMES else 12
    for seed in range(20):
        task = make_task(n, 1.5, random.Random(seed), None if family == TWO_FRAMES else family)
        seen, made = task.seen, task.made
        assert task.family == family and task.human.count("<image>") == len(seen)
        assert task.gpt.count("<image>") == len(made) and "1.5 seconds" in task.human + task.gpt
        run = sorted(set(seen) | set(made))
        assert all(0 <= i < n for i in run) and run == list(range(run[0], run[-1] + 1))  # one contiguous run
        if family == "next":
            assert len(seen) == 1 and seen + made == run
        elif family == "split":
            assert seen + made == run and seen and made
        elif family == "reverse":
            assert seen == run[-1:] and made == run[-2::-1]
        elif family == "alternate":
            assert seen == run[::2] and made == run[1::2]
        elif family == "reorder":
            assert sorted(seen) == made == run and seen != run
        elif family == "interval":
            assert made == [] and seen == run
        elif family == "next_k":
            assert 1 <= len(made) <= 3 and seen + made == run
        else:
            assert (seen, made) == ([0], [1])


def test_frame_pred_on_metamorph_semantics(world: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("cfr.mp4", "vfr.webm", "ntsc.mp4"):
        (folder / name).symlink_to(world["root"] / name)
    opts: dict[str, Any] = {"input": [folder], "task": "frame_pred", "seed": 7, "variants": 7}
    ds, rejects = run(tmp_path, **opts)
    assert rejects == [] and len(ds) == 21
    families: dict[str, set[str]] = {}
    for r in ds:
        name, interval, family = r.media[0].video, r.meta["interval"], r.meta["family"]
        pts = world["pts"][name]
        duration = pts[-1] + (pts[-1] - pts[-2])
        fps = len(pts) / duration
        low = max(2 / fps, 0.1)
        assert round(interval, 1) == interval and round(low, 1) - 1e-9 <= interval <= min(10, duration / 2) + 0.05
        assert r.id == f"{Path(name).stem}@videos:v{r.meta['variant']}"
        ks = [m.t / interval for m in r.media]  # every frame at a multiple of the interval from t = 0
        assert all(abs(k - round(k)) < 1e-6 and m.t < duration for k, m in zip(ks, r.media)) and len(ks) <= 45
        assert frame_counters(ds, r) == [expected_index(pts, m.t) for m in r.media]
        seen, made = [round(m.t / interval) for m in r.inputs()], [round(m.t / interval) for m in r.targets()]
        assert seconds(interval) in r.conversations[0].value + r.conversations[1].value
        if family == "interval":
            assert made == [] and not r.targets()  # stating the interval produces no frame
        elif family == "reverse":
            assert made == list(range(seen[0] - 1, seen[0] - 1 - len(made), -1))
        elif family == "reorder":
            assert made == sorted(seen) != seen
        elif family == "alternate":
            assert sorted(seen + made) == list(range(seen[0], seen[0] + len(seen) + len(made)))
        elif family == TWO_FRAMES:
            assert (seen, made) == ([0], [1])
        else:
            assert seen + made == list(range(seen[0], seen[0] + len(seen) + len(made)))
        families.setdefault(name, set()).add(family)
    assert all(len(f) >= 5 for f in families.values())  # variants deal the families out
    again, _ = run(tmp_path / "again", **opts)
    assert [x.to_dict() for x in again] == [x.to_dict() for x in ds]  # seeded per video: same choices
    other, _ = run(tmp_path / "other", **{**opts, "seed": 8})
    assert [x.meta["interval"] for x in other] != [x.meta["interval"] for x in ds]


def test_howto100m_clips_cut_at_caption_segments(world: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    shutil.copyfile(world["root"] / "cfr.mp4", tmp_path / "v" / "vid1.mp4")  # a symlink out of the root is refused
    cap = write_howto100m(tmp_path / "caption.json", {
        "vid1": [(0.0, 3.0, "open the box"), (2.0, 6.0, "take it out"), (5.95, 6.0, "too short")],
        "gone": [(0.0, 3.0, "no video")]})
    ds, rejects = run(tmp_path, input=[cap], media_root=tmp_path / "v", task="frame_pred")
    assert [r.id for r in ds] == ["vid1#0@caption", "vid1#1@caption"]
    for r, (start, end) in zip(ds, [(0, 3), (2, 6)], strict=True):
        assert all(start <= m.t < end for m in r.media) and r.media[0].video == "vid1.mp4"
        assert all(abs((m.t - start) / r.meta["interval"] % 1) < 1e-6 for m in r.media)  # from the clip's start
        assert frame_counters(ds, r) == [round(m.t * 10) for m in r.media]
    assert ds[1].meta["caption"] == "take it out" and ds[1].meta["clip"] == 1
    reasons = {x["ref"]: x["reason"] for x in rejects}
    assert "too short for frame_pred" in reasons["caption[vid1#2]"]
    assert "video not found" in reasons["caption[gone#0]"]


def test_ssv2_with_labels(world: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    shutil.copyfile(world["root"] / "cfr.webm", tmp_path / "v" / "45.webm")
    ann = write_ssv2(tmp_path / "something-something-v2-train.json", ["45"], labels=tmp_path / "labels.json")
    ds, rejects = run(tmp_path, input=[ann], media_root=tmp_path / "v", task="frame_pred",
                      labels=tmp_path / "labels.json")
    assert rejects == [] and ds[0].id == "45@something-something-v2-train"
    assert ds[0].meta["class"] == 0 and ds[0].meta["placeholders"] == ["a cup", "a table"]


def test_bad_inputs_are_rejects_with_reasons(tmp_path: Path) -> None:
    v = tmp_path / "v"
    write_video(v / "ok.mp4", n=30, fps=10)
    write_video(v / "short.mp4", n=5, fps=10)  # 0.5 s
    write_video(v / "tiny.mp4", n=1, fps=10)  # 0.1 s: one frame at any interval
    write_corrupt_video(v / "corrupt.mp4")
    write_truncated_video(v / "truncated.mp4")
    write_zero_frame_video(v / "zero.webm")
    (v / "empty.mp4").write_bytes(b"")
    (v / "frames" / "none").mkdir(parents=True)
    twice = {"id": "twice", "video": "ok.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "<video> this"}]}
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps(
        [{"id": n, "video": n, "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}
         for n in ("ok.mp4", "corrupt.mp4", "truncated.mp4", "zero.webm", "empty.mp4", "missing.mp4", "frames/none")]
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
    assert "<video> or <image> outside a human turn" in reasons["bad.json[7]"]
    short = write_videostar(tmp_path / "short.json", [("s", "short.mp4"), ("ok", "ok.mp4")])
    ds, rejects = run(tmp_path / "qa_min", input=[short], media_root=v, task="video_qa", min_frames=2)
    assert [r.meta["orig_id"] for r in ds] == ["ok"]
    assert "is 0.5 s: 1 frame(s) at --fps 1, fewer than --min-frames 2" in rejects[0]["reason"]
    ds, rejects = run(tmp_path / "pred", input=[v], task="frame_pred")
    assert [r.id for r in ds] == ["ok@v", "short@v"]
    assert "too short for frame_pred" in {x["ref"]: x["reason"] for x in rejects}["v/tiny.mp4"]
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
