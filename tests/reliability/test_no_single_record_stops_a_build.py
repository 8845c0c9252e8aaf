"""Every bad item is one counted reject naming it; the rest of the build goes on."""

from __future__ import annotations

import json
import struct
import tarfile
import zlib
from pathlib import Path

import pyarrow as pa
import pytest

from mmdata.testing.images import write_image
from mmdata.testing.instructpix2pix import hf_row, write_aurora, write_parquet
from mmdata.testing.video import write_frames_folder, write_video
from mmdata.testing.visual_cot import write_region_image
from tests.reliability.conftest import run_build, turns, write_jsonl


def bomb_png(path: Path, side: int = 40000) -> Path:
    """A valid PNG header declaring side x side pixels (far past Pillow's bomb limit) and almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_video_items_that_used_to_stop_the_build(tmp_path: Path) -> None:
    write_video(tmp_path / "ok.mp4", n=20, fps=10)
    write_frames_folder(tmp_path / "frames" / "bomb", 3, pattern="{:04d}.png")
    bomb_png(tmp_path / "frames" / "bomb" / "0000.png")
    videos: list[object] = ["ok.mp4", 5, {"a": "ok.mp4"}, [1], True, "ok\x00.mp4", "frames/bomb", "c" * 256 + ".mp4"]
    ann = tmp_path / "qa.json"
    ann.write_text(json.dumps([{"id": str(i), "video": v, "conversations": turns("<video>\nQ?", "A.")}
                               for i, v in enumerate(videos)]))
    ds, rejects = run_build("video", tmp_path / "out", input=[ann], media_root=tmp_path, task="video_qa")
    assert [r.meta["orig_id"] for r in ds] == ["0"]
    reasons = [rejects[f"qa.json[{i}]"] for i in range(1, len(videos))]
    assert all("field 'video' must be a path or a list of paths" in r for r in reasons[:4])
    assert "NUL" in reasons[4]
    assert "DecompressionBombError" in reasons[5] and "0000.png" in reasons[5]
    assert "255" in reasons[6]


def test_fps_is_bounded_by_the_source_and_options_by_sane_limits(tmp_path: Path) -> None:
    write_video(tmp_path / "ten.mp4", n=30, fps=10)
    write_frames_folder(tmp_path / "frames" / "f", 6)
    ann = tmp_path / "qa.json"
    ann.write_text(json.dumps([{"id": v, "video": v, "conversations": turns("<video>\nQ?", "A.")}
                               for v in ("ten.mp4", "frames/f")]))
    ds, rejects = run_build("video", tmp_path / "out", input=[ann], media_root=tmp_path, task="video_qa", fps=5.0)
    assert [r.meta["orig_id"] for r in ds] == ["ten.mp4"]
    assert "--fps 5 is above the frame rate of 'frames/f' (2 fps)" in rejects["qa.json[1]"]
    _, rejects = run_build("video", tmp_path / "out2", input=[ann], media_root=tmp_path, task="video_qa", fps=25.0)
    assert "--fps 25 is above the frame rate of 'ten.mp4' (10 fps)" in rejects["qa.json[0]"]
    for bad, match in [({"fps": float("inf")}, "--fps must be > 0"), ({"fps": float("nan")}, "--fps must be > 0"),
                       ({"max_frames": 10**9}, "--max-frames must be in 1..1024"),
                       ({"frame_size": 10**6}, "--frame-size must be in 0..16384"),
                       ({"variants": 10**9}, "--variants must be in 1..1000")]:
        with pytest.raises(ValueError, match=match):
            run_build("video", tmp_path / "bad", input=[ann], media_root=tmp_path, task="video_qa", **bad)


def test_edit_items_with_non_string_instructions(tmp_path: Path) -> None:
    rows = [{**hf_row(i), "original_prompt": i, "edit_prompt": 100 + i, "edited_prompt": i} for i in range(3)]
    shard = write_parquet(tmp_path / "p.parquet", rows, caption_type=pa.int64())
    ds, rejects = run_build("instructpix2pix", tmp_path / "ip2p", input=[shard])
    assert len(ds) == 0 and len(rejects) == 3
    assert all("field 'edit_prompt' must be a string, got int" in r for r in rejects.values())
    aurora = write_aurora(tmp_path / "aurora", [{"instruction": {"x": 1}, "input": "a.png", "output": "b.png"},
                                                {"instruction": 7, "input": "a.png", "output": "b.png"},
                                                {"instruction": "ok", "input": "a.png", "output": "b.png"}])
    ds, rejects = run_build("aurora", tmp_path / "aur", input=[aurora], media_root=tmp_path / "aurora")
    assert len(ds) == 1 and all("must be a string" in r for r in rejects.values()) and len(rejects) == 2


def test_declared_sizes_that_are_not_pixel_sizes(tmp_path: Path) -> None:
    write_region_image(tmp_path / "img", "gqa/1.jpg", 100, 80, (10, 10, 30, 30))
    rows = [{"question": "Q?", "answer": "A", "image": "gqa/1.jpg", "width": w, "height": 80,
             "bboxs": [[0, 0, 20, 20]], "dataset": "gqa"} for w in (5e-324, 1e-300, 0.5, 100)]
    src = write_jsonl(tmp_path / "meta.jsonl", rows)
    ds, rejects = run_build("visual_cot", tmp_path / "out", input=[src], media_root=tmp_path / "img")
    assert len(ds) == 1 and len(rejects) == 3
    assert all("is not a pixel size" in r for r in rejects.values())


def test_long_media_extension_in_a_webdataset_tar(tmp_path: Path) -> None:
    name = "pic." + "x" * 40
    write_image(tmp_path / "img" / "pic.jpg")
    (tmp_path / "img" / "pic.jpg").rename(tmp_path / "img" / name)
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "image": name, "conversations": turns()}])
    ds, rejects = run_build("cambrian", tmp_path / "out", fmt="wds", input=[src], media_root=tmp_path / "img")
    assert rejects == {} and ds[0].media[0].path == name
    with tarfile.open(tmp_path / "out" / "shards" / "000000.tar") as tar:
        assert [m.name.split(".", 1)[1] for m in tar] == ["json", "0.jpg"]  # the decoded format names the member
