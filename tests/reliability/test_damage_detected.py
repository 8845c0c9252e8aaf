"""Damage is always detected: `mmdata validate` reports every damaged dataset by file (and record where it can),
exits 1 and never shows a traceback; reading a damaged record names its file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.core.errors import DamagedData
from mmdata.read.dataset import Dataset
from mmdata.testing.images import write_image
from tests.reliability.conftest import turns, write_jsonl


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damage")
    for i in range(3):
        write_image(root / "img" / f"{i}.jpg", 32 + 8 * i, 24, seed=i)
    # Answers of different lengths: a swapped index then really points elsewhere.
    src = write_jsonl(root / "src.jsonl", [{"id": f"r{i}", "image": f"{i % 3}.jpg",
                                            "conversations": turns(answer=f"Answer number {i}." + "!" * i)}
                                           for i in range(8)])
    out = root / "out"
    build("cambrian", CambrianOptions(input=[src], media_root=root / "img"),
          BuildSettings(out=out, format="both", copy_media=True, shard_size=4))
    return out


def _validate(path: Path) -> tuple[int, str]:
    from mmdata.cli import app

    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_an_intact_dataset_validates(built: Path) -> None:
    code, output = _validate(built)
    assert code == 0 and "OK" in output, output


def _edit_answer(d: Path) -> None:  # same length: only the checksum can tell
    shard = d / "shards" / "000000.jsonl"
    shard.write_bytes(shard.read_bytes().replace(b"Answer number 1.", b"Answer NUMBER 1."))


def _replace_media(d: Path) -> None:
    write_image(d / "media" / "1.jpg", 50, 50, seed=7)


def _wrong_count(d: Path) -> None:
    m = orjson.loads((d / "dataset.json").read_bytes())
    m["counts"]["written"] += 1
    m["shards"][1]["count"] += 1
    (d / "dataset.json").write_bytes(orjson.dumps(m))


def _swap_idx(d: Path) -> None:
    a, b = d / "shards" / "000000.idx", d / "shards" / "000001.idx"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def _empty_idx(d: Path) -> None:
    (d / "shards" / "000001.idx").write_bytes(b"")


def _truncate(name: str) -> Callable[[Path], None]:
    def cut(d: Path) -> None:
        p = d / "shards" / name
        p.write_bytes(p.read_bytes()[: p.stat().st_size - 700])

    return cut


CASES: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("edited answer", _edit_answer, ["shards/000000.jsonl: sha256"]),
    ("replaced media", _replace_media, ["media[0] '1.jpg' is 50x50, record says 40x24"]),
    ("wrong count", _wrong_count, ["manifest counts do not reconcile", "shards/000001.idx: 4 offsets for the 5"]),
    ("swapped idx", _swap_idx, ["shards/000000.idx: record"]),
    ("empty idx", _empty_idx, ["shards/000001.idx: 0 offsets for the 4 records", "records were not read"]),
    ("truncated jsonl", _truncate("000001.jsonl"), ["shards/000001.jsonl: ", "bytes, the manifest says",
                                                    "shards/000001.jsonl: records "]),
    ("truncated tar", _truncate("000000.tar"), ["shards/000000.tar: ", "bytes, the manifest says"]),
]


@pytest.mark.parametrize("damage,expected", [(d, e) for _, d, e in CASES], ids=[c[0] for c in CASES])
def test_damage_is_reported_by_file_and_record(built: Path, tmp_path: Path, damage: Callable[[Path], None],
                                               expected: list[str]) -> None:
    d = tmp_path / "copy"
    shutil.copytree(built, d)
    damage(d)
    code, output = _validate(d)
    assert code == 1, output
    assert "FAILED" in output or "do not reconcile" in output
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output


def test_reading_a_damaged_tar_names_the_file_and_record(built: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(built, d)
    tar = d / "shards" / "000001.tar"
    data = bytearray(tar.read_bytes())
    data[0:100] = b"\xff" * 100  # the first record's first header: a checksum that no longer matches
    tar.write_bytes(bytes(data))
    ds = Dataset(d, form="wds")
    with pytest.raises(DamagedData, match=r"000001\.tar: record 0 \(dataset row 4\) cannot be read"):
        ds[4]
    with pytest.raises(DamagedData, match=r"000001\.tar: record 0"):
        list(ds)
    with pytest.raises(DamagedData, match=r"000001\.tar: record 0"):
        ds.get_many([0, 4])
    assert ds[3].id == mmdata.open(built)[3].id  # the other shards still read


def test_reading_with_an_index_of_the_wrong_length_is_a_clear_error(built: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(built, d)
    _empty_idx(d)
    with pytest.raises(DamagedData, match=r"shards/000001\.idx: 0 offsets for the 4 records the manifest lists"):
        mmdata.open(d)[0]
