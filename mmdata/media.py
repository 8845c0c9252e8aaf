"""Media checks at write time: every image is fully decoded once, so training never meets a broken file."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmdata.errors import InputError

# Decompression bombs are an input error, not a crash: Pillow raises DecompressionBombError above 2x this.
Image.MAX_IMAGE_PIXELS = 16384 * 16384

_EXT_BY_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class MediaError(InputError):
    """A media file is missing or does not decode; the writer turns it into a reject with this message."""


def decode_image(data: bytes, what: str) -> Image.Image:
    """`data` decoded completely (a loaded image); a `MediaError` starting with `what` says why not."""
    if not data:
        raise MediaError(f"{what}: empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()  # verify() only checks headers; a truncated JPEG fails only on a full decode
        return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"{what}: does not decode as an image ({type(e).__name__}: {e})") from None


def check_bytes(data: bytes, what: str) -> tuple[int, int, str]:
    """Decode `data` completely; return (width, height, file extension). Raise `MediaError` saying why not."""
    with decode_image(data, what) as im:
        return im.width, im.height, _EXT_BY_FORMAT.get(im.format or "", "img")


def check_file(path: Path) -> tuple[int, int, str]:
    """Like `check_bytes` for a file on disk; a missing file is a `MediaError` naming the path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MediaError(f"{path}: media file not found") from None
    except IsADirectoryError:
        raise MediaError(f"{path}: is a directory, not a media file") from None
    return check_bytes(data, str(path))


def read_media(root: Path | None, rel: str, what: str) -> tuple[bytes, str]:
    """The bytes of `rel` under the media root, and its on-disk spelling: when `rel` is not there as written, a
    letter-case mismatch is resolved (`resolve_case`). A `MediaError` starting with `what` says why not."""
    if root is None:
        raise MediaError(f"{what}: no media root given (pass --media-root)")
    if not (root / rel).is_file():
        found = resolve_case(root, rel)
        if found is None or not (root / found).is_file():
            raise MediaError(f"{what}: file not found under media root {root}")
        rel = found
    return (root / rel).read_bytes(), rel


def resolve_case(root: Path, rel: str) -> str | None:
    """Find `rel` under `root` ignoring letter case, component by component; the on-disk spelling, or None.

    Some Cambrian sub-sources name files in a different case than their JSON does.
    """
    current = root
    parts: list[str] = []
    for part in Path(rel).parts:
        exact = current / part
        if exact.exists():
            parts.append(part)
            current = exact
            continue
        try:
            matches = sorted(e for e in os.listdir(current) if e.lower() == part.lower())
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not matches:
            return None
        parts.append(matches[0])
        current = current / matches[0]
    return "/".join(parts)


def place(src: Path, dst: Path) -> None:
    """Put a copy of `src` at `dst`: a hard link when the filesystem allows (free), else a byte copy."""
    if dst.exists() and os.path.samefile(src, dst):
        return  # the same image referenced by several records
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)  # rename() between two links of one file is a no-op that leaves `tmp`


def write_bytes(data: bytes, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)
