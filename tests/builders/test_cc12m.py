"""cc12m: one real img2dataset run against a loopback server, shared by the module (img2dataset alone takes
10-30 s to start on 2 cores)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

import mmdata
from builders.cc12m import (
    ANSWERS,
    PROMPTS,
    CC12MOptions,
    DownloadError,
    convert,
    convert_tsv,
    parse_line,
    units,
)
from mmdata.build.driver import BuildSettings, build
from mmdata.testing.cc12m import World, world

pytestmark = pytest.mark.slow
SHARD = 60


@dataclass
class Built:
    world: World
    tmp: Path
    options: CC12MOptions
    out: Path


def _options(w: World, **kw: object) -> CC12MOptions:
    return CC12MOptions(input=w.tsv, image_size=64, processes=1, threads=16, timeout=w.timeout,
                        caption_ratio=0.25, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("cc12m")
    # With the `url<TAB>caption` header img2dataset's recipe adds: skipped, so rows start at line 2.
    with world(tmp, n_ok=200, n_missing=20, n_not_image=5, n_truncated=3, n_slow=2, header=True) as w:
        options = _options(w)
        build("cc12m", options, BuildSettings(out=tmp / "out", shard_size=SHARD))
        yield Built(w, tmp, options, tmp / "out")


def _rejects(out: Path) -> dict[int, str]:
    lines = (out / "rejects.jsonl").read_text().splitlines()
    return {int(r["ref"].rsplit(":", 1)[1]): r["reason"] for r in map(json.loads, lines)}


def test_every_tsv_row_is_accounted_for(built: Built) -> None:
    counts = json.loads((built.out / "dataset.json").read_text())["counts"]
    assert counts["read"] == len(built.world.rows) == counts["written"] + counts["rejected"]
    assert counts["written"] == built.world.count("ok") == 200
    assert sorted(_rejects(built.out)) == [r.line for r in built.world.rows if r.expect != "ok"]
    assert built.world.rows[0].line == 2 and built.world.tsv.read_text().startswith("url\tcaption\n")


def test_rejects_carry_img2datasets_reason(built: Built) -> None:
    expected = {"missing": "failed_to_download: HTTP Error 404: Not Found",
                "not_image": "failed_to_resize: Image decoding error",
                "truncated": "failed_to_resize: Image decoding error",
                "slow": "failed_to_download: timed out"}
    rejects = _rejects(built.out)
    for row in built.world.rows:
        if row.expect in expected:
            assert rejects[row.line] == expected[row.expect], row
    bad = [rejects[r.line] for r in built.world.rows if r.expect == "bad_row"]
    assert bad[0].startswith("no tab")
    assert bad[1] == "URL 'file:///etc/hostname' is not http(s)"
    assert bad[2].startswith("empty caption")


def test_conversations_and_images(built: Built) -> None:
    ds = mmdata.open(built.out)
    by_line = {r.line: r for r in built.world.rows}
    tasks = {"t2i": 0, "caption": 0}
    prompts: set[str] = set()
    for i in range(len(ds)):
        rec = ds[i]
        row = by_line[int(rec.id.rsplit("-", 1)[1])]
        caption = " ".join(row.caption.replace("&amp;", "&").split())
        assert rec.meta["caption"] == caption and rec.meta["url"] == row.url
        tasks[rec.task] += 1
        if rec.task == "t2i":
            human, gpt = rec.conversations[0].value, rec.conversations[1].value
            assert caption in human and "<image>" not in human
            assert gpt in ANSWERS and len(rec.targets()) == 1  # the image is a generation target
            prompts.add(next(p for p in PROMPTS if human == p.format(c=caption)))
        else:
            assert rec.conversations[1].value == caption and len(rec.inputs()) == 1
        with Image.open(ds.media_path(rec, 0)) as im:
            im.load()
            assert min(im.size) == 64 and im.size == (rec.media[0].width, rec.media[0].height)  # keep_ratio
    assert tasks["caption"] > 20 and tasks["t2i"] > 100  # --caption-ratio 0.25
    assert len(prompts) >= 6
    captions = [ds[i].meta["caption"] for i in range(len(ds))]
    assert any("<PERSON>" in c for c in captions) and any("日本語" in c for c in captions)
    assert any('"' in c for c in captions) and any(len(c.split()) == 256 for c in captions)


def test_person_token_reuses_the_download(built: Built) -> None:
    hits = built.world.server.hits
    out = built.tmp / "person"
    options = _options(built.world, person_token="a person")
    build("cc12m", options, BuildSettings(out=out, shard_size=SHARD))
    assert built.world.server.hits == hits  # every img2dataset shard was already complete: nothing fetched
    ds = mmdata.open(out)
    texts = [t.value for i in range(len(ds)) for t in ds[i].conversations]
    assert not any("<PERSON>" in t for t in texts) and any("a person" in t for t in texts)
    # The source caption stays verbatim.
    assert any("<PERSON>" in ds[i].meta["caption"] for i in range(len(ds)))


def test_phrasing_is_seeded_per_sample() -> None:
    row = {"caption": "a dog &amp; a cat", "url": "http://x/y.jpg", "key": "000001"}
    opts = [CC12MOptions(input=Path("x.tsv"), seed=s) for s in (0, 0, 1, 2, 3)]
    recs = [convert(o, row, b"", "jpg", "cc12m", 7, "00000", "cc12m:7") for o in opts]
    assert recs[0] == recs[1]
    assert len({r.conversations[0].value for r in recs}) > 1  # type: ignore[union-attr]
    meta = recs[0].meta  # type: ignore[union-attr]
    assert meta["caption"] == "a dog & a cat" and meta["caption_raw"] == row["caption"]


def test_tsv_split_on_the_tab_next_to_the_url(tmp_path: Path) -> None:
    assert parse_line(b'http://a/b.jpg\tsaid "hi"\tthere', "url-caption") == (
        "http://a/b.jpg", 'said "hi"\tthere', None)
    assert parse_line(b"a\tcaption\thttp://a/b.jpg", "caption-url") == ("http://a/b.jpg", "a\tcaption", None)
    assert parse_line("\ufeffhttp://a/b.jpg\tx".encode(), "url-caption", first=True)[2] is None
    assert "not valid UTF-8" in str(parse_line(b"http://a\t\xff", "url-caption")[2])
    assert "--columns" in str(parse_line(b"a caption\thttp://a/b.jpg", "url-caption")[2])
    assert "placeholder" in str(parse_line(b"http://a/b.jpg\tan <image> here", "url-caption")[2])
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("one\thttp://a/1.jpg\ntwo\thttp://a/2.jpg\nthree\thttp://a/3.jpg\n")
    assert convert_tsv(tsv, tmp_path / "rows.parquet", "caption-url", limit=2) == 2
    assert pq.read_table(tmp_path / "rows.parquet").to_pydict()["caption"] == ["one", "two"]


def test_bad_invocations_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of --input"):
        units(CC12MOptions(), 10, None)
    with pytest.raises(FileNotFoundError, match="--input"):
        units(CC12MOptions(input=tmp_path / "nope.tsv"), 10, None)
    with pytest.raises(ValueError, match="--caption-ratio"):
        CC12MOptions(caption_ratio=1.5)
    with pytest.raises(ValueError, match="--person-token"):
        CC12MOptions(person_token="<image>")
    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text("http://127.0.0.1:9/a.jpg\ta\n")
    (tmp_path / "cc12m_img2dataset").mkdir()
    (tmp_path / "cc12m_img2dataset" / "download.json").write_text("{}")
    with pytest.raises(ValueError, match="other settings"):
        units(CC12MOptions(input=tsv), 10, None)
    partial = tmp_path / "i2d"
    partial.mkdir()
    (partial / "00000.parquet").write_bytes(b"")
    with pytest.raises(DownloadError, match="00000 have no _stats.json"):
        units(CC12MOptions(from_img2dataset=partial), 10, None)


def test_planning_writes_nothing_and_starts_nothing(tmp_path: Path) -> None:
    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text("".join(f"http://127.0.0.1:9/{i}.jpg\tcaption {i}\n" for i in range(25)))
    before = sorted(tmp_path.rglob("*"))
    plan = units(CC12MOptions(input=tsv), 10, None)
    assert [(u.first, u.count, u.pid) for u in plan] == [(1, 10, 0), (11, 10, 0), (21, 5, 0)]
    assert sorted(tmp_path.rglob("*")) == before  # no download folder, no rows.parquet, no img2dataset
    assert [u.count for u in units(CC12MOptions(input=tsv), 10, 12)] == [10, 2]


def test_img2dataset_imports_during_the_split_and_downloads_nothing_if_it_fails(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import builders.cc12m as cc12m

    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text("".join(f"http://127.0.0.1:9/{i}.jpg\tcaption {i}\n" for i in range(25)))
    options = CC12MOptions(input=tsv, processes=1, threads=2)
    dl = options.download_dir.resolve()  # type: ignore[union-attr]
    alive_during_split = []

    def failing_split(*args: object, **kwargs: object) -> int:
        alive_during_split.append(dl in cc12m.download.RUNNING and cc12m.download.RUNNING[dl].poll() is None)
        raise OSError("disk full while splitting the TSV")

    monkeypatch.setattr(cc12m, "convert_tsv", failing_split)
    with pytest.raises(OSError, match="disk full"):
        build("cc12m", options, BuildSettings(out=tmp_path / "out", shard_size=10))
    assert alive_during_split == [True]  # img2dataset was already starting up
    proc = cc12m.download.RUNNING[dl]
    assert proc.wait(timeout=120) != 0  # it ends by itself, told by its closed stdin
    log = (options.download_dir / "img2dataset.log").read_text()  # type: ignore[operator]
    assert "img2dataset not started" in log and "distributor" not in log
    assert not list(options.download_dir.rglob("*.tar"))  # type: ignore[union-attr]


def test_cli_from_existing_img2dataset_folder(built: Built) -> None:
    cli = pytest.importorskip("mmdata.cli")
    from typer.testing import CliRunner

    out = built.tmp / "cli"
    shards = built.options.download_dir / "shards"  # type: ignore[operator]
    result = CliRunner().invoke(cli.app, ["build", "cc12m", "--from-img2dataset", str(shards),
                                          "--out", str(out), "--quiet", "--limit", "100"])
    assert result.exit_code == 0, result.output
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert counts["read"] == 100
    assert counts["written"] == sum(r.expect == "ok" for r in built.world.rows[:100])
    ds = mmdata.open(out)
    assert ds[0].task in ("t2i", "caption")
    by_url = {r.url: r.line for r in built.world.rows}
    assert all(r.meta["ref"] == f"cc12m:{by_url[r.meta['url']]}" for r in ds)  # the documented cc12m:LINE


def test_resume_downloads_only_unfinished_shards(built: Built) -> None:
    shards = built.options.download_dir / "shards"  # type: ignore[operator]
    for suffix in ("_stats.json", ".tar", ".parquet"):  # as if img2dataset had been killed inside shard 1
        (shards / f"00001{suffix}").unlink()
    (built.out / "shards" / "000001.done.json").unlink()
    (built.out / "dataset.json").unlink()
    before = {p.name: p.read_bytes() for p in (built.out / "shards").glob("*.jsonl")}
    table = pq.read_table(built.options.download_dir / "rows.parquet")  # type: ignore[operator]
    rows = table.to_pylist()[SHARD: 2 * SHARD]
    hits = built.world.server.hits
    build("cc12m", built.options, BuildSettings(out=built.out, shard_size=SHARD))
    assert built.world.server.hits - hits == sum(bool(r["url"]) for r in rows)  # shard 1's URLs, nothing else
    assert {p.name: p.read_bytes() for p in (built.out / "shards").glob("*.jsonl")} == before


def test_a_download_that_died_stops_the_shard_with_the_fix(tmp_path: Path) -> None:
    from builders.cc12m import Unit, ready

    (tmp_path / "shards").mkdir()
    unit = Unit(str(tmp_path / "shards" / "00000"), "cc12m", 1, 10, pid=os.getpid())
    options = CC12MOptions(input=tmp_path / "cc12m.tsv")
    assert not ready(options, unit)  # still downloading
    # img2dataset ended without writing shard 00000
    (tmp_path / f"img2dataset.{os.getpid()}.exit").write_text("failed")
    with pytest.raises(DownloadError, match="rerun the same command"):
        ready(options, unit)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_index_matches_tarfile(fmt: int) -> None:
    from builders.cc12m import tar_index

    names = ["000001.jpg", "000001.txt", "000001.json", "d/000002.png", "é3.webp"]
    if fmt != tarfile.USTAR_FORMAT:
        names.append("k" * 150 + ".jpg")  # a long name: pax path record or GNU long-name member
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i, name in enumerate(names):
            info = tarfile.TarInfo(name)
            info.size = 300 + 400 * i
            tf.addfile(info, io.BytesIO(b"x" * info.size))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        expected = {m.name.rpartition("/")[2].split(".")[0]: (m.offset_data, m.size, m.name.rsplit(".")[-1])
                    for m in tf if m.name.endswith((".jpg", ".png", ".webp"))}
    buf.seek(0)
    assert tar_index(buf, "x.tar") == (expected, None) and len(expected) == len(names) - 2


def test_img2dataset_stats_are_kept_in_the_output(built: Built) -> None:
    manifest = json.loads((built.out / "dataset.json").read_text())
    stats = sorted((built.out / "img2dataset").glob("*_stats.json"))
    assert len(stats) == len(manifest["shards"])
    total = sum(json.loads(p.read_text())["count"] for p in stats)
    assert total == manifest["counts"]["read"]
