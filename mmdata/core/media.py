"""Decoding and checking images: every image is decoded to its end once at build time, so training never meets a
broken file. Also the rules a media path's name must follow (`check_name`), decided from the name alone."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdata.core.errors import InputError

# Decompression bombs are an input error, not a crash: Pillow raises DecompressionBombError above 2x this.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


# Pillow names the stream by its repr ("<_io.BytesIO object at 0x7f...>"): an address would make rejects.jsonl
# differ from run to run.
_STREAM_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


_EXT_BY_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


# Samples wider than 8 bits (16-bit PNG/TIFF greyscale, 32-bit int, float): `convert("RGB")` clips them to white.
DEEP_MODES = frozenset(("I;16", "I;16B", "I;16L", "I;16N", "I", "F"))


_ROTATED = frozenset((5, 6, 7, 8))  # EXIF orientations that swap width and height


class MediaError(InputError):
    """A media file is missing or does not decode; the writer turns it into a reject with this message."""


def decode_image(data: bytes, what: str) -> Image.Image:
    """`data` decoded completely (a loaded image); a `MediaError` starting with `what` says why not."""
    return _decoded(data, what, pixels=True)[0]


def _decoded(data: bytes, what: str, pixels: bool) -> tuple[Image.Image, tuple[int, int]]:
    """`data` decoded to its end, and its stored size. Without `pixels` (a check), a JPEG is decoded at 1/8 scale:
    every block of its bitstream is still read and entropy-decoded, which is where a broken file fails (the same
    verdict as at full size, tested on mutated files), and only the inverse transforms are skipped."""
    if not data:
        raise MediaError(f"{what}: empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        size = im.size
        if not pixels and im.format == "JPEG":
            im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
        im.load()  # verify() only checks headers; a truncated JPEG fails only when decoded
        return im, size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = _STREAM_REPR.sub("<data>", str(e))
        raise MediaError(f"{what}: does not decode as an image ({type(e).__name__}: {reason})") from None


@dataclass(frozen=True)
class ImageInfo:
    """A decoded image as it is shown: `width`/`height` after its EXIF orientation; `mode` as stored."""

    width: int
    height: int
    ext: str
    mode: str
    orientation: int  # EXIF orientation tag, 1 when absent

    def notes(self) -> dict[str, object]:
        """What serving it changes (for the record's meta): a rotation/flip, or samples reduced to 8 bits."""
        out: dict[str, object] = {}
        if self.orientation != 1:
            out["exif_orientation"] = self.orientation
        if self.mode in DEEP_MODES:
            out["mode"] = self.mode
            out["served_as"] = "RGB, 8 bits per channel"
        return out


def decode(data: bytes, what: str) -> ImageInfo:
    """Decode `data` to its end and describe it as shown. Raise `MediaError` saying why not."""
    im, (width, height) = _decoded(data, what, pixels=False)
    with im:
        turn = orientation(im)
        w, h = (height, width) if turn in _ROTATED else (width, height)
        return ImageInfo(w, h, _EXT_BY_FORMAT.get(im.format or "", "img"), im.mode, turn)


def check_bytes(data: bytes, what: str) -> tuple[int, int, str]:
    """Decode `data` to its end; return (width, height, file extension) as shown. Raise `MediaError` if not."""
    info = decode(data, what)
    return info.width, info.height, info.ext


def orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1..8), 1 when absent or unreadable."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block (third-party parser) only loses the rotation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as shown, in RGB with 8 bits per channel: EXIF rotation applied; 16-bit, 32-bit and float samples
    scaled to 0..255 (16-bit range; float images in 0..1 as fractions) rather than clipped to white."""
    if orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in DEEP_MODES:
        a = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and a.size and np.nanmax(a) <= 1.0 else 65535.0
        a = np.nan_to_num(a, nan=0.0) * (255.0 / top)
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def check_name(rel: str, what: str) -> None:
    """`inside`'s checks on the name alone (relative, no `..`, no NUL, components a file system can hold)."""
    if not isinstance(rel, str) or not rel:
        raise MediaError(f"{what}: expected a non-empty relative path")
    if "\0" in rel:
        raise MediaError(f"{what}: contains a NUL byte")
    parts = PurePosixPath(rel).parts
    if rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise MediaError(f"{what}: is absolute; media paths are relative to the media root")
    if ".." in parts:
        raise MediaError(f"{what}: escapes the media root ('..' is not allowed)")
    long = next((p for p in parts if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX), None)
    if long is not None:
        raise MediaError(f"{what}: a path component is {len(long.encode('utf-8', 'surrogateescape'))} bytes, more "
                         f"than the {NAME_MAX} a file name can have")


NAME_MAX = 255  # bytes in one path component, on every filesystem we write to
