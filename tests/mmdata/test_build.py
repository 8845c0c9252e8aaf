"""The writer and reader end to end on the generated LLaVA world: counts, rejects, formats, resume, determinism."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

import mmdata
import mmdata.build.executors.base as executors
from builders.cambrian import CambrianOptions, units
from mmdata.build.driver import BuildError, BuildSettings, build
from mmdata.build.executors.base import Job, Todo
from mmdata.build.executors.local import LocalExecutor
from mmdata.build.writer import FORMATS, ShardConfig
from mmdata.testing.llava import World


def _build(world: World, out: Path, **settings: object) -> mmdata.Dataset:
    opts = CambrianOptions(input=[world.jsonl, world.json_array], media_root=world.media_root)
    build("cambrian", opts, BuildSettings(out=out, **settings))  # type: ignore[arg-type]
    return mmdata.open(out)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir()) if not p.name.endswith(".done.json")}


def test_counts_reconcile_and_every_bad_input_is_a_reasoned_reject(llava_world: World, tmp_path: Path) -> None:
    ds = _build(llava_world, tmp_path / "out", shard_size=7)
    c = ds.manifest.counts
    assert c == {"read": c["written"] + c["rejected"], "written": llava_world.expected_written,
                 "rejected": llava_world.expected_rejected}
    assert len(ds) == c["written"] == sum(s.count for s in ds.manifest.shards)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == c["rejected"]
    reasons = "\n".join(f"{r['ref']}: {r['reason']}" for r in rejects)
    for expected in ["cambrian_sample.jsonl:4: invalid JSON", "file not found under media root",
                     "does not decode as an image", "empty file (0 bytes)",
                     "3 <image> placeholder(s) in conversations but 1 media", "conversations[1].value is empty",
                     "llava_sample.json[23]"]:
        assert expected in reasons
    assert ds.manifest.tasks == {"text": 2 * 6, "vqa": c["written"] - 12}  # t1..t5 + "odd"


def test_quirks_are_repaired_and_noted(llava_world: World, tmp_path: Path) -> None:
    ds = _build(llava_world, tmp_path / "out")
    by_orig: dict[object, list[mmdata.Record]] = {}
    for r in ds:
        by_orig.setdefault(r.meta["orig_id"], []).append(r)
    assert len({r.id for r in ds}) == len(ds)  # duplicate ids made unique ...
    assert len(by_orig["000000"]) == 4  # ... and the duplicates are all kept (2 files x 2)
    assert by_orig[42][0].id == "42@cambrian_sample:20"  # int-like id, stable from file and line
    case = by_orig["case"][0]
    assert case.media[0].path == "ocr_vqa/Mixed_Case.JPG"
    assert case.meta["case_resolved"] == [{"from": "OCR_VQA/mixed_case.jpg", "to": "ocr_vqa/Mixed_Case.JPG"}]
    assert by_orig["lead"][0].conversations[0].role == "human"
    assert by_orig["lead"][0].meta["repaired"] == {"dropped_leading_gpt": 1}
    assert by_orig["odd"][0].meta["repaired"] == {"dropped_trailing_human": True}
    assert by_orig["000001"][0].conversations[0].value.endswith("\n<image>")  # placeholder at the end, kept
    assert by_orig["000000"][-1].meta.get("extra") == {"model": "gpt-4v"}
    png = by_orig["png"][0].media[0]
    assert (png.width, png.height) == (40, 30)
    for t in ("t1", "t2", "t3", "t4", "t5"):
        assert by_orig[t][0].task == "text" and by_orig[t][0].media == []


def test_jsonl_and_wds_hold_the_same_records(llava_world: World, tmp_path: Path) -> None:
    both = _build(llava_world, tmp_path / "both", format="both", shard_size=9)
    tars = _build(llava_world, tmp_path / "wds", format="wds", shard_size=9)
    assert both.form == "jsonl" and tars.form == "wds"
    assert [r.to_dict() for r in both] == [r.to_dict() for r in tars] == [tars[i].to_dict() for i in range(len(tars))]
    for i in (0, 5, len(tars) - 1):
        a, b = both[i], tars[i]
        for j in range(len(a.media)):
            assert both.image(a, j).tobytes() == tars.image(b, j).tobytes()
    # the tars are plain webdataset: the library reads them as they are
    urls = sorted(str(p) for p in (tmp_path / "wds" / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == len(tars)
    first = json.loads(samples[0]["json"])
    assert first["id"] == tars[0].id and "0.jpg" in samples[0]


def test_output_is_independent_of_workers_and_byte_identical_on_rebuild(llava_world: World, tmp_path: Path) -> None:
    _build(llava_world, tmp_path / "w1", shard_size=5, format="both")
    _build(llava_world, tmp_path / "w2", shard_size=5, format="both", workers=2)
    assert _shard_bytes(tmp_path / "w1") == _shard_bytes(tmp_path / "w2")
    m1 = json.loads((tmp_path / "w1" / "dataset.json").read_text())
    m2 = json.loads((tmp_path / "w2" / "dataset.json").read_text())
    assert m1 == m2


def test_killed_build_resumes_without_loss_or_duplication(llava_world: World, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    reference = tmp_path / "ref"
    _build(llava_world, reference, shard_size=4)
    out = tmp_path / "out"
    real = executors.write_shard
    calls = {"n": 0}

    def dies_on_third_shard(cfg, index, items, node=None, inputs=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            next(iter(items))
            raise KeyboardInterrupt  # as if the process were killed mid-shard
        return real(cfg, index, items, node, inputs)

    monkeypatch.setattr(executors, "write_shard", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        _build(llava_world, out, shard_size=4)
    assert not (out / "dataset.json").exists()
    with pytest.raises(FileNotFoundError, match="build is incomplete"):
        mmdata.open(out)
    done_before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.done.json")}
    assert len(done_before) == 2
    monkeypatch.setattr(executors, "write_shard", real)
    ds = _build(llava_world, out, shard_size=4)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.done.json")
            if p.name in done_before} == done_before  # complete shards were skipped, not rewritten
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert ds.manifest.counts == mmdata.open(reference).manifest.counts
    assert not list(out.rglob("*.tmp"))


def test_rebuild_into_a_different_build_needs_overwrite(llava_world: World, tmp_path: Path) -> None:
    _build(llava_world, tmp_path / "out")
    with pytest.raises(BuildError, match="holds a different build; choose another --out or pass --overwrite"):
        _build(llava_world, tmp_path / "out", shard_size=3)
    ds = _build(llava_world, tmp_path / "out", shard_size=3, overwrite=True)
    assert ds.manifest.shard_size == 3


def test_copy_media_stores_files_under_the_dataset(llava_world: World, tmp_path: Path) -> None:
    ds = _build(llava_world, tmp_path / "out", copy_media=True)
    assert ds.manifest.media_root == "media"
    r = next(r for r in ds if r.media)
    path = ds.media_path(r, 0)
    assert path.is_file() and path.is_relative_to((tmp_path / "out" / "media").resolve())
    assert ds.image(r, 0).size == (r.media[0].width, r.media[0].height)


def test_reader_is_lazy_and_indexable(llava_world: World, tmp_path: Path) -> None:
    _build(llava_world, tmp_path / "out", shard_size=6)
    ds = mmdata.open(tmp_path / "out")
    assert ds.shards._offsets is None and ds.storage._maps == {}  # opening read no shard
    records = list(ds)
    assert [ds[i].id for i in range(len(ds))] == [r.id for r in records]
    assert ds[-1].id == records[-1].id
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    df = ds.to_pandas()
    assert list(df.columns[:6]) == ["id", "source", "task", "n_media", "n_targets", "n_turns"]
    assert len(df) == len(ds) and df["record"][0]["id"] == records[0].id
    r = ds[0]
    assert isinstance(ds.image(r, 0), Image.Image)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an mmdata dataset"):
        mmdata.open(tmp_path)


def test_media_root_must_exist(llava_world: World, tmp_path: Path) -> None:
    opts = CambrianOptions(input=[llava_world.jsonl], media_root=tmp_path / "nowhere")
    with pytest.raises(BuildError, match="--media-root .*nowhere: directory not found"):
        build("cambrian", opts, BuildSettings(out=tmp_path / "out"))


def test_temp_files_never_use_final_names(tmp_path: Path) -> None:
    from mmdata.storage.local import LocalStorage

    h = LocalStorage(tmp_path).create("shards/000000.jsonl")
    h.write(b"x")
    assert not (tmp_path / "shards" / "000000.jsonl").exists() and h.tmp.name.endswith(f".{os.getpid()}.tmp")
    h.commit()
    assert (tmp_path / "shards" / "000000.jsonl").read_bytes() == b"x"


# sha256 (first 16 hex digits) of every data and index file of the LLaVA world built with --format both and shards
# of 7, as written before the typed decoding path: a change to any stored byte must be deliberate.
GOLDEN = {
    "shards/000000.idx": "c0118dedb26a204a",
    "shards/000000.jsonl": "24d45fb500b54ba2",
    "shards/000000.tar": "345e35ab501bd167",
    "shards/000000.tar.idx": "9563b1a2c3b6db3c",
    "shards/000001.idx": "d55496fb8167e6e2",
    "shards/000001.jsonl": "158b0d03e7f2854d",
    "shards/000001.tar": "5df0f8b1515c60cb",
    "shards/000001.tar.idx": "0237e1a465317a26",
    "shards/000002.idx": "18e06d1db052e630",
    "shards/000002.jsonl": "a8fa22a8ef2dc013",
    "shards/000002.tar": "57d582e033b419ad",
    "shards/000002.tar.idx": "acbc287433e35878",
    "shards/000003.idx": "cad08ebf573bc750",
    "shards/000003.jsonl": "579c4df5c75fca84",
    "shards/000003.tar": "140e7b65620dcad5",
    "shards/000003.tar.idx": "e84cbb313f955691",
    "shards/000004.idx": "e3b0c44298fc1c14",
    "shards/000004.jsonl": "e3b0c44298fc1c14",
    "shards/000004.tar": "84ff92691f909a05",
    "shards/000004.tar.idx": "e3b0c44298fc1c14",
    "shards/000005.idx": "ebec0c1ac8427394",
    "shards/000005.jsonl": "91a16271b106dfbc",
    "shards/000005.tar": "307f5c302ea18a64",
    "shards/000005.tar.idx": "0237e1a465317a26",
    "shards/000006.idx": "240a64c04ccb4194",
    "shards/000006.jsonl": "b65787ccd0efaf2c",
    "shards/000006.tar": "5b9eb2f99fc53894",
    "shards/000006.tar.idx": "d2b66e4f20edbfd9",
    "shards/000007.idx": "4b883c1298cf220f",
    "shards/000007.jsonl": "643c15f440d376ad",
    "shards/000007.tar": "32f767ca43854564",
    "shards/000007.tar.idx": "06f9dd319c126b92",
    "shards/000008.idx": "92d3d74d6c31f209",
    "shards/000008.jsonl": "b6f5628771383506",
    "shards/000008.tar": "01a3dcac1e53f623",
    "shards/000008.tar.idx": "de2177fa4304729d",
}


def test_stored_bytes_are_unchanged(llava_world: World, tmp_path: Path) -> None:
    import hashlib

    _build(llava_world, tmp_path / "out", format="both", shard_size=7)
    got = {str(p.relative_to(tmp_path / "out")): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
           for p in sorted((tmp_path / "out" / "shards").iterdir()) if not p.name.endswith(".done.json")}
    assert got == GOLDEN


def test_typed_decoding_writes_exactly_what_plain_json_writes(llava_world: World) -> None:
    """A line decoded as `LlavaRecord` and the same line decoded as a plain dict give the same stored line (or
    the same reject): the typed decoder only makes the common case faster."""
    import orjson

    from builders._common import convert_llava as convert
    from mmdata.build.sources import iter_file
    from mmdata.build.writer import encode
    from mmdata.core.schema import LLAVA_DECODER, RecordError

    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    samples = [item.value for item in iter_file(llava_world.json_array)] + [
        {"id": None, "conversations": turns},
        {"id": -(2**63), "image": "", "conversations": turns},
        {"id": 4, "image": [], "conversations": turns},
        {"id": "x", "image": ["a/b.jpg", "./c.jpg"], "conversations": turns},
        {"id": "y", "image": "a.jpg", "conversations": [{"from": "user", "value": "<image>\nq"}] + turns[1:]},
        {"id": "z", "video": "v.mp4", "conversations": turns},
        {"id": "w", "conversations": [{"from": "gpt", "value": "a"}, *turns, {"from": "human", "value": "b"}]},
    ]
    typed = 0
    for raw in samples:
        line = orjson.dumps(raw)
        try:
            value = LLAVA_DECODER.decode(line)
            typed += 1
        except Exception:
            continue
        out = []
        for v in (value, orjson.loads(line)):
            try:
                out.append(encode(convert(v, "f:1", "f.jsonl:1").validate()))
            except RecordError as e:
                out.append(str(e))
        assert out[0] == out[1], raw
    assert typed >= 10


def test_encode_is_orjson_of_to_dict_byte_for_byte() -> None:
    """The writer's msgspec encoding of plain records gives exactly orjson's bytes; anything else takes orjson."""
    import orjson

    from mmdata.build.writer import encode
    from mmdata.core.schema import Media, Record, Turn

    metas = [{}, {"orig_id": None, "ref": "f:1"}, {"orig_id": 2**64 - 1}, {"orig_id": -(2**63), "b": True},
             {"x": 1e16, "y": -2.5e-300, "z": 0.1}, {"x": [1, {"y": 1e22}]}, {"s": "é\u2028\x00\x1f\"\\/😀"},
             {1: "int key"}]
    for meta in metas:
        for media in ([], [Media("a.jpg", width=3, height=2, t=1.5)]):
            r = Record(id="r\x7f😀", source="s", task="t", media=media, meta=meta,
                       conversations=[Turn("human", "<image>" * len(media) + "q\n\t"), Turn("gpt", "a")])
            try:
                want = orjson.dumps(r.to_dict())
            except orjson.JSONEncodeError:
                with pytest.raises(orjson.JSONEncodeError):
                    encode(r)
                continue
            assert encode(r) == want, meta
    bad = Record(id="r", source="s", task="t", meta={"big": 2**64}, conversations=[Turn("human", "q")])
    with pytest.raises(orjson.JSONEncodeError):
        encode(bad)
    surrogate = Record(id="r", source="s", task="t", conversations=[Turn("human", "\ud800")])
    with pytest.raises(orjson.JSONEncodeError):
        encode(surrogate)


def test_a_failed_start_does_not_block_the_corrected_command(llava_world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="typo.jsonl"):
        build("cambrian", CambrianOptions(input=[tmp_path / "typo.jsonl"]), BuildSettings(out=out))
    ds = _build(llava_world, out)
    assert len(ds) == llava_world.expected_written


def test_dataset_writer_context_manager(llava_world: World, tmp_path: Path) -> None:
    from mmdata.core.schema import Media, Record, Reject, Turn

    def rec(i: int, image: str | None) -> Record:
        turns = [Turn("human", ("<image>\n" if image else "") + f"q{i}"), Turn("gpt", f"a{i}")]
        return Record(id=f"r{i}", source="mine", task="vqa" if image else "text", conversations=turns,
                      media=[Media(path=image)] if image else [])

    with mmdata.DatasetWriter(tmp_path / "mine", media_root=llava_world.media_root, format="both",
                              shard_size=3) as w:
        assert w.add(rec(0, "coco/000000.jpg"))
        assert not w.add(rec(1, "coco/truncated.jpg"))
        assert not w.add(Reject("mine.csv:7", "no caption"))
        for i in range(2, 6):
            w.add(rec(i, None))
        assert not (tmp_path / "mine" / "dataset.json").exists()  # written last, on a clean exit
    ds = mmdata.open(tmp_path / "mine")
    assert ds.manifest.counts == {"read": 7, "written": 5, "rejected": 2}
    assert [r.id for r in ds] == ["r0", "r2", "r3", "r4", "r5"] and len(ds.manifest.shards) == 3
    assert ds.image(ds[0], 0).size == (64, 48)

    # The same items a batch at a time: the same dataset, byte for byte.
    items = [rec(0, "coco/000000.jpg"), rec(1, "coco/truncated.jpg"), Reject("mine.csv:7", "no caption"),
             *(rec(i, None) for i in range(2, 6))]
    with mmdata.DatasetWriter(tmp_path / "batched", media_root=llava_world.media_root, format="both",
                              shard_size=3) as w:
        assert w.add_many(items[:2]) == 1 and w.add_many(items[2:]) == 4
    for name in ("dataset.json", *(f"shards/{f.name}" for f in (tmp_path / "mine" / "shards").iterdir())):
        if not name.endswith(".done.json"):
            assert (tmp_path / "batched" / name).read_bytes() == (tmp_path / "mine" / name).read_bytes(), name

    with pytest.raises(RuntimeError), mmdata.DatasetWriter(tmp_path / "broken") as w:
        w.add(rec(9, None))
        raise RuntimeError("killed")
    assert not (tmp_path / "broken" / "dataset.json").exists()


def test_pool_helpers_start_while_no_unit_is_ready_yet(tmp_path: Path) -> None:
    """A helper's start-up (seconds of imports) happens while the driver waits for units (cc12m: while img2dataset
    starts), not when the first unit is due; every unit is then written once."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "conversations": [{"from": "human", "value": f"q{i}"},
                                                                  {"from": "gpt", "value": f"a{i}"}]}) + "\n"
                           for i in range(40)))
    options = CambrianOptions(input=[src])
    plan = units(options, 10, None)
    job = Job("cambrian", options, ShardConfig(str(tmp_path / "out"), FORMATS["jsonl"], None, False))
    (tmp_path / "out" / "shards").mkdir(parents=True)
    helpers_when_asked: list[int] = []

    def ready(unit: object) -> bool:  # nothing is ready for the first few polls
        helpers_when_asked.append(len(multiprocessing.active_children()))
        return len(helpers_when_asked) > 3

    todo = [Todo(k, u, {"files": {}}) for k, u in enumerate(plan)]
    results = list(LocalExecutor(workers=2).run(job, todo, ready))
    assert helpers_when_asked[0] == 1  # the helper was started before any unit was ready
    assert sorted(r.index for r in results) == [0, 1, 2, 3] and sum(r.written for r in results) == 40
