"""`mmdata.format.ustar`, the project's one tar reader: what `tar_spans` finds from the headers alone equals what
`tarfile` finds, for USTAR, pax (every member of an img2dataset tar has a pax header) and GNU archives, on bytes and
on a mapped file; with `verify`, a damaged header is an error naming its byte, after the members before it."""

from __future__ import annotations

import io
import mmap
import tarfile
from pathlib import Path

import pytest

from mmdata.format.ustar import tar_members, tar_spans


def _tar(members: list[tuple[str, int]], fmt: int, mtime: float = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i, (name, size) in enumerate(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = size, mtime
            tar.addfile(info, io.BytesIO(bytes([65 + i % 26]) * size))
    return buf.getvalue()


def _by_tarfile(data: bytes) -> list[tuple[str, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.offset_data, m.offset_data + m.size) for m in tar if m.isreg()]


NAMES = [("000001.jpg", 300), ("000001.txt", 0), ("d/000002.png", 512), ("é3.webp", 513), ("k" * 150 + ".jpg", 1024),
         ("p" * 120 + "/" + "q" * 90 + ".json", 7), ("line\nbreak.jpg", 3)]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_spans_equal_tarfile(fmt: int, tmp_path: Path) -> None:
    data = _tar(NAMES, fmt, mtime=1.5)  # a float mtime: webdataset's, which gives every member a pax header
    kinds = {data[pos + 156:pos + 157] for pos in range(0, len(data) - 512, 512)}
    assert (b"x" if fmt == tarfile.PAX_FORMAT else b"L") in kinds
    expected = _by_tarfile(data)
    assert [name for name, _, _ in expected] == [name for name, _ in NAMES]
    assert list(tar_spans(data)) == list(tar_spans(data, verify=True)) == expected
    (tmp_path / "a.tar").write_bytes(data)
    with open(tmp_path / "a.tar", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert list(tar_spans(mapped, verify=True)) == expected
    assert [(name, len(content)) for name, content in tar_members(data)] == NAMES


def test_ustar_names_join_the_prefix() -> None:
    members = [("p" * 120 + "/" + "q" * 90 + ".json", 7), ("a.jpg", 1)]
    data = _tar(members, tarfile.USTAR_FORMAT)
    assert list(tar_spans(data, verify=True)) == _by_tarfile(data) == [(members[0][0], 512, 519), ("a.jpg", 1536, 1537)]


def test_a_pax_size_wins_over_the_header_field() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.bin")
        info.size, info.pax_headers = 700, {"size": "700"}
        tar.addfile(info, io.BytesIO(b"z" * 700))
        info = tarfile.TarInfo("b.bin")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"y" * 5))
    data = bytearray(buf.getvalue())
    member = data.index(b"a.bin", 512)  # the member's own header, after its pax header
    data[member + 124:member + 136] = b"00000000000\0"  # its size field says 0: the pax record says 700
    checksum = sum(data[member:member + 148]) + 256 + sum(data[member + 156:member + 512])
    data[member + 148:member + 156] = b"%06o\0 " % checksum
    assert list(tar_spans(bytes(data), verify=True)) == [("a.bin", member + 512, member + 1212),
                                                         ("b.bin", member + 1536 + 512, member + 2048 + 5)]


def test_other_headers_go_through_tarfile() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("first.jpg"), io.BytesIO(b""))
        folder = tarfile.TarInfo("dir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        info = tarfile.TarInfo("dir/after.jpg")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"abcd"))
    data = buf.getvalue()
    assert data[512 + 156:512 + 157] == b"5"
    assert list(tar_spans(data)) == _by_tarfile(data) == [("first.jpg", 512, 512), ("dir/after.jpg", 1536, 1540)]


def test_a_damaged_header_names_its_byte_after_the_members_before_it() -> None:
    data = bytearray(_tar([("a.jpg", 10), ("b.jpg", 10), ("c.jpg", 10)], tarfile.USTAR_FORMAT))
    second = data.index(b"b.jpg")
    assert second == 1024
    data[second] = ord("B")  # the checksum no longer matches
    found = []
    with pytest.raises(ValueError, match=r"^bad member header at byte 1024$"):
        for span in tar_spans(bytes(data), verify=True):
            found.append(span)
    assert found == [("a.jpg", 512, 522)]
    assert [name for name, _, _ in tar_spans(bytes(data))] == ["a.jpg", "B.jpg", "c.jpg"]  # unverified: read as is


def test_a_size_that_is_not_octal_is_a_damaged_header_even_unverified() -> None:
    data = bytearray(_tar([("a.jpg", 10), ("b.jpg", 10)], tarfile.USTAR_FORMAT))
    data[1024 + 124:1024 + 136] = b"zzzzzzzzzzz\0"
    with pytest.raises(ValueError, match=r"^bad member header at byte 1024$"):
        list(tar_spans(bytes(data)))


def test_the_end_of_the_archive() -> None:
    data = _tar([("a.jpg", 10)], tarfile.USTAR_FORMAT)
    assert len(data) == 10240 and data[1024:] == bytes(9216)  # zero blocks after the member
    assert list(tar_spans(data, verify=True)) == [("a.jpg", 512, 522)]
    assert list(tar_spans(data[:1024 + 511])) == [("a.jpg", 512, 522)]  # a header cut short ends it too
    garbage = data[:1024] + b"\0" + b"x" * 511 + data[1536:]  # a zero first byte, not a zero block
    assert list(tar_spans(garbage)) == [("a.jpg", 512, 522)]
    with pytest.raises(ValueError, match=r"^bad member header at byte 1024$"):
        list(tar_spans(garbage, verify=True))


@pytest.mark.parametrize("record", [b"0 path=x\n", b"-5 path=x\n", b"3 path=x\n", b"12path=x\n", b"x path=y\n"])
def test_a_damaged_pax_header_is_an_error_not_a_loop(record: bytes) -> None:
    data = bytearray(_tar([("a.jpg", 10), ("b.jpg", 10)], tarfile.PAX_FORMAT, mtime=1.5))
    assert data[156:157] == b"x"
    body = record.ljust(512, b"\0")
    data[512:1024] = body
    with pytest.raises(ValueError, match=r"^bad pax header at byte 0$"):
        list(tar_spans(bytes(data)))
