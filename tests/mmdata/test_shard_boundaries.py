"""Pins the shard reading boundaries before a refactoring moves `mmdata.layout` and `mmdata.integrity`:

- tar members whose size is an exact multiple of the 512-byte block (padding `-(-size // 512) * 512`: none added),
  and members of 0 bytes, read back byte-exact by `tar_members` and through `mmdata.open` on a `wds` build;
- the offsets `TarSink` writes for such records, and the bytes `ShardReader` cuts at them;
- an offset index longer or shorter than the manifest's record count (or not a whole number of offsets):
  `ShardReader.offsets` raises `DamagedData` naming the file, and `integrity.check_file` reports it, word for word.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.core.errors import DamagedData
from mmdata.core.schema import Media, Record, Turn
from mmdata.format.integrity import check_file
from mmdata.format.manifests import Manifest
from mmdata.format.reader import ShardReader, decoder
from mmdata.format.shards import ShardEntry
from mmdata.format.sinks import TarSink
from mmdata.format.ustar import tar_members
from mmdata.read.dataset import Dataset
from mmdata.storage.local import LocalStorage
from mmdata.testing.images import png_bytes, random_image

BLOCK = 512


def png_of_size(size: int, seed: int) -> bytes:
    """A valid PNG of exactly `size` bytes: a small image, padded by a tEXt chunk before IEND."""
    base = png_bytes(random_image(6, 5, seed=seed))
    iend = base.rindex(b"IEND") - 4
    body = b"tEXt" + b"pad\0" + b"x" * (size - len(base) - 16)
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    data = base[:iend] + chunk + base[iend:]
    assert len(data) == size
    return data


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """A tar of `members` written as `TarSink` writes them (end-of-archive blocks included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _span(sizes: list[int]) -> int:
    """Bytes of members of `sizes`: a header block each, and the content padded to whole blocks."""
    return sum(BLOCK + -(-n // BLOCK) * BLOCK for n in sizes)


# ---------------------------------------------------------------- tar_members
MEMBERS = [
    ("000000_r.json", b"{" + b" " * 510 + b"}"),  # 512 bytes: one block, no padding
    ("000000_r.0.png", bytes(range(256)) * 4),  # 1024 bytes: two blocks, no padding
    ("000000_r.1.jpg", b"\xff"),  # 1 byte: padded to one block
    ("000000_r.2.png", b""),  # 0 bytes: a header and no content block
    ("000000_r.3.png", b"z" * 1536),  # 1536 bytes, last
]


def test_members_of_whole_blocks_are_read_back_exactly() -> None:
    data = _tar(MEMBERS)
    assert _span([len(b) for _, b in MEMBERS]) == 512 + 512 + 512 + 1024 + 512 + 512 + 512 + 512 + 1536
    record = data[:_span([len(b) for _, b in MEMBERS])]  # one record, as the reader cuts it in mid-shard
    assert list(tar_members(record)) == MEMBERS
    assert list(tar_members(data)) == MEMBERS  # the shard's last record: the end-of-archive blocks follow


def test_an_empty_member_at_the_end_of_a_record_is_read() -> None:
    members = [("000001_s.json", b"{}"), ("000001_s.0.bin", b"y" * 1024), ("000001_s.1.bin", b"")]
    record = _tar(members)[:_span([2, 1024, 0])]
    assert len(record) == 512 * 6 and record[-512:-1] != bytes(511)  # it ends with the empty member's header
    assert list(tar_members(record)) == members


def test_a_long_name_is_joined_from_the_ustar_prefix() -> None:
    name = "d" * 120 + "/000002_t.0.png"
    data = _tar([(name, b"p" * 1024), ("000002_t.json", b"{}")])
    assert data[345:345 + 120] == b"d" * 120  # stored in the prefix field
    assert list(tar_members(data)) == [(name, b"p" * 1024), ("000002_t.json", b"{}")]


def test_other_headers_go_through_tarfile() -> None:
    name = "x" * 150 + ".json"  # GNU: a long name is an extra 'L' member, which the slicing path does not read
    data = _tar([(name, b"q" * 1024), ("y.0.png", b"r" * 3)], fmt=tarfile.GNU_FORMAT)
    assert data[156:157] == b"L"
    assert list(tar_members(data)) == [(name, b"q" * 1024), ("y.0.png", b"r" * 3)]


# ---------------------------------------------------------------- TarSink + ShardReader
def _sink_record(i: int, media: list[str]) -> Record:
    turn = " ".join(["<image>"] * len(media)) or "q"
    return Record(f"s{i}", "t", "vqa", [Turn("human", turn), Turn("gpt", "a")], [Media(p) for p in media])


def test_tar_sink_offsets_and_reads_for_whole_block_members(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sink = TarSink(storage, 0)
    blob_1024, blob_512, blob_1 = png_of_size(1024, 1), b"m" * 512, b"o"
    records = [
        (b"L" * 1024, _sink_record(0, ["a.png", "b.png"]), [blob_1024, blob_1]),
        (b"M" * 3, _sink_record(1, []), []),
        (b"N" * 511, _sink_record(2, ["c.jpg"]), [blob_512]),
        (b"O" * 512, _sink_record(3, ["dir/e"]), [blob_1024]),  # no extension: "img"
    ]
    for line, record, blobs in records:
        sink.add(line, record, blobs)
    shard = sink.commit()
    offsets = np.frombuffer((tmp_path / "shards" / "000000.tar.idx").read_bytes(), dtype="<u8").tolist()
    spans = [_span([1024, 1024, 1]), _span([3]), _span([511, 512]), _span([512, 1024])]
    assert spans == [4096, 1024, 2048, 2560]
    assert offsets == [0, 4096, 5120, 7168]
    assert shard.bytes == 20480  # 9728 of members, 1024 of end-of-archive zeros, padded to 10240-byte records
    reader = ShardReader(storage, [ShardEntry("000000", 4, 4, 0, {"wds": shard})], "wds")
    cut = reader.read_rows([0, 1, 2, 3])
    assert [len(c) for c in cut] == [4096, 1024, 2048, 20480 - 7168]  # the last runs to the end of the file
    assert [list(tar_members(c)) for c in cut] == [
        [("000000_s0.json", b"L" * 1024), ("000000_s0.0.png", blob_1024), ("000000_s0.1.png", blob_1)],
        [("000001_s1.json", b"M" * 3)],
        [("000002_s2.json", b"N" * 511), ("000002_s2.0.jpg", blob_512)],
        [("000003_s3.json", b"O" * 512), ("000003_s3.0.img", blob_1024)],
    ]


# ---------------------------------------------------------------- a wds build, read through mmdata.open
IMAGES = {"exact.png": png_of_size(1024, 0), "blocks.png": png_of_size(1536, 1), "odd.png": png_of_size(700, 2)}
RECORDS = [["exact.png", "odd.png"], ["blocks.png", "exact.png", "odd.png"], ["odd.png"], [],
           ["exact.png", "exact.png"], ["odd.png", "blocks.png"], ["exact.png"]]


@pytest.fixture(scope="module")
def wds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wds")
    for name, data in IMAGES.items():
        (root / "img").mkdir(exist_ok=True)
        (root / "img" / name).write_bytes(data)
    src = root / "src.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", **({"image": images} if images else {}), "conversations": [
        {"from": "human", "value": "<image>" * len(images) + f"Question {i}?"}, {"from": "gpt", "value": "A."}]}) + "\n"
        for i, images in enumerate(RECORDS)))
    out = root / "out"
    manifest = build("cambrian", CambrianOptions(input=[src], media_root=root / "img"),
                     BuildSettings(out=out, format="wds", shard_size=3))
    assert manifest.counts["written"] == len(RECORDS)
    return out


def _expected(i: int) -> list[bytes]:
    return [IMAGES[name] for name in RECORDS[i]]


def test_whole_block_media_read_back_exactly_through_open(wds: Path) -> None:
    ds = mmdata.open(wds)
    assert isinstance(ds, Dataset) and ds.form == "wds" and len(ds) == len(RECORDS)
    assert sorted(len(b) for b in IMAGES.values()) == [700, 1024, 1536]
    for i in range(len(ds)):
        record = ds[i]
        assert record.id == f"r{i}@src:{i + 1}"  # the builder adds where it read the line
        assert [m.data for m in record.media] == _expected(i), i
        assert [ds.media_bytes(record, j) for j in range(len(record.media))] == _expected(i)
    assert [[m.data for m in r.media] for r in ds] == [_expected(i) for i in range(len(ds))]  # streamed shards
    batch = ds.get_many([6, 4, 1, 0, 1])
    assert [[m.data for m in r.media] for r, _ in batch] == [_expected(i) for i in (6, 4, 1, 0, 1)]
    assert ds.image(ds[4], 1).size == (6, 5)


def test_the_stored_members_are_whole_blocks(wds: Path) -> None:
    ds = mmdata.open(wds)
    assert isinstance(ds, Dataset)
    raw = ds.raw(1)  # blocks.png (1536), exact.png (1024), odd.png (700)
    names = [name for name, _ in tar_members(raw)]
    key = "000001_r1_src_2"
    assert names == [f"{key}.json", f"{key}.0.png", f"{key}.1.png", f"{key}.2.png"]
    json_size = len(next(content for name, content in tar_members(raw) if name.endswith(".json")))
    assert len(raw) == _span([json_size, 1536, 1024, 700])
    assert decoder("wds")(raw).media[1].data == IMAGES["exact.png"]


# ---------------------------------------------------------------- an index of the wrong length
N_RECORDS = 8


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idx")
    src = root / "src.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "conversations": [
        {"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": "A" * (i + 1)}]}) + "\n"
        for i in range(N_RECORDS)))
    build("cambrian", CambrianOptions(input=[src], media_root=None),
          BuildSettings(out=root / "out", format="both", shard_size=4))
    return root / "out"


INDEX_OF = {"jsonl": ("shards/{n}.idx", "shards/{n}.jsonl"), "wds": ("shards/{n}.tar.idx", "shards/{n}.tar")}


def _damage(d: Path, form: str, shard: int, change: str) -> tuple[str, str]:
    index, data = (p.format(n=f"{shard:06d}") for p in INDEX_OF[form])
    raw = (d / index).read_bytes()
    assert len(raw) == 8 * 4
    if change == "+8":  # one more offset (a plausible one: the file's size)
        raw += np.array([(d / data).stat().st_size], dtype="<u8").tobytes()
    elif change == "-8":
        raw = raw[:-8]
    else:  # "+4": not a whole number of offsets
        raw += bytes(4)
    (d / index).write_bytes(raw)
    return index, data


SHOWN = {"+8": "5", "-8": "3", "+4": "4.5"}


def test_an_intact_index_reads(both: Path) -> None:
    for form in ("jsonl", "wds"):
        ds = Dataset(both, form=form)  # type: ignore[arg-type]
        assert [r.id for r, _ in ds.get_many(list(range(N_RECORDS)))] == [f"r{i}@src:{i + 1}" for i in range(N_RECORDS)]
        entry = Manifest.load(both).shards[1]
        assert check_file(LocalStorage(both), entry.files[form], form, entry.count) == []


@pytest.mark.parametrize("form", ["jsonl", "wds"])
@pytest.mark.parametrize(("shard", "change"), [(1, "+8"), (1, "-8"), (1, "+4"), (0, "+8"), (0, "-8")])
def test_an_index_of_the_wrong_length_is_damaged_data(both: Path, tmp_path: Path, form: str, shard: int,
                                                      change: str) -> None:
    d = tmp_path / "copy"
    shutil.copytree(both, d)
    index, _ = _damage(d, form, shard, change)
    ds = Dataset(d, form=form)  # type: ignore[arg-type]
    row = 0 if shard == 1 else N_RECORDS - 1  # a row of the other, intact shard: the whole table is refused
    with pytest.raises(DamagedData) as e:
        ds[row]
    assert e.value.problem == (f"{d}/{index}: {SHOWN[change]} offsets for the 4 records the manifest lists (a damaged "
                               "index, or the dataset was replaced since it was opened)")
    assert str(e.value).endswith(f"; the dataset is damaged: `mmdata validate {d}` lists every problem, and a "
                                 "rebuild repairs it")
    reader = ShardReader(LocalStorage(d), Manifest.load(d).shards, form)  # type: ignore[arg-type]
    with pytest.raises(DamagedData, match=f"{index}: {SHOWN[change]} offsets for the 4 records the manifest lists"):
        _ = reader.offsets


@pytest.mark.parametrize("form", ["jsonl", "wds"])
@pytest.mark.parametrize("change", ["+8", "-8", "+4"])
def test_check_file_reports_an_index_of_the_wrong_length(both: Path, tmp_path: Path, form: str, change: str) -> None:
    d = tmp_path / "copy"
    shutil.copytree(both, d)
    index, data = _damage(d, form, 1, change)
    shards = Manifest.load(d).shards
    storage = LocalStorage(d)
    assert check_file(storage, shards[1].files[form], form, 4) == [
        f"{index}: {SHOWN[change]} offsets for the 4 records of {data} (a wrong, swapped or truncated index)"]
    assert check_file(storage, shards[0].files[form], form, 4) == []  # the other shard is intact
