"""Media named by a source stay inside --media-root after symlinks are followed; nothing outside is opened."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmdata.mix.recipe import RecipeError, parse_recipe
from mmdata.testing.images import write_image
from mmdata.testing.instructpix2pix import write_aurora, write_release
from mmdata.testing.video import write_frames_folder, write_video
from mmdata.testing.visual_cot import viscot_item, write_json_array
from tests.reliability.conftest import run_build, turns, write_jsonl

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only inside `opened()`


@pytest.fixture
def opened() -> Iterator[list[str]]:
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    secret, root = tmp_path / "secret", tmp_path / "root"
    write_image(secret / "secret.jpg", seed=1)
    write_video(secret / "secret.mp4", n=20, fps=10)
    write_frames_folder(secret / "frames", 4)
    write_image(root / "ok.jpg")
    write_video(root / "ok.mp4", n=20, fps=10)
    write_frames_folder(root / "frames" / "f1", 4)
    (root / "link_in.jpg").symlink_to("ok.jpg")
    (root / "link_out.jpg").symlink_to(secret / "secret.jpg")
    (root / "dir_link").symlink_to(secret)
    (root / "vlink.mp4").symlink_to(secret / "secret.mp4")
    (root / "flink").symlink_to(secret / "frames")
    first = sorted((root / "frames" / "f1").iterdir())[0]
    first.unlink()
    first.symlink_to(secret / "frames" / sorted(os.listdir(secret / "frames"))[0])
    return {"secret": secret, "root": root}


def _secret_opened(opened: list[str], secret: Path) -> list[str]:
    real = os.path.realpath(secret)
    return [p for p in opened if os.path.realpath(p).startswith(real)]


def test_images_outside_the_root_are_rejects_and_never_opened(world: dict[str, Path], tmp_path: Path,
                                                              opened: list[str]) -> None:
    root, secret = world["root"], world["secret"]
    paths = ["ok.jpg", "link_in.jpg", str(secret / "secret.jpg"), "../secret/secret.jpg", "link_out.jpg",
             "dir_link/secret.jpg", "a" * 300 + ".jpg"]
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": p[:20], "image": p, "conversations": turns()} for p in paths])
    ds, rejects = run_build("cambrian", tmp_path / "out", copy_media=True, input=[src], media_root=root)
    assert [r.media[0].path for r in ds] == ["ok.jpg", "link_in.jpg"]
    reasons = list(rejects.values())
    assert "is absolute" in reasons[0] and "escapes the media root" in reasons[1]
    assert all("outside the media root" in r for r in reasons[2:4])
    assert "more than the 255 a file name can have" in reasons[4]
    assert _secret_opened(opened, secret) == []
    copied = tmp_path / "out" / "media" / "link_in.jpg"  # --copy-media: the link's target, never the link
    assert not copied.is_symlink() and copied.read_bytes() == (root / "ok.jpg").read_bytes()


def test_visual_cot_image_outside_the_root(world: dict[str, Path], tmp_path: Path, opened: list[str]) -> None:
    items = [viscot_item(i, "gqa", p, [1, 1, 20, 20], "Q?", "A.", (64, 48))
             for i, p in enumerate(["ok.jpg", "../secret/secret.jpg", "link_out.jpg", "/etc/hostname"])]
    meta = write_jsonl(tmp_path / "meta.jsonl", [{"question": "Q?", "answer": "A", "image": "../secret/secret.jpg",
                                                  "bboxs": [[1, 1, 5, 5]], "dataset": "gqa"}])
    ds, rejects = run_build("visual_cot", tmp_path / "out", input=[write_json_array(tmp_path / "v.json", items), meta],
                            media_root=world["root"])
    assert len(ds) == 1 and len(rejects) == 4
    assert all("outside the media root" in r or "escapes" in r or "absolute" in r for r in rejects.values())
    assert _secret_opened(opened, world["secret"]) == []


def test_videos_and_frames_folders_outside_the_root(world: dict[str, Path], tmp_path: Path) -> None:
    root, secret = world["root"], world["secret"]
    videos: list[object] = ["ok.mp4", str(secret / "secret.mp4"), "../secret/secret.mp4", "vlink.mp4", "flink",
                            "dir_link/secret.mp4", "frames/f1", "ok\x00.mp4", "b" * 300 + ".mp4"]
    ann = tmp_path / "qa.json"
    ann.write_text(json.dumps([{"id": str(i), "video": v, "conversations": turns("<video>\nQ?", "A.")}
                               for i, v in enumerate(videos)]))
    ds, rejects = run_build("video", tmp_path / "out", input=[ann], media_root=root, task="video_qa")
    assert [r.meta["orig_id"] for r in ds] == ["0"]
    reasons = [rejects[f"qa.json[{i}]"] for i in range(1, len(videos))]
    assert "is absolute" in reasons[0] and "escapes the media root" in reasons[1]
    assert all("outside the media root" in r for r in reasons[2:5])
    assert "frame" in reasons[5] and "outside the media root" in reasons[5]  # one symlinked frame in a folder
    assert "NUL" in reasons[6] and "255" in reasons[7]


def test_frame_pred_ids_cannot_name_paths_outside(world: dict[str, Path], tmp_path: Path) -> None:
    ssv2 = tmp_path / "ssv2.json"
    ssv2.write_text(json.dumps([{"id": "ok", "template": "x"}, {"id": "../secret/secret", "template": "x"},
                                {"id": "vlink", "template": "x"}]))
    ds, rejects = run_build("video", tmp_path / "out", input=[ssv2], media_root=world["root"], task="frame_pred")
    assert [r.id for r in ds] == ["ok@ssv2"]
    assert "escapes" in rejects["ssv2.json[1]"] and "outside the media root" in rejects["ssv2.json[2]"]


def test_instructpix2pix_seed_folders_and_aurora_pairs(world: dict[str, Path], tmp_path: Path,
                                                       opened: list[str]) -> None:
    release = write_release(tmp_path / "release", [("0001", {"input": "a", "edit": "b", "output": "c"}, [1])])
    (release / "seeds.json").write_text(json.dumps([["0001", [1, "../../secret/x"]], ["../secret", [1]],
                                                    [str(world["secret"]), [2]]]))
    ds, rejects = run_build("instructpix2pix", tmp_path / "ip2p", input=[release])
    assert len(ds) == 1 and len(rejects) == 3
    assert all("escapes the media root" in r or "is absolute" in r for r in rejects.values())
    root = world["root"]
    aurora = write_aurora(root, [{"instruction": "x", "input": "ok.jpg", "output": "link_in.jpg"},
                                 {"instruction": "x", "input": "ok.jpg", "output": "link_out.jpg"},
                                 {"instruction": "x", "input": "dir_link/secret.jpg", "output": "ok.jpg"}])
    ds, rejects = run_build("aurora", tmp_path / "aurora", input=[aurora], media_root=root)
    assert len(ds) == 1 and all("outside the media root" in r for r in rejects.values()) and len(rejects) == 2
    assert _secret_opened(opened, world["secret"]) == []


def test_mixture_name_cannot_leave_the_mixtures_folder(tmp_path: Path) -> None:
    for name in ("../evil", "a/b", "..", "/abs", "x\\y"):
        with pytest.raises(RecipeError, match="name: .* must be a plain folder name"):
            parse_recipe({"name": name, "sources": [{"path": "d", "epochs": 1}]}, tmp_path / "r.yaml",
                         check_paths=False)


def test_source_keys_never_overwrite_builder_meta(tmp_path: Path) -> None:
    root = tmp_path / "root"
    aurora = write_aurora(root, [{"instruction": ["a", "b"], "input": "x/0.png", "output": "x/1.png", "ref": "evil",
                                  "instructions": "evil", "source_id": 7}])
    ds, rejects = run_build("aurora", tmp_path / "out", input=[aurora], media_root=root)
    meta = ds[0].meta
    assert meta["ref"] == "train.json[0]" and meta["instructions"] == ["a", "b"]
    assert meta["extra"] == {"ref": "evil", "instructions": "evil"} and meta["source_id"] == 7
