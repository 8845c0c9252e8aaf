"""16-bit and float images are served with their real brightness, EXIF-rotated photos as shown; both noted in meta."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mmdata.testing.video import write_sharegptvideo
from mmdata.testing.visual_cot import viscot_item, write_json_array
from tests.reliability.conftest import run_build, turns, write_jsonl

# A horizontal ramp over the 16-bit range: 8-bit value of column x is about x * 255 / 63.
RAMP16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (48, 1))


def save16(path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RAMP16).save(path, format=fmt)  # mode I;16
    return path


def save_float(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((RAMP16 / 65535.0).astype(np.float32), "F").save(path, format="TIFF")
    return path


def save_rotated(path: Path, orientation: int = 6) -> Path:
    """A 60x40 JPEG whose left half is black, right half white, tagged 'rotate 90° clockwise to show'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, 30:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, format="JPEG", quality=95, exif=exif)
    return path


def ramp_ok(im: Image.Image) -> bool:
    row = np.asarray(im.convert("L"), dtype=np.int32)[im.height // 2]
    expected = np.linspace(0, 255, im.width)
    return im.mode == "RGB" and bool(np.abs(row - expected).max() <= 6)


def test_deep_and_rotated_images_are_served_as_shown(tmp_path: Path) -> None:
    root = tmp_path / "img"
    save16(root / "png16.png")
    save16(root / "tif16.tif", "TIFF")
    save_float(root / "float.tif")
    save_rotated(root / "rotated.jpg")
    save_rotated(root / "plain.jpg", orientation=1)
    names = ["png16.png", "tif16.tif", "float.tif", "rotated.jpg", "plain.jpg"]
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": n, "image": n, "conversations": turns()} for n in names])
    for fmt in ("jsonl", "wds"):
        ds, rejects = run_build("cambrian", tmp_path / fmt, fmt=fmt, input=[src], media_root=root)
        assert rejects == {}
        by = {r.meta["orig_id"]: r for r in ds}
        for n in names[:3]:
            assert ramp_ok(ds.image(by[n], 0)), n  # not clipped to white
            assert by[n].meta["media_notes"] == [{"media": 0, "mode": Image.open(root / n).mode,
                                                  "served_as": "RGB, 8 bits per channel"}]
        rotated = by["rotated.jpg"]
        assert (rotated.media[0].width, rotated.media[0].height) == (40, 60)  # as shown
        assert rotated.meta["media_notes"] == [{"media": 0, "exif_orientation": 6}]
        shown = np.asarray(ds.image(rotated, 0).convert("L"))
        assert shown.shape == (60, 40) and shown[:20].mean() < 30 and shown[40:].mean() > 225  # black on top
        assert "media_notes" not in by["plain.jpg"].meta  # nothing changed, nothing noted


def test_visual_cot_crops_a_16_bit_image_by_its_real_values(tmp_path: Path) -> None:
    root = tmp_path / "img"
    save16(root / "cot/gqa/1.png")
    src = write_json_array(tmp_path / "viscot.json", [viscot_item(1, "gqa", "cot/gqa/1.png", [32, 0, 64, 48], "Q?",
                                                                   "A.", (64, 48))])
    ds, rejects = run_build("visual_cot", tmp_path / "out", input=[src], media_root=root)
    assert rejects == {}
    r = ds[0]
    crop = np.asarray(ds.image(r, 1).convert("L"), dtype=np.int32)
    assert 120 < crop[:, 0].mean() < 140 and crop[:, -1].mean() > 240  # the right half of the ramp, not white
    assert r.meta["crop_from"] == {"mode": "I;16", "served_as": "RGB, 8 bits per channel"}


def test_frames_folder_of_16_bit_frames(tmp_path: Path) -> None:
    for i in range(4):
        save16(tmp_path / "frames" / "v1" / f"{i:03d}.png")
    ann = write_sharegptvideo(tmp_path / "share.jsonl", [("s1", "frames/v1")])
    ds, rejects = run_build("video", tmp_path / "out", input=[ann], media_root=tmp_path, task="video_qa",
                            frames_fps=2.0, frame_size=0, jpeg_quality=95)
    assert rejects == {}
    r = ds[0]
    assert all(ramp_ok(ds.image(r, j)) for j in range(len(r.media)))
    assert r.meta["frames_converted"]["frames/v1/000.png"]["mode"] == "I;16"


def test_image_served_from_tar_bytes_is_converted_too(tmp_path: Path) -> None:
    from mmdata.core.media import to_rgb

    buf = io.BytesIO()
    Image.fromarray(RAMP16).save(buf, format="PNG")
    assert ramp_ok(to_rgb(Image.open(io.BytesIO(buf.getvalue()))))
