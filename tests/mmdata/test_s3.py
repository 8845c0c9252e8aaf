"""Datasets on object storage, against a real S3 server on the loopback (moto's server mode; no client mocks).

Every S3 result is compared with the same work done on local disk: same bytes, same records, same mixture index.
Requests are counted at the server (its request log), so "one ranged GET per record" is measured, not assumed.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.cli import app
from mmdata.core.errors import DatasetChanged, NotFound, StorageError
from mmdata.mix.planner import mix
from mmdata.read.dataset import MediaUnreachable
from mmdata.testing.llava import World
from mmdata.testing.s3 import FAKE_SECRET, S3Server

pytest.importorskip("s3fs")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        server.bucket("mmdata-test")
        yield server


def _options(world: World) -> CambrianOptions:
    return CambrianOptions(input=[world.jsonl], media_root=world.media_root)


def _objects(url: str) -> dict[str, bytes]:
    """Every object under `url` by relative name (fresh client: nothing cached)."""
    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, use_listings_cache=False)
    return _same_node({p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)})


def _files(root: Path) -> dict[str, bytes]:
    return _same_node({p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})


def _same_node(files: dict[str, bytes]) -> dict[str, bytes]:
    """`.done.json` names the process that wrote the shard: the one thing two identical builds differ in."""
    return {k: orjson.dumps({**orjson.loads(v), "node": None}) if k.endswith(".done.json") else v
            for k, v in files.items()}


@pytest.fixture(scope="module")
def built(s3: S3Server, llava_world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The LLaVA world built as JSONL with copied media and as webdataset tars, to S3 and to local disk."""
    local = tmp_path_factory.mktemp("local")
    out: dict[str, object] = {}
    for name, fmt in (("jsonl", "jsonl"), ("wds", "wds")):
        settings = dict(format=fmt, copy_media=fmt == "jsonl", shard_size=7)
        build("cambrian", _options(llava_world), BuildSettings(out=local / name, **settings))  # type: ignore[arg-type]
        build("cambrian", _options(llava_world), BuildSettings(out=f"s3://mmdata-test/ds/{name}", **settings))  # type: ignore[arg-type]
        out[name] = (local / name, f"s3://mmdata-test/ds/{name}")
    return out


@pytest.mark.parametrize("form", ["jsonl", "wds"])
def test_s3_build_is_byte_identical_to_a_local_build(built: dict[str, tuple[Path, str]], form: str) -> None:
    local, url = built[form]
    assert _objects(url) == _files(local)


@pytest.mark.parametrize("form", ["jsonl", "wds"])
def test_open_read_iterate_and_images_from_s3(s3: S3Server, built: dict[str, tuple[Path, str]], form: str) -> None:
    local, url = built[form]
    here, there = mmdata.open(local), mmdata.open(url)
    assert isinstance(there, mmdata.Dataset) and len(there) == len(here) > 20
    there.shards.offsets  # noqa: B018 - the indexes, fetched once
    before = s3.count("GET")
    for i in range(len(there)):
        assert there.raw(i) == here.raw(i)
    assert s3.count("GET", 0) - before == len(there)  # one ranged GET per record
    assert all(r for m, p, r in s3.requests[-len(there):] if m == "GET")  # each a Range request

    before = len(s3.requests)
    assert list(there) == list(here)
    shards = len(there.shards.names)
    assert s3.count("GET", before) == shards  # sequential: one streamed GET per (small) shard
    assert there.to_pandas().equals(here.to_pandas())

    images = [(r, j) for r in here for j in range(len(r.media))]
    assert images
    for r, j in images[:6]:
        got = there.image(there[[x.id for x in here].index(r.id)], j)
        assert np.array_equal(np.asarray(got), np.asarray(here.image(r, j)))


def test_loader_batch_is_one_round_of_concurrent_ranged_gets(s3: S3Server, built: dict[str, tuple[Path, str]]) -> None:
    local, url = built["jsonl"]
    there, here = mmdata.open(url), mmdata.open(local)
    there.shards.offsets  # noqa: B018
    rows = [9, 2, 20, 2, 17, 0]
    before = s3.count("GET")
    assert [r.id for r, _ in there.get_many(rows)] == [r.id for r, _ in here.get_many(rows)]
    assert s3.count("GET", 0) - before == len(rows)


def test_block_cache_serves_a_second_epoch_from_disk(s3: S3Server, built: dict[str, tuple[Path, str]],
                                                      tmp_path: Path) -> None:
    local, url = built["wds"]
    here = mmdata.open(local)
    first = mmdata.open(url, cache_dir=tmp_path)
    first.shards.offsets  # noqa: B018
    assert [first.raw(i) for i in range(len(first))] == [here.raw(i) for i in range(len(here))]
    again = mmdata.open(url, cache_dir=tmp_path)
    again.shards.offsets  # noqa: B018
    before = s3.count("GET")
    assert [again.raw(i) for i in range(len(again))] == [here.raw(i) for i in range(len(here))]
    assert s3.count("GET", 0) == before  # every block from the cache


def test_validate_inspect_report_on_a_url(built: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    runner = CliRunner()
    for form in ("jsonl", "wds"):
        url = built[form][1]
        result = runner.invoke(app, ["validate", url])
        assert result.exit_code == 0 and ": OK" in result.output, result.output
    assert runner.invoke(app, ["inspect", built["jsonl"][1], "-n", "1"]).exit_code == 0
    result = runner.invoke(app, ["report", built["jsonl"][1], "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 1000


def test_mix_two_s3_datasets_into_an_s3_mixture(built: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    def recipe(a: object, b: object, name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f'name: m\nseed: 3\nsize: 50\nsources:\n  - {{path: "{a}", name: a, weight: 2}}\n'
                        f'  - {{path: "{b}", name: b, weight: 1}}\n')
        return path

    (la, ua), (lb, ub) = built["jsonl"], built["wds"]
    mix(recipe(la, lb, "local"), tmp_path / "mixture")
    mix(recipe(ua, ub, "remote"), "s3://mmdata-test/mixtures/m")
    here, there = mmdata.open(tmp_path / "mixture"), mmdata.open("s3://mmdata-test/mixtures/m")
    assert isinstance(there, mmdata.Mixture)
    assert _objects("s3://mmdata-test/mixtures/m")["index.npy"] == (tmp_path / "mixture" / "index.npy").read_bytes()
    assert there.manifest.sources[0].path == "../../ds/jsonl"  # relative within the bucket
    assert [there.raw(i) for i in range(len(there))] == [here.raw(i) for i in range(len(here))]
    assert list(there) == list(here)


def test_jsonl_media_left_on_the_build_machine_fail_with_one_message(
        s3: S3Server, llava_world: World, tmp_path: Path) -> None:
    import shutil

    media = tmp_path / "images"
    shutil.copytree(llava_world.media_root, media)
    url = "s3://mmdata-test/in-place"
    build("cambrian", CambrianOptions(input=[llava_world.jsonl], media_root=media), BuildSettings(out=url))
    ds = mmdata.open(url)
    record = next(r for r in ds if r.media)
    ds.image(record, 0)  # reachable here: it works
    shutil.rmtree(media)  # another machine
    with pytest.raises(MediaUnreachable, match="--copy-media.*--format wds"):
        mmdata.open(url).image(record, 0)
    result = CliRunner().invoke(app, ["validate", url])
    assert result.exit_code == 1 and "--copy-media" in result.output and "Traceback" not in result.output


def test_missing_bucket_object_and_bad_credentials_each_give_one_clear_line(s3: S3Server) -> None:
    with pytest.raises(NotFound, match=r"^s3://no-such-bucket-x/ds: the bucket does not exist; create it or fix the URL$"):
        mmdata.open("s3://no-such-bucket-x/ds")
    with pytest.raises(NotFound, match=r"s3://mmdata-test/nothing: not an mmdata dataset"):
        mmdata.open("s3://mmdata-test/nothing")
    ds = mmdata.open("s3://mmdata-test/ds/jsonl")
    fs, shard = fsspec.filesystem("s3", skip_instance_cache=True), "mmdata-test/ds/jsonl/shards/000001.jsonl"
    kept = fs.cat_file(shard)
    fs.rm_file(shard)
    try:
        with pytest.raises(NotFound, match=r"s3://mmdata-test/ds/jsonl/shards/000001.jsonl: not found"):
            ds[8]
    finally:
        fs.pipe_file(shard, kept)

    runner = CliRunner()
    secret_options = '{"key": "AKIAFAKE", "secret": "' + FAKE_SECRET + '-cli"}'
    s3.require_auth(True)
    try:
        with pytest.raises(StorageError) as e:
            mmdata.open("s3://mmdata-test/ds/wds", storage_options={"key": "AKIAFAKE", "secret": FAKE_SECRET + "x"})
        result = runner.invoke(app, ["inspect", "s3://mmdata-test/ds/wds", "--storage-options", secret_options])
    finally:
        s3.require_auth(False)
    message = str(e.value)
    assert "s3://mmdata-test/ds/wds" in message and "credentials" in message and "\n" not in message
    assert result.exit_code == 1 and "credentials" in result.output
    for text in (message, result.output):
        assert FAKE_SECRET not in text


def _build_cmd(world: World, out: str) -> list[str]:
    return [sys.executable, "-m", "mmdata.cli", "build", "cambrian", "--input", str(world.jsonl), "--media-root",
            str(world.media_root), "--out", out, "--format", "both", "--copy-media", "--shard-size", "5", "-q",
            "--storage-options", '{"key": "mmdata-test-key", "secret": "' + FAKE_SECRET + '"}']


@pytest.mark.slow
def test_build_killed_during_an_upload_resumes_to_the_uninterrupted_result(
        s3: S3Server, llava_world: World) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    reference = "s3://mmdata-test/kill/reference"
    done = subprocess.run(_build_cmd(llava_world, reference), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert FAKE_SECRET not in done.stdout + done.stderr

    url = "s3://mmdata-test/kill/killed"
    s3.hold_uploads(r"/kill/killed/shards/000002\.tar$")  # the third shard's tar: two shards are done by then
    proc = subprocess.Popen(_build_cmd(llava_world, url), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert s3.held.wait(120), "the upload never started"
        os.kill(proc.pid, signal.SIGKILL)  # mid-upload: the object's PUT is in flight
        proc.wait(60)
    finally:
        s3.open_gate()
        if proc.poll() is None:
            proc.kill()
    partial = _objects(url)
    assert "dataset.json" not in partial and "shards/000002.tar" not in partial
    assert "shards/000000.done.json" in partial and "shards/000002.done.json" not in partial
    for name in partial:  # a shard counted done has every file whole
        if name.endswith(".done.json"):
            stem = name.removesuffix(".done.json")
            for suffix in (".jsonl", ".idx", ".tar", ".tar.idx"):
                assert partial[stem + suffix] == _objects(reference)[stem + suffix]

    rerun = subprocess.run(_build_cmd(llava_world, url), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _objects(url) == _objects(reference)
    assert FAKE_SECRET.encode() not in b"".join(_objects(url).values())


# ---------------------------------------------------------------- --input and --media-root as URLs
def _upload_world(world: World, prefix: str) -> tuple[str, str]:
    """The world's JSONL and images under `s3://mmdata-test/<prefix>`: (input URL, media root URL)."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    for p in sorted(world.media_root.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"mmdata-test/{prefix}/images/{p.relative_to(world.media_root).as_posix()}", p.read_bytes())
    fs.pipe_file(f"mmdata-test/{prefix}/{world.jsonl.name}", world.jsonl.read_bytes())
    return f"s3://mmdata-test/{prefix}/{world.jsonl.name}", f"s3://mmdata-test/{prefix}/images"


def _shard_files(root: Path) -> dict[str, bytes]:
    """Shards, indexes, media and rejects (not `.done.json`: it fingerprints the input by its local path)."""
    return {k: v for k, v in _files(root).items()
            if (k.startswith(("shards/", "media/")) and not k.endswith(".done.json")) or k == "rejects.jsonl"}


@pytest.mark.parametrize("copy_media", [False, True])
def test_build_from_an_s3_input_and_media_root_equals_the_local_build(
        s3: S3Server, llava_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_media: bool) -> None:
    monkeypatch.delenv("MMDATA_CACHE", raising=False)
    url, media = _upload_world(llava_world, f"src-{copy_media}")
    settings = dict(format="both", copy_media=copy_media, shard_size=5)
    local = build("cambrian", _options(llava_world), BuildSettings(out=tmp_path / "local", **settings))  # type: ignore[arg-type]
    remote_options = CambrianOptions(input=[url], media_root=media)  # type: ignore[list-item, arg-type]
    remote = build("cambrian", remote_options, BuildSettings(out=tmp_path / "remote", **settings))  # type: ignore[arg-type]

    want, got = _shard_files(tmp_path / "local"), _shard_files(tmp_path / "remote")
    want["rejects.jsonl"] = want["rejects.jsonl"].replace(str(llava_world.media_root).encode(), media.encode())
    assert got == want and remote.counts == local.counts
    assert remote.args["input"] == [url] and remote.args["media_root"] == media  # the URLs, not the cache
    staged = list((tmp_path / ".inputs").rglob(llava_world.jsonl.name))
    assert len(staged) == 1 and staged[0].read_bytes() == llava_world.jsonl.read_bytes()
    assert any(k.startswith("media/") for k in got) == copy_media  # the bytes, stored under the dataset
    ds, here = mmdata.open(tmp_path / "remote"), mmdata.open(tmp_path / "local")
    i = next(i for i in range(len(ds)) if ds[i].media)
    assert ds.image(ds[i], 0).tobytes() == here.image(here[i], 0).tobytes()  # from the bucket, or the copy


def test_a_rerun_reuses_the_staged_input_and_a_changed_object_is_rebuilt(
        s3: S3Server, llava_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMDATA_CACHE", str(tmp_path / "cache"))
    url, media = _upload_world(llava_world, "rerun")
    options = CambrianOptions(input=[url], media_root=media)  # type: ignore[list-item, arg-type]
    settings = BuildSettings(out=tmp_path / "out", shard_size=5)
    first = build("cambrian", options, settings)
    key = url.split("://", 1)[1]
    before = len(s3.requests)
    build("cambrian", options, settings)
    assert s3.count("GET", since=before) == 0  # nothing fetched: the staged input and every shard are reused

    lines = llava_world.jsonl.read_bytes().splitlines(keepends=True)
    fsspec.filesystem("s3", skip_instance_cache=True).pipe_file(key, b"".join(lines[:-1]))  # the last line dropped
    changed = build("cambrian", options, settings)
    assert changed.counts["read"] == first.counts["read"] - 1
    assert len(list((tmp_path / "cache" / "inputs").rglob(llava_world.jsonl.name))) == 2


def test_a_media_path_leaving_the_root_is_a_reject_with_no_request(s3: S3Server, tmp_path: Path) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    lines = [{"id": "up", "image": "../secret-up.jpg", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                                         {"from": "gpt", "value": "a"}]},
             {"id": "abs", "image": "/secret-abs.jpg", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                                         {"from": "gpt", "value": "a"}]}]
    fs.pipe_file("mmdata-test/escape/in.jsonl", b"".join(orjson.dumps(x) + b"\n" for x in lines))
    before = len(s3.requests)
    options = CambrianOptions(input=["s3://mmdata-test/escape/in.jsonl"],  # type: ignore[list-item]
                              media_root="s3://mmdata-test/escape/images")  # type: ignore[arg-type]
    manifest = build("cambrian", options, BuildSettings(out=tmp_path / "out"))
    assert manifest.counts == {"read": 2, "written": 0, "rejected": 2}
    reasons = [orjson.loads(x)["reason"] for x in (tmp_path / "out" / "rejects.jsonl").read_bytes().splitlines()]
    assert "escapes the media root" in reasons[0] and "is absolute" in reasons[1]
    assert not [r for r in s3.requests[before:] if "secret" in r[1]]


def test_a_video_build_with_an_s3_media_root_gives_one_clear_message(s3: S3Server, tmp_path: Path) -> None:
    (tmp_path / "ann.json").write_text("[]")
    result = CliRunner().invoke(app, ["build", "video", "--input", str(tmp_path / "ann.json"), "--media-root",
                                      "s3://mmdata-test/videos", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--media-root s3://mmdata-test/videos" in result.output and "download it" in result.output
    assert not (tmp_path / "out").exists()


def _answers(path: Path, tag: str, n: int = 40) -> None:
    """`n` records whose answers are `tag` + 4 digits: a rebuild with another tag keeps every size the same."""
    path.write_text("".join(orjson.dumps({"id": i, "conversations": [
        {"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"{tag}{i:04d}"}]}).decode() + "\n"
        for i in range(n)))


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_dataset_rebuilt_on_the_store_is_an_error_not_a_mix(s3: S3Server, tmp_path: Path, overwrite: bool) -> None:
    src, url = tmp_path / "in.jsonl", f"s3://mmdata-test/rebuilt-{overwrite}"
    _answers(src, "A")
    build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=url, shard_size=10))
    ds = mmdata.open(url)
    cached = mmdata.open(url, cache_dir=tmp_path / "cache")
    assert ds[0].conversations[1].value == cached[0].conversations[1].value == "A0000"
    gets, heads = s3.count("GET"), s3.count("HEAD")
    ds[1]
    assert (s3.count("GET") - gets, s3.count("HEAD") - heads) == (1, 1)  # the record, then the manifest's HEAD
    _answers(src, "B")
    build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=url, shard_size=10, overwrite=overwrite))
    for reader in (ds, cached):
        with pytest.raises(DatasetChanged, match="open it again"):
            reader[35]
    with pytest.raises(DatasetChanged):
        list(ds)
    worker = pickle.loads(pickle.dumps(cached.shards))  # a DataLoader worker of the old reader
    with pytest.raises(DatasetChanged):
        worker.read_one(15)
    assert mmdata.open(url, cache_dir=tmp_path / "cache")[35].conversations[1].value == "B0035"


def test_a_rerun_that_changes_nothing_keeps_a_remote_reader(s3: S3Server, tmp_path: Path) -> None:
    src, url = tmp_path / "in.jsonl", "s3://mmdata-test/unchanged"
    _answers(src, "A")
    build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=url, shard_size=10))
    ds = mmdata.open(url)
    ds[0]
    time.sleep(1.1)  # the store's modification times are in seconds: the rewritten manifest gets a new one
    build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=url, shard_size=10))
    assert [r.conversations[1].value for r in ds][35] == "A0035"


# ---------------------------------------------------------------- whole files, shard files, URL media roots
def test_storage_serves_whole_files_for_a_parser_in_one_request(s3: S3Server, built: dict[str, tuple[Path, str]],
                                                                tmp_path: Path) -> None:
    from mmdata.storage.objectstore import FsspecStorage

    local, url = built["jsonl"]
    storage = FsspecStorage(url)
    name = next(k for k in _objects(url) if k.startswith("media/"))
    before = s3.count("GET")
    with storage.open_file(name) as f:
        assert f.read() == (local / name).read_bytes()
    assert s3.count("GET", 0) - before == 1  # one GET, no read-ahead
    np.save(tmp_path / "a.npy", np.arange(5, dtype="<u8"))
    storage.write_bytes("extra/a.npy", (tmp_path / "a.npy").read_bytes())
    before = s3.count("GET")
    assert storage.read_array("extra/a.npy").tolist() == [0, 1, 2, 3, 4]
    assert s3.count("GET", 0) - before == 1
    storage.remove("extra/a.npy")
    assert storage.reachable() and FsspecStorage(f"{url}/shards").reachable()
    assert not FsspecStorage("s3://mmdata-test/no/such/prefix").reachable()
    assert not FsspecStorage("s3://no-such-bucket-y/x").reachable()


def test_shard_files_name_the_objects_and_their_record_offsets(built: dict[str, tuple[Path, str]]) -> None:
    for form in ("jsonl", "wds"):
        local, url = built[form]
        here, there = mmdata.open(local), mmdata.open(url)
        files = there.shard_files()
        assert [str(f.location) for f in files] == [f"{url}/{Path(f.location).relative_to(local).as_posix()}"
                                                    for f in here.shard_files()]
        blobs = _objects(url)
        got = [blobs[str(f.location)[len(url) + 1:]][a:b] for f in files for a, b in zip(f.offsets[:-1], f.offsets[1:])]
        assert got == [here.raw(i) for i in range(len(here))]


def test_a_url_media_root_that_is_gone_is_one_message(s3: S3Server, llava_world: World, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMDATA_CACHE", raising=False)
    url, media = _upload_world(llava_world, "gone")
    build("cambrian", CambrianOptions(input=[url], media_root=media),  # type: ignore[list-item, arg-type]
          BuildSettings(out=tmp_path / "ds"))
    ds = mmdata.open(tmp_path / "ds")
    i = next(i for i in range(len(ds)) if ds[i].media)
    ds.check_media()
    assert ds.media_bytes(i, 0) == (llava_world.media_root / ds[i].media[0].path).read_bytes()
    fsspec.filesystem("s3", skip_instance_cache=True).rm(media.split("://", 1)[1], recursive=True)
    for call in (ds.check_media, lambda: ds.image(i, 0), lambda: mmdata.open(tmp_path / "ds").media_bytes(i, 0)):
        with pytest.raises(MediaUnreachable, match=f"under {media}.*--copy-media.*--format wds"):
            call()
