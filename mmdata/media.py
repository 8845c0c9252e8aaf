"""Media checks at write time: every image is decoded to its end once, so training never meets a broken file."""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdata.errors import InputError
from mmdata.outdir import NAME_MAX, temp_path

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


def read_media(root: Path | str | None, rel: str, what: str,
               storage_options: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """The bytes of `rel` under the media root, and its on-disk spelling: when `rel` is not there as written, a
    letter-case mismatch is resolved (`resolve_case`). The path must stay inside the root (`inside`), checked
    before anything is opened. A `MediaError` starting with `what` says why not.

    A URL root (`s3://bucket/prefix`) is read through its storage, one GET per file, after the same checks on the
    name (no request is made for a refused name); letter case is resolved on a miss only, by listing."""
    if root is None:
        raise MediaError(f"{what}: no media root given (pass --media-root)")
    if isinstance(root, str) and "://" in root:
        return _read_remote(root, rel, what, storage_options)
    try:
        path = inside(root, rel, what)
        if not path.is_file():
            found = resolve_case(root, rel)
            if found is None or not inside(root, found, what).is_file():
                raise MediaError(f"{what}: file not found under media root {root}")
            rel, path = found, inside(root, found, what)
        return path.read_bytes(), rel
    except OSError as e:
        raise MediaError(f"{what}: cannot be read ({e.strerror or e})") from None


def inside(root: Path, rel: str, what: str) -> Path:
    """`root / rel` with symlinks followed, if it stays inside `root`; else a `MediaError` starting with `what`
    (which names the path) says why. Nothing is opened: an absolute path, `..`, a NUL byte, a component too long
    for any filesystem, or a symlink leaving the root is refused from the name alone."""
    check_name(rel, what)
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, rel))
    if real != base and not real.startswith(base.rstrip("/") + "/"):
        raise MediaError(f"{what}: resolves to {real} (through a symlink), outside the media root {base}")
    return Path(real)


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


_REMOTE: dict[str, Any] = {}  # one storage (one connection pool) per URL media root, per process


def _read_remote(root: str, rel: str, what: str, storage_options: dict[str, Any] | None) -> tuple[bytes, str]:
    """`read_media` under a URL: one GET; on a miss only, one listing per path component to resolve letter case."""
    from mmdata.errors import NotFound
    from mmdata.storage import open_storage

    check_name(rel, what)  # before any request
    if root not in _REMOTE:  # the storage itself reconnects in a forked process
        _REMOTE[root] = open_storage(root, storage_options)
    store = _REMOTE[root]
    try:
        return bytes(store.read_bytes(rel)), rel
    except NotFound:
        pass
    folder = ""
    for part in PurePosixPath(rel).parts:
        names = [n.rsplit("/", 1)[-1] for n in store.list(folder, "")]
        matches = [n for n in names if n == part] or sorted(n for n in names if n.lower() == part.lower())
        if not matches:
            raise MediaError(f"{what}: file not found under media root {root}")
        folder = f"{folder}/{matches[0]}" if folder else matches[0]
    try:
        return bytes(store.read_bytes(folder)), folder
    except NotFound:  # a "folder" of that name, not an object
        raise MediaError(f"{what}: file not found under media root {root}") from None


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
    tmp = temp_path(dst)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)  # rename() between two links of one file is a no-op that leaves `tmp`


def write_bytes(data: bytes, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)  # left only when writing failed (a full disk)
