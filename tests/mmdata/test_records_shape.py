"""One shape for every dataset-like object: the same test body over a dataset, a view, a mixture and a selection.

Two sources keep the same media paths (`img/{k}.png`) in different places — `red` under a media root, in place;
`blue` stored with the dataset (`--copy-media`) — and their pictures differ in colour, and in size with k: only the
dataset a record came from can tell which picture a path means, so resolving through the wrong source shows.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

import mmdata
from mmdata import DatasetWriter, Media, Record, Turn
from mmdata.core.errors import InputError
from mmdata.mix.planner import mix
from mmdata.quality.dedup import DedupOptions, dedup
from mmdata.read import records as records_module
from mmdata.storage.local import LocalStorage

COLORS = {"red": (200, 30, 30), "blue": (30, 30, 200)}
N = 6  # records per source
KINDS = ["dataset", "view", "mixture", "selection"]


def _record(name: str, k: int) -> Record:
    return Record(f"{name}-{k}", "test", "vqa", [Turn("human", f"<image>\nColour of {k}?"), Turn("gpt", name)],
                  [Media(f"img/{k}.png")])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("shape")
    for name, color in COLORS.items():
        root = tmp / f"media-{name}"
        (root / "img").mkdir(parents=True)
        for k in range(N):
            Image.new("RGB", (8 + k, 8), color).save(root / "img" / f"{k}.png")
        with DatasetWriter(tmp / name, media_root=root, shard_size=4, copy_media=name == "blue") as w:
            for k in range(N):
                w.add(_record(name, k))
    (tmp / "r.yaml").write_text("seed: 3\nsources:\n  - {path: red, epochs: 1}\n  - {path: blue, epochs: 1}\n")
    mix(tmp / "r.yaml", tmp / "mixture")
    dedup([tmp / "red", tmp / "blue"], tmp / "view", DedupOptions(images="exact", text="exact", workers=1,
                                                                  cache=tmp / "cache"))
    return tmp


SELECTED = [11, 0, 5, 5, 7, 2, 9]  # of the mixture: any order, a repeat


def _open(world: Path, kind: str) -> Any:
    if kind == "selection":
        return mmdata.open(world / "mixture")[SELECTED]
    return mmdata.open(world / {"dataset": "red"}.get(kind, kind))


@pytest.fixture(params=KINDS)
def x(request: pytest.FixtureRequest, world: Path) -> Iterator[Any]:
    obj = _open(world, request.param)
    yield obj
    obj.close()


def _truth(record: Record) -> tuple[str, int]:
    """(source, k) of a record, from its own content."""
    name, k = record.id.split("-")
    assert record.conversations[1].value == name
    return name, int(k)


def _file(world: Path, record: Record) -> Path:
    name, k = _truth(record)
    return world / ("media-red" if name == "red" else "blue/media") / "img" / f"{k}.png"


def test_len_and_what_each_kind_holds(world: Path) -> None:
    lengths = {kind: len(_open(world, kind)) for kind in KINDS}
    assert lengths == {"dataset": N, "view": 2 * N, "mixture": 2 * N, "selection": len(SELECTED)}
    for kind in ("view", "mixture"):
        assert sorted(r.id for r in _open(world, kind)) == sorted(f"{n}-{k}" for n in COLORS for k in range(N))
    assert [r.id for r in _open(world, "dataset")] == [f"red-{k}" for k in range(N)]
    mixture = mmdata.open(world / "mixture")
    assert [r.id for r in _open(world, "selection")] == [mixture[i].id for i in SELECTED]


def test_media_by_position_and_by_record_served(x: Any, world: Path) -> None:
    for i in range(len(x)):
        record = x[i]
        name, k = _truth(record)
        for image in (x.image(i, 0), x.image(record, 0)):
            assert image.getpixel((0, 0)) == COLORS[name] and image.size == (8 + k, 8)
        expected = _file(world, record)
        assert x.media_bytes(i, 0) == x.media_bytes(record, 0) == expected.read_bytes()
        assert Path(x.media_path(i, 0)).resolve() == Path(x.media_path(record, 0)).resolve() == expected.resolve()
    pairs = [x.get(i) for i in range(len(x))] + x.get_many(range(len(x)))
    served = [r for r, _ in pairs] + list(x)  # records from get, get_many and iteration resolve alike
    for record in served:
        assert x.image(record, 0).getpixel((0, 0)) == COLORS[_truth(record)[0]]


def test_a_record_a_mixture_did_not_serve_is_refused_not_guessed(world: Path) -> None:
    red, mixture = mmdata.open(world / "red"), mmdata.open(world / "mixture")
    held = next(r for r in mixture if r.id == "blue-3")
    stranger = Record.from_dict(held.to_dict())  # equal to a record the mixture served, but not that one
    assert stranger == held and stranger is not held
    with pytest.raises(InputError, match=r"record 'blue-3' was not served by mixture mixture, whose sources keep "
                                         r"their media in different places.*x\.image\(i, j\)"):
        mixture.image(stranger, 0)
    with pytest.raises(InputError, match="not served"):
        mixture[[0, 1]].media_bytes(stranger, 0)
    # A dataset is told which media to use: any record resolves against its own.
    assert red.image(stranger, 0).getpixel((0, 0)) == COLORS["red"]
    # Media that came with the record need no source.
    inline = Record.from_dict(held.to_dict())
    inline.media[0].data = _file(world, inline).read_bytes()
    assert mixture.image(inline, 0).getpixel((0, 0)) == COLORS["blue"]
    # A selection of one source resolves any record through it, like the dataset itself.
    assert red[1:3].image(stranger, 0).getpixel((0, 0)) == COLORS["red"]


def test_a_served_record_is_remembered_while_it_lives_and_no_longer(world: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "_ORIGINS", 8)
    mixture = mmdata.open(world / "mixture")
    held = [r for _ in range(10) for r in mixture]  # 120 alive at once: the map is swept several times meanwhile
    assert all(mixture.image(r, 0).getpixel((0, 0)) == COLORS[_truth(r)[0]] for r in held)  # the living stay
    del held
    for _ in range(20):  # 240 records served and dropped one by one
        for r in mixture:
            assert mixture.image(r, 0).getpixel((0, 0)) == COLORS[_truth(r)[0]]
    assert len(mixture._origins) <= 2 * 120 + 1  # no strong reference: the dead go


def test_a_dead_records_address_taken_by_another_record_does_not_inherit_its_source(world: Path) -> None:
    mixture = mmdata.open(world / "mixture")
    i = next(i for i in range(len(mixture)) if mixture.source_of(i) == "blue")
    served = mixture[i]
    address, data = id(served), served.to_dict()
    del served
    for _ in range(100):  # CPython hands the freed address to the next record of the same size
        other = Record.from_dict(data)
        if id(other) == address:
            break
    else:
        pytest.skip("the allocator did not reuse the address")
    with pytest.raises(InputError, match="not served"):
        mixture.image(other, 0)


def test_slices_and_lists_of_positions_are_lazy_selections(x: Any) -> None:
    n = len(x)
    ids = [x[i].id for i in range(n)]
    cases: list[tuple[Any, list[int]]] = [
        (slice(1, 4), [1, 2, 3]), (slice(None, None, -1), list(range(n - 1, -1, -1))), (slice(-2, None), [n - 2, n - 1]),
        (slice(4, 1), []), (slice(None, None, 2), list(range(0, n, 2))), ([3, 1, 1, -1], [3, 1, 1, n - 1]),
        (np.array([2, 0]), [2, 0]), (range(1, 3), [1, 2]), ([], []),
        (np.arange(n) % 2 == 1, list(range(1, n, 2))),  # a boolean mask: one flag per record
    ]
    for key, positions in cases:
        part = x[key]
        assert isinstance(part, mmdata.Selection) and len(part) == len(positions), key
        assert [r.id for r in part] == [ids[p] for p in positions], key
        assert [part[k].id for k in range(len(part))] == [ids[p] for p in positions], key
        assert [r.id for r, _ in part.get_many(list(range(len(part))))] == [ids[p] for p in positions], key
    part = x[1:][::2]  # a selection of a selection
    assert [r.id for r in part] == ids[1::2]
    record, dataset = part.get(1)
    assert record.id == ids[3] and dataset is x.get(3)[1]
    assert part.image(0, 0).getpixel((0, 0)) == COLORS[_truth(x[1])[0]]
    assert x[np.int64(2)].id == x[-n + 2].id == ids[2]  # a numpy integer is a position, not a selection


def test_bad_keys_say_what_is_wrong(x: Any) -> None:
    n = len(x)
    with pytest.raises(IndexError, match="out of range"):
        x[[0, n]]
    with pytest.raises(IndexError, match="out of range"):
        x[[-n - 1]]
    x[[n - 1, -n]]  # the boundaries themselves are positions
    with pytest.raises(IndexError, match="one flag per record"):
        x[np.ones(n + 1, dtype=bool)]
    with pytest.raises(TypeError, match="indices are integers, slices"):
        x["0"]
    with pytest.raises(TypeError, match="indices are integers, slices"):
        x[[0.5]]
    with pytest.raises(IndexError):
        x[n]


def test_get_and_get_many_carry_the_dataset_holding_each_record(x: Any) -> None:
    for i in range(len(x)):
        record, dataset = x.get(i)
        assert isinstance(dataset, mmdata.Dataset) and dataset.root.name == _truth(record)[0]
        assert dataset.image(record, 0).getpixel((0, 0)) == COLORS[_truth(record)[0]]
    rows = [len(x) - 1, 0, 0, 2]
    assert [(r.id, d.root.name) for r, d in x.get_many(rows)] == [(x[i].id, x.get(i)[1].root.name) for i in rows]


def test_iteration_matches_positions(x: Any) -> None:
    assert [r.id for r in x] == [x[i].id for i in range(len(x))]
    assert list(x) == [x[i] for i in range(len(x))]


def test_to_pandas(x: Any, request: pytest.FixtureRequest) -> None:
    frame = x.to_pandas()
    assert list(frame["id"]) == [r.id for r in x]
    assert list(x.to_pandas(limit=2)["id"]) == [r.id for r in x][:2]
    labelled = request.node.callspec.params["x"] != "dataset"  # a view's sources are named; a dataset has one
    assert ("dataset" in frame.columns) == labelled
    if labelled:
        assert list(frame["dataset"]) == [_truth(r)[0] for r in x]


def test_dataloader_batches_records_and_pairs(x: Any) -> None:
    batches = list(DataLoader(x, batch_size=4, collate_fn=mmdata.collate_list))
    assert [len(b) for b in batches] == [4] * (len(x) // 4) + ([len(x) % 4] if len(x) % 4 else [])
    assert [r.id for b in batches for r in b] == [r.id for r in x]
    pairs = next(iter(DataLoader(mmdata.RecordDataset(x), batch_size=3, shuffle=False,
                                 collate_fn=mmdata.collate_list)))
    assert [(r.id, d.root.name) for r, d in pairs] == [(x[i].id, _truth(x[i])[0]) for i in range(3)]
    x[0], list(x)  # records served: the weak references stay in this process
    worker = DataLoader(x, batch_size=len(x), num_workers=1, collate_fn=mmdata.collate_list)
    assert [r.id for r in next(iter(worker))] == [r.id for r in x]
    clone = pickle.loads(pickle.dumps(x))
    assert [r.id for r in clone] == [r.id for r in x] and clone.image(len(x) - 1, 0).size == x.image(len(x) - 1, 0).size


def test_dataset_shard_files_locate_every_record(world: Path) -> None:
    ds = mmdata.open(world / "blue")
    files = ds.shard_files()
    assert [f.records for f in files] == [4, 2]
    got = [Path(f.location).read_bytes()[a:b] for f in files for a, b in zip(f.offsets[:-1], f.offsets[1:])]
    assert got == [ds.raw(i) for i in range(len(ds))]
    assert [f.bytes for f in files] == [Path(f.location).stat().st_size for f in files] == [int(f.offsets[-1])
                                                                                         for f in files]


def test_local_storage_maps_arrays_and_opens_files_lazily(world: Path, tmp_path: Path) -> None:
    storage = LocalStorage(world / "mixture")
    index = storage.read_array("index.npy")
    assert isinstance(index, np.memmap) and not index.flags.writeable and len(index) == 2 * N
    assert isinstance(mmdata.open(world / "mixture").index, np.memmap)  # a view's index is mapped, not read
    with LocalStorage(world / "blue").open_file("media/img/0.png") as f:
        assert f.fileno() >= 0 and f.read(4) == b"\x89PNG"
    assert LocalStorage(world).reachable() and not LocalStorage(tmp_path / "gone").reachable()


def test_media_root_gone_is_one_message_raised_by_check_and_by_reads(world: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "media"
    shutil.copytree(world / "media-red", root)
    with DatasetWriter(tmp_path / "ds", media_root=root) as w:
        w.add(_record("red", 1))
    ds = mmdata.open(tmp_path / "ds")
    ds.check_media()
    (root / "img" / "1.png").unlink()
    with pytest.raises(FileNotFoundError) as missing:  # one file gone: the root is here, the file is not
        ds.image(0, 0)
    assert not isinstance(missing.value, mmdata.MediaUnreachable)
    shutil.rmtree(root)
    for call in (ds.check_media, lambda: ds.image(0, 0), lambda: ds.media_bytes(0, 0),
                 lambda: mmdata.open(tmp_path / "ds")[0:1].image(0, 0)):
        with pytest.raises(mmdata.MediaUnreachable, match=f"under {root}.*--copy-media.*--format wds"):
            call()


def test_a_spawned_dataloader_worker_reads_a_mixture(world: Path) -> None:
    mixture = mmdata.open(world / "mixture")
    loader = DataLoader(mmdata.RecordDataset(mixture), batch_size=5, num_workers=1, multiprocessing_context="spawn",
                        collate_fn=mmdata.collate_list)  # everything pickled: nothing inherited from this process
    pairs = [p for batch in loader for p in batch]
    assert [(r.id, d.root.name) for r, d in pairs] == [(r.id, _truth(r)[0]) for r in mixture]
    assert all(d.image(r, 0).getpixel((0, 0)) == COLORS[_truth(r)[0]] for r, d in pairs)
