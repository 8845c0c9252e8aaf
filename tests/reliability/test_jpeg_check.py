"""The build checks a JPEG by decoding its whole bitstream at 1/8 scale (the pixels are not kept): it must reject
exactly the files a full decode rejects, and report the stored size and orientation."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from mmdata.core.media import MediaError, decode, decode_image


def _jpeg(rng: random.Random, w: int, h: int, mode: str, progressive: bool, exif: int | None = None) -> bytes:
    arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    out = io.BytesIO()
    kwargs = {}
    if exif is not None:
        e = Image.Exif()
        e[0x0112] = exif
        kwargs["exif"] = e.tobytes()
    im.save(out, "JPEG", quality=rng.choice((60, 90)), progressive=progressive, **kwargs)
    return out.getvalue()


def _full_verdict(data: bytes) -> tuple[int, int] | None:
    try:
        im = decode_image(data, "x")
    except MediaError:
        return None
    return im.size


def test_the_jpeg_check_rejects_what_a_full_decode_rejects() -> None:
    rng = random.Random(0)
    bases = [_jpeg(rng, 96, 64, "RGB", False), _jpeg(rng, 61, 33, "L", True), _jpeg(rng, 40, 24, "CMYK", False)]
    broken = 0
    for _ in range(1500):
        data = bytearray(rng.choice(bases))
        op = rng.random()
        if op < 0.4:
            data = data[:rng.randrange(len(data))]
        elif op < 0.8:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            at = rng.randrange(len(data))
            del data[at:at + rng.randint(1, 100)]
        full = _full_verdict(bytes(data))
        try:
            info = decode(bytes(data), "x")
            checked: tuple[int, int] | None = (info.width, info.height)
        except MediaError:
            checked = None
        assert checked == full, bytes(data)
        broken += full is None
    assert broken > 300  # rejections were exercised


@pytest.mark.parametrize("turn, shown", [(1, (96, 64)), (6, (64, 96)), (3, (96, 64))])
def test_the_jpeg_check_reports_the_stored_size_as_shown(turn: int, shown: tuple[int, int]) -> None:
    info = decode(_jpeg(random.Random(1), 96, 64, "RGB", False, exif=turn), "x")
    assert (info.width, info.height, info.mode, info.ext, info.orientation) == (*shown, "RGB", "jpg", turn)
