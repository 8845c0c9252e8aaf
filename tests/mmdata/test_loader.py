"""The training loader: sharding across ranks and workers without overlap or loss, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, DatasetWriter, build
from mmdata.core.schema import Media, Record, Turn
from mmdata.mix.planner import mix
from mmdata.read.loader import MixtureLoader, MixtureSampler, RecordDataset
from mmdata.read.view import Mixture


def _ids(batch: list[Any]) -> list[Any]:
    return list(batch)


def run(loader: MixtureLoader, steps: int | None = None) -> list[Any]:
    out: list[Any] = []
    for k, batch in enumerate(loader):
        out.extend(batch)
        if steps is not None and k + 1 == steps:
            break
    return out


@pytest.mark.parametrize("length", [0, 1, 7, 100, 101])
@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_ranks_partition_the_epoch(length: int, world_size: int) -> None:
    shards = [list(MixtureSampler(length, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert [len(MixtureSampler(length, rank=r, world_size=world_size)) for r in range(world_size)] == \
        [len(s) for s in shards]
    even = [list(MixtureSampler(length, rank=r, world_size=world_size, drop_last=True)) for r in range(world_size)]
    assert len({len(s) for s in even}) == 1 and len(set().union(*map(set, even))) == length // world_size * \
        world_size


def test_shuffled_epochs_are_permutations_seeded_by_epoch() -> None:
    s = MixtureSampler(50, shuffle=True, seed=1)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    assert list(MixtureSampler(50, shuffle=True, seed=1)) == first


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank 2 / world_size 2"):
        MixtureSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="start 11 is outside"):
        MixtureSampler(10, start=11)
    with pytest.raises(ValueError, match="for 10 samples, this mixture has 12"):
        MixtureSampler(12).load_state_dict(MixtureSampler(10).state_dict())


@pytest.mark.parametrize(("workers_before", "workers_after"), [(0, 0), (0, 2), (2, 1)])
def test_resume_gives_the_uninterrupted_order(workers_before: int, workers_after: int) -> None:
    data = list(range(103))
    full = run(MixtureLoader(data, batch_size=4, collate_fn=_ids))
    assert full == data
    first = MixtureLoader(data, batch_size=4, num_workers=workers_before, collate_fn=_ids)
    head = run(first, steps=5)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    second = MixtureLoader(data, batch_size=4, num_workers=workers_after, collate_fn=_ids)
    second.load_state_dict(state)
    assert head + run(second) == full


def test_resume_across_ranks_and_a_new_world_size() -> None:
    data = list(range(60))
    loaders = [MixtureLoader(data, batch_size=2, rank=r, world_size=3, collate_fn=_ids) for r in range(3)]
    seen = [run(loader, steps=4) for loader in loaders]  # every rank steps 4 times in lockstep
    states = [loader.state_dict() for loader in loaders]
    assert all(s == states[0] for s in states) and states[0]["consumed"] == 24
    resumed = [MixtureLoader(data, batch_size=2, rank=r, world_size=2, collate_fn=_ids) for r in range(2)]
    for loader in resumed:
        loader.load_state_dict(states[0])
    rest = [run(loader) for loader in resumed]
    everything = [i for part in seen + rest for i in part]
    assert sorted(everything) == data  # nothing lost, nothing twice


def test_state_at_the_end_of_an_epoch_resumes_at_the_next() -> None:
    loader = MixtureLoader(list(range(8)), batch_size=4, shuffle=True, collate_fn=_ids)
    batches = iter(loader)
    next(batches), next(batches)
    state = loader.state_dict()
    resumed = MixtureLoader(list(range(8)), batch_size=4, shuffle=True, collate_fn=_ids)
    resumed.load_state_dict(state)
    assert resumed.state_dict()["epoch"] == 1
    nxt = list(batches)  # finishing the generator moves the original to epoch 1 too
    assert nxt == [] and run(loader) == run(resumed)


def test_mixture_through_dataloader_workers(tmp_path: Path) -> None:
    for name, n in (("a", 40), ("b", 25)):
        src = tmp_path / f"{name}.jsonl"
        src.write_text("".join(json.dumps({"id": f"{name}{i}", "conversations": [
            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}) + "\n" for i in range(n)))
        build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=tmp_path / name, shard_size=16,
                                                                      format="jsonl" if name == "a" else "wds"))
    (tmp_path / "r.yaml").write_text("seed: 1\nsize: 90\nsources:\n  - {path: a, weight: 2}\n  - {path: b, "
                                     "weight: 1}\n")
    mix(tmp_path / "r.yaml", tmp_path / "m")
    mixture = Mixture(tmp_path / "m")
    data = RecordDataset(mixture, lambda record, dataset: (record.id, dataset.root.name))
    expected = [(r.id, mixture.source_of(i)) for i, r in enumerate(mixture)]
    loader = MixtureLoader(data, batch_size=8, num_workers=2, collate_fn=_ids)
    head = run(loader, steps=3)
    resumed = MixtureLoader(data, batch_size=8, num_workers=1, collate_fn=_ids)
    resumed.load_state_dict(loader.state_dict())
    assert head + run(resumed) == expected


def test_loader_items_carry_their_dataset_so_shared_records_find_their_own_images(tmp_path: Path) -> None:
    # The same records (same ids, same media paths) built twice over two media roots whose pictures differ: only
    # the dataset an item came from can tell which picture is meant.
    colors = {"red": (200, 30, 30), "blue": (30, 30, 200)}
    for name, color in colors.items():
        root = tmp_path / f"media-{name}"
        (root / "img").mkdir(parents=True)
        for k in range(6):
            Image.new("RGB", (8 + k, 8), color).save(root / "img" / f"{k}.png")
        with DatasetWriter(tmp_path / name, media_root=root, shard_size=4) as w:
            for k in range(6):
                w.add(Record(f"same{k}", "test", "vqa", [Turn("human", "<image>\nColour?"), Turn("gpt", name)],
                             [Media(f"img/{k}.png")]))
    (tmp_path / "r.yaml").write_text("seed: 3\nsources:\n  - {path: red, epochs: 1}\n  - {path: blue, epochs: 1}\n")
    mix(tmp_path / "r.yaml", tmp_path / "m")
    mixture = Mixture(tmp_path / "m")
    items = run(MixtureLoader(RecordDataset(mixture), batch_size=5, shuffle=True, collate_fn=_ids))
    assert len(items) == 12 and {r.id for r, _ in items} == {f"same{k}" for k in range(6)}
    for record, dataset in items:
        image = dataset.image(record, 0)
        assert image.getpixel((0, 0)) == colors[dataset.root.name] and record.conversations[1].value == \
            dataset.root.name and image.size == (record.media[0].width, record.media[0].height)
    assert [(r.id, d.root.name) for r, d in items] == \
        [(r.id, d.root.name) for r, d in mixture.get_many(list(MixtureSampler(12, shuffle=True)))]
