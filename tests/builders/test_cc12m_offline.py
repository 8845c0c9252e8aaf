"""cc12m without a download: the TSV header img2dataset's recipe adds, and existing img2dataset folders as
img2dataset writes them (its own `Resizer`): letterbox detection and `cc12m:LINE` refs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import mmdata
from builders.cc12m import CC12MOptions, convert_tsv, header_lines, is_header
from mmdata.build.driver import BuildSettings, build
from mmdata.testing.cc12m import write_img2dataset_folder

SIZES = [(160, 90), (90, 160), None, (100, 100), (120, 80)]  # None: a dead link


def test_header_line_is_skipped_not_rejected(tmp_path: Path) -> None:
    assert is_header(b"url\tcaption") and is_header(b"\xef\xbb\xbfCAPTION\tURL") and not is_header(b"http://a\turl")
    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text("url\tcaption\nhttp://a/1.jpg\tone\nhttp://a/2.jpg\ttwo\nhttp://a/3.jpg\tthree\n")
    assert header_lines(tsv) == 1
    assert convert_tsv(tsv, tmp_path / "rows.parquet", "url-caption", limit=2) == 2
    rows = pq.read_table(tmp_path / "rows.parquet").to_pydict()
    assert rows["line"] == [2, 3] and rows["caption"] == ["one", "two"] and rows["issue"] == [None, None]
    tsv.write_text("http://a/1.jpg\tone\n")
    assert header_lines(tsv) == 0


@pytest.mark.parametrize("config", [False, True], ids=["sniffed", "stats-config"])
def test_letterboxed_download_is_refused_with_the_fix(tmp_path: Path, config: bool) -> None:
    folder = tmp_path / "i2d"
    write_img2dataset_folder(folder, SIZES, resize_mode="border", config=config)
    with pytest.raises(ValueError, match=r"resize_mode=border .*--resize_mode keep_ratio.*--allow-letterbox"):
        build("cc12m", CC12MOptions(from_img2dataset=folder), BuildSettings(out=tmp_path / "out"))
    manifest = build("cc12m", CC12MOptions(from_img2dataset=folder, allow_letterbox=True),
                     BuildSettings(out=tmp_path / "out"))
    assert manifest.counts == {"read": 5, "written": 4, "rejected": 1}
    with pytest.raises(ValueError, match="--allow-letterbox"):
        CC12MOptions(input=tmp_path / "x.tsv", resize_mode="border")


@pytest.mark.parametrize("mode", ["keep_ratio", "center_crop"])
def test_other_resize_modes_pass_and_refs_name_the_tsv_line(tmp_path: Path, mode: str) -> None:
    folder = tmp_path / "i2d"
    captions = write_img2dataset_folder(folder, SIZES, resize_mode=mode, per_shard=2)
    manifest = build("cc12m", CC12MOptions(from_img2dataset=folder), BuildSettings(out=tmp_path / "out"))
    assert manifest.counts == {"read": 5, "written": 4, "rejected": 1}
    # img2dataset's TSV input starts with its header line: data row n (from 0) is line n + 2.
    ds = mmdata.open(tmp_path / "out")
    assert {r.meta["caption"]: r.meta["ref"] for r in ds} == {
        c: f"cc12m:{n + 2}" for n, c in enumerate(captions) if SIZES[n] is not None}
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["ref"] == "cc12m:4" and "404" in reject["reason"]
