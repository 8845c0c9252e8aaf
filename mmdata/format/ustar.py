"""Reading tar members from their headers alone, by slicing them: `tarfile` costs more than the rest of decoding a
record, and a quarter of converting an img2dataset shard (whose every member has a pax header). USTAR headers, pax
extended headers and GNU long names are read here; any other header goes through `tarfile`. The one tar reader of
the project: for a record's members in our shards (`tar_members`) and for img2dataset's tars (`tar_spans`, which
leaves the contents where they are)."""

from __future__ import annotations

import io
import mmap
import tarfile
from collections.abc import Iterator

_ZERO = bytes(512)


_REGULAR, _PAX, _LONG_NAME = (b"0", b"\0"), b"x", b"L"


def tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files among `data`'s tar members (one record's, as `TarSink` writes them:
    plain USTAR headers; or a whole archive, its end-of-archive blocks included)."""
    for name, start, end in tar_spans(data):
        yield name, data[start:end]


def tar_spans(data: bytes | mmap.mmap, verify: bool = False) -> Iterator[tuple[str, int, int]]:
    """(name, start, end) of the content of each regular file among `data`'s tar members, read from the headers
    only, so that an mmap of a large archive is never read whole. A zero first byte where a header belongs ends the
    archive, as does a header cut short.

    `verify` (for archives others wrote): each header's checksum is checked, and the end-of-archive block must be
    all zeros; a header that fails raises ValueError naming its byte, after the members before it."""
    pos, end = 0, len(data)
    name: str | None = None  # from a pax header or a GNU long-name member: the next member's name
    size: int | None = None  # from a pax header: the next member's size
    while pos + 512 <= end:
        header = data[pos:pos + 512]
        if header[0] == 0:
            if verify and header != _ZERO:
                raise ValueError(f"bad member header at byte {pos}")
            return
        kind = header[156:157]
        if header[257:262] != b"ustar" or kind not in _KNOWN:
            yield from _through_tarfile(data, pos)
            return
        try:
            stored = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            if verify and int(header[148:156].rstrip(b"\0 ") or b"-1", 8) != sum(header[:148]) + 256 + sum(header[156:]):
                raise ValueError  # (256: the checksum field itself counts as eight spaces)
        except ValueError:
            raise ValueError(f"bad member header at byte {pos}") from None
        start = pos + 512
        if kind == _PAX:
            path, size = _pax(data[start:start + stored], pos)
            name = path or name
        elif kind == _LONG_NAME:
            name = data[start:start + stored].split(b"\0", 1)[0].decode()
        else:
            if size is not None:
                stored = size
            if name is None:  # prefix/name, as `tarfile` reads it
                name = header[:100].split(b"\0", 1)[0].decode()
                if header[345]:
                    name = header[345:500].split(b"\0", 1)[0].decode() + "/" + name
            yield name, start, start + stored
            name = size = None
        pos = start + -(-stored // 512) * 512


_KNOWN = frozenset((*_REGULAR, _PAX, _LONG_NAME))


def _pax(body: bytes, pos: int) -> tuple[str | None, int | None]:
    """The path and size a pax extended header gives the next member, if any. Its records are `<length>
    <key>=<value>\n`, the length counting the whole record."""
    path = size = None
    at = 0
    try:
        while at < len(body) and body[at] != 0:
            space = body.index(b" ", at)
            length = int(body[at:space])
            if length <= space - at:  # a record holds more than its length field: never loop in place
                raise ValueError
            key, _, value = body[space + 1:at + length - 1].partition(b"=")
            if key == b"path":
                path = value.decode("utf-8", "replace")
            elif key == b"size":
                size = int(value)
            at += length
    except ValueError:
        raise ValueError(f"bad pax header at byte {pos}") from None
    return path, size


def _through_tarfile(data: bytes | mmap.mmap, pos: int) -> Iterator[tuple[str, int, int]]:
    """`tar_spans` of the members from `pos` on, read by `tarfile` (headers this module does not slice)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data[pos:]), mode="r:") as tar:
            for member in tar:
                if member.isreg():
                    yield member.name, pos + member.offset_data, pos + member.offset_data + member.size
    except tarfile.TarError as e:
        raise ValueError(f"bad member header at or after byte {pos} ({e})") from None
