"""A dataset opened before a rebuild never mixes the two builds: what it reads is the opened build's, or it raises
`DatasetChanged` saying to open it again."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.core.errors import DatasetChanged
from mmdata.storage.local import LocalStorage


def _source(path: Path, tag: str, n: int = 40, images: Path | None = None) -> None:
    """`n` records whose answers are `tag` + 4 digits: a rebuild with another tag keeps every size the same."""
    lines = []
    for i in range(n):
        record = {"id": i, "conversations": [{"from": "human", "value": ("<image>\n" if images else "") + f"q{i}"},
                                             {"from": "gpt", "value": f"{tag}{i:04d}"}]}
        if images:
            record["image"] = f"{i}.png"
            Image.new("RGB", (4, 4), (ord(tag), i, 0)).save(images / f"{i}.png")
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def _build(src: Path, out: Path, **settings: object) -> None:
    build("cambrian", CambrianOptions(input=[src], media_root=settings.pop("media_root", None)),  # type: ignore[arg-type]
          BuildSettings(out=out, shard_size=10, **settings))  # type: ignore[arg-type]


def _answer(ds: mmdata.Dataset, i: int) -> str:
    return ds[i].conversations[1].value


@pytest.mark.parametrize("overwrite", [False, True])  # in place (a rerun over a changed input), or a swapped folder
def test_rebuilt_dataset_is_an_error_not_a_mix(tmp_path: Path, overwrite: bool) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    _source(src, "A")
    _build(src, out)
    ds = mmdata.open(out)
    assert _answer(ds, 0) == "A0000"  # shard 0 is open
    _source(src, "B")
    _build(src, out, overwrite=overwrite)
    assert _answer(ds, 1) == "A0001"  # the shard it had open still reads the build it opened
    with pytest.raises(DatasetChanged, match="open it again"):
        _answer(ds, 35)  # another shard would be the new build's
    with pytest.raises(DatasetChanged):
        list(ds)  # streaming opens each shard again
    assert _answer(mmdata.open(out), 35) == "B0035"


def test_a_rerun_that_changes_nothing_keeps_the_reader(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    _source(src, "A")
    _build(src, out)
    ds = mmdata.open(out)
    _answer(ds, 0)
    _build(src, out)  # resumes: every shard reused, the same manifest written again
    assert [_answer(ds, i) for i in (15, 35)] == ["A0015", "A0035"] and len(list(ds)) == 40


def test_a_build_in_progress_is_an_error(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    _source(src, "A")
    _build(src, out)
    ds = mmdata.open(out)
    (out / "dataset.json").unlink()  # what a rebuild does first
    with pytest.raises(DatasetChanged, match="removed"):
        _answer(ds, 0)


def test_workers_check_against_the_build_their_parent_opened(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    _source(src, "A")
    _build(src, out)
    ds = mmdata.open(out)
    len(ds)
    _source(src, "B")
    _build(src, out)
    worker = pickle.loads(pickle.dumps(ds.shards))  # a DataLoader worker's copy, made after the rebuild
    with pytest.raises(DatasetChanged):
        worker.read_one(0)


def test_copied_media_of_a_rebuilt_dataset_are_not_served(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    _source(src, "A", n=12, images=images)
    _build(src, out, media_root=images, copy_media=True)
    ds = mmdata.open(out)
    record = ds[0]
    assert ds.image(record, 0).getpixel((0, 0)) == (ord("A"), 0, 0)
    _source(src, "B", n=12, images=images)
    _build(src, out, media_root=images, copy_media=True)
    for read in (ds.image, ds.media_bytes):
        with pytest.raises(DatasetChanged):
            read(record, 0)


def test_a_file_opened_before_the_manifest_changes_is_the_opened_builds(tmp_path: Path) -> None:
    """The order the check relies on: open (or read) first, then look at the manifest."""
    (tmp_path / "dataset.json").write_text("{}")
    (tmp_path / "a").write_text("old")
    storage = LocalStorage(tmp_path)
    storage.pin("dataset.json")
    with storage.stream("a") as f:
        (tmp_path / "dataset.json").unlink()  # a rebuild starts after the file was opened
        assert f.read() == b"old"
    with pytest.raises(DatasetChanged):
        storage.stream("a")
    with pytest.raises(DatasetChanged):
        storage.read_bytes("a")
