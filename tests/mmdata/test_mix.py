"""Mixing: exact counts, determinism, coverage per pass, locality of changes, window proportions; the Mixture."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.format.names import INDEX, MIXTURE
from mmdata.mix.planner import make_plan, mix, plan_table
from mmdata.mix.recipe import RecipeError, load_recipe
from mmdata.read.view import Mixture

SIZES = {"a": 300, "b": 70, "c": 20}


def make_dataset(root: Path, name: str, n: int, fmt: str = "jsonl", shard_size: int = 64) -> Path:
    src = root / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"id": f"{name}{i}", "conversations": [
        {"from": "human", "value": f"question {i} of {name}"}, {"from": "gpt", "value": f"answer {i}"}]}) + "\n"
        for i in range(n)))
    out = root / name
    build("cambrian", CambrianOptions(input=[src], media_root=None),
          BuildSettings(out=out, format=fmt, shard_size=shard_size))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixworld")
    for name, n in SIZES.items():
        make_dataset(root, name, n, fmt="wds" if name == "c" else "jsonl")
    return root


def recipe(world: Path, body: str, name: str = "r.yaml") -> Path:
    path = world / name
    path.write_text(body)
    return path


WEIGHTED = """
name: t
seed: 7
size: 1000
sources:
  - {path: a, weight: 0.5}
  - {path: b, weight: 0.3}
  - {path: c, weight: 0.2}
"""


def ids(m: Mixture) -> list[str]:
    return [r.id for r in m]


def test_weights_are_realized_exactly_by_largest_remainder(world: Path) -> None:
    plan = make_plan(load_recipe(recipe(world, WEIGHTED.replace("size: 1000", "size: 999"))))
    # 999 × (.5, .3, .2) = 499.5, 299.7, 199.8 → floors 499, 299, 199 (997): the 2 left go to .8 and .7
    assert [s.count for s in plan.sources] == [499, 300, 200] and plan.total == 999


def test_same_recipe_gives_byte_identical_index(world: Path, tmp_path: Path) -> None:
    r = recipe(world, WEIGHTED)
    mix(r, tmp_path / "one")
    mix(r, tmp_path / "two")
    assert (tmp_path / "one" / INDEX).read_bytes() == (tmp_path / "two" / INDEX).read_bytes()
    other = recipe(world, WEIGHTED.replace("seed: 7", "seed: 8"), "r8.yaml")
    mix(other, tmp_path / "three")
    assert (tmp_path / "one" / INDEX).read_bytes() != (tmp_path / "three" / INDEX).read_bytes()


def test_each_pass_covers_the_source_once(world: Path, tmp_path: Path) -> None:
    mix(recipe(world, WEIGHTED), tmp_path / "m")
    index = np.load(tmp_path / "m" / INDEX)
    for d, (name, n) in enumerate(SIZES.items()):
        # the source's rows in mixture order are its passes back to back (the interleave keeps each source's order)
        rows = index["row"][index["dataset"] == d]
        full, rest = divmod(len(rows), n)
        for p in range(full):
            assert sorted(rows[p * n:(p + 1) * n].tolist()) == list(range(n)), (name, p)
        tail = rows[full * n:]
        assert len(set(tail.tolist())) == rest  # the last, partial pass has no duplicates either


def test_any_window_is_close_to_the_target_proportions(world: Path, tmp_path: Path) -> None:
    mix(recipe(world, WEIGHTED), tmp_path / "m")
    dataset = np.load(tmp_path / "m" / INDEX)["dataset"]
    for window in (10, 50, 200):
        for lo in range(0, 1000 - window, 7):
            counts = np.bincount(dataset[lo:lo + window], minlength=3)
            assert np.all(np.abs(counts - window * np.array([0.5, 0.3, 0.2])) <= 1.0 + 1e-9), (lo, window, counts)


def test_changing_one_weight_keeps_every_source_order(world: Path, tmp_path: Path) -> None:
    mix(recipe(world, WEIGHTED), tmp_path / "x")
    mix(recipe(world, WEIGHTED.replace("weight: 0.3", "weight: 0.6"), "r2.yaml"), tmp_path / "y")
    x, y = np.load(tmp_path / "x" / INDEX), np.load(tmp_path / "y" / INDEX)
    for d in range(3):
        rx, ry = x["row"][x["dataset"] == d], y["row"][y["dataset"] == d]
        k = min(len(rx), len(ry))
        assert np.array_equal(rx[:k], ry[:k])  # only how much of each source's stream is taken changes


def test_epochs_max_and_redistribution(world: Path) -> None:
    body = "seed: 0\nsize: 600\nsources:\n  - {path: a, weight: 1}\n  - {path: b, weight: 1, max: 100}\n" \
           "  - {path: c, epochs: 2.5}\n"
    plan = make_plan(load_recipe(recipe(world, body)))
    a, b, c = plan.sources
    assert c.count == 50 and c.epochs == 2.5 and c.passes == 3
    assert b.count == 100 and b.capped  # share 275 > max 100: held at max, the surplus goes to a
    assert a.count == 450 and plan.total == 600
    assert abs(sum(s.proportion for s in plan.sources) - 1) < 1e-12


def test_epochs_only_mixture(world: Path) -> None:
    plan = make_plan(load_recipe(recipe(world, "sources:\n  - {path: a, epochs: 1}\n  - {path: c, epochs: 3}\n")))
    assert [s.count for s in plan.sources] == [300, 60] and plan.total == 360


def test_plan_errors_and_warnings(world: Path) -> None:
    with pytest.raises(RecipeError, match=r"size: 10 is smaller than the 60 records"):
        make_plan(load_recipe(recipe(world, "size: 10\nsources:\n  - {path: a, weight: 1}\n"
                                            "  - {path: c, epochs: 3}\n")))
    plan = make_plan(load_recipe(recipe(world, "size: 10000\nsources:\n  - {path: a, weight: 1000}\n"
                                               "  - {path: c, weight: 1}\n")))
    warnings = "\n".join(plan.warnings)
    assert "a: repeated 33.3 times" in warnings and "c: only 0.10% of the mixture" in warnings
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(plan_table(plan))
    assert "weight 1000" in console.export_text()


def test_dry_run_writes_nothing(world: Path, tmp_path: Path) -> None:
    plan = mix(recipe(world, WEIGHTED), tmp_path / "dry", dry_run=True)
    assert plan.total == 1000 and not (tmp_path / "dry").exists()


def test_refuses_to_write_over_other_files(world: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="not a mixture"):
        mix(recipe(world, WEIGHTED), tmp_path / "busy")


def test_mixture_reads_like_a_dataset(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    plan = mix(recipe(world, WEIGHTED), out)
    m = mmdata.open(out)
    assert isinstance(m, Mixture) and len(m) == 1000 and [d.root.name for d in m.datasets] == ["a", "b", "c"]
    manifest = json.loads((out / MIXTURE).read_text())
    assert manifest["recipe_sha256"] == plan.recipe.sha256
    assert [s["count"] for s in manifest["sources"]] == [500, 300, 200]
    records = list(m)  # chunked iteration over JSONL (mmap) and wds (tar index) sources
    assert [r.id for r in records] == [m[i].id for i in range(len(m))] and m[-1].id == records[-1].id
    assert Counter(m.source_of(i) for i in range(len(m))) == {"a": 500, "b": 300, "c": 200}
    for i in (0, 1, 2, 3, 999):
        assert records[i].id.startswith(m.source_of(i))  # ids are "<name><n>@..."
        assert records[i] == m.get(i)[0] and m.get(i)[1] is m.datasets["abc".index(m.source_of(i))]
    assert m.raw(0) == m.datasets["abc".index(m.source_of(0))].raw(int(m.index[0]["row"]))
    frame = m.to_pandas(limit=20)
    assert len(frame) == 20 and list(frame["dataset"]) == [m.source_of(i) for i in range(20)]
    assert list(frame["id"]) == [r.id for r in records[:20]]
    with pytest.raises(IndexError, match="out of range"):
        m[1000]


def test_mixture_refuses_a_rebuilt_source(tmp_path: Path) -> None:
    make_dataset(tmp_path, "a", 10)
    mix(recipe(tmp_path, "sources:\n  - {path: a, epochs: 1}\n"), tmp_path / "m")
    manifest = tmp_path / "a" / "dataset.json"
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(ValueError, match="rebuilt after this mixture was made"):
        Mixture(tmp_path / "m")


def test_images_come_from_the_right_dataset(llava_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build("cambrian", CambrianOptions(input=[llava_world.jsonl], media_root=llava_world.media_root),
          BuildSettings(out=tmp_path / "img", format="jsonl"))
    build("cambrian", CambrianOptions(input=[llava_world.jsonl], media_root=llava_world.media_root),
          BuildSettings(out=tmp_path / "tar", format="wds"))
    mix(recipe(tmp_path, "sources:\n  - {path: img, epochs: 1}\n  - {path: tar, epochs: 1}\n"), tmp_path / "m")
    m = Mixture(tmp_path / "m")
    for i in range(len(m)):
        record, dataset = m.get(i)
        for j in range(len(record.media)):
            assert m.image(i, j).size == dataset.image(record, j).size == (record.media[j].width,
                                                                        record.media[j].height)
