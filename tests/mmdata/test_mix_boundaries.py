"""Pins mixture planning at its boundaries (`mmdata.mix`, `mmdata.recipe`), before a refactoring moves the code.

What is pinned, with exact values computed from the current code:
- `epochs` counts round half up (x.5 goes up, below .5 goes down), and `max` caps an `epochs` source (`capped`);
- largest-remainder ties go to the earlier source;
- water-filling: a weighted source over its `max` is held at it, the surplus shared again (over several rounds);
- the warnings, word for word, on each side of their thresholds (every source at max, repeats, small shares);
- rows: every pass of a source is a fresh permutation, and the permutation is keyed by the source's name;
- golden plans: realised counts and the whole (dataset, row) index of a fixed recipe and seed, and the merge by
  "time" (k + ½) / count with ties going to the earlier source.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.mix.planner import INDEX, MixPlan, build_index, make_plan, mix, source_rows
from mmdata.mix.recipe import RecipeError, load_recipe

SIZES = {"a": 5, "b": 5, "c": 3}
REPEAT = "; lower its weight or accept the risk of over-fitting it"


def _make_dataset(root: Path, name: str, n: int) -> None:
    src = root / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"id": f"{name}{i}", "conversations": [
        {"from": "human", "value": f"question {i} of {name}"}, {"from": "gpt", "value": f"answer {i}"}]}) + "\n"
        for i in range(n)))
    build("cambrian", CambrianOptions(input=[src], media_root=None), BuildSettings(out=root / name, format="jsonl"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixpins")
    for name, n in SIZES.items():
        _make_dataset(root, name, n)
    return root


_counter = iter(range(10**6))


def _plan(world: Path, body: str) -> MixPlan:
    path = world / f"recipe{next(_counter)}.yaml"
    path.write_text(body)
    return make_plan(load_recipe(path))


def _sources(*lines: str) -> str:
    return "sources:\n" + "".join(f"  - {line}\n" for line in lines)


def _pairs(index: np.ndarray) -> list[tuple[int, int]]:
    return [(int(d), int(r)) for d, r in zip(index["dataset"], index["row"])]


# ---------------------------------------------------------------- epochs: rounding half up, and max
def test_fractional_epochs_round_half_up(world: Path) -> None:
    plan = _plan(world, _sources(
        "{path: a, name: a15, epochs: 1.5}",  # 7.5 → 8 (floor: 7)
        "{path: a, name: a05, epochs: 0.5}",  # 2.5 → 3 (floor, and banker's rounding: 2)
        "{path: a, name: a25, epochs: 2.5}",  # 12.5 → 13 (banker's rounding: 12)
        "{path: c, name: c05, epochs: 0.5}",  # 1.5 → 2
        "{path: c, name: c25, epochs: 2.5}",  # 7.5 → 8
        "{path: a, name: a025, epochs: 0.25}",  # 1.25 → 1 (ceiling: 2)
        "{path: a, name: a075, epochs: 0.75}",  # 3.75 → 4 (floor: 3)
        "{path: c, name: c1, epochs: 1}",  # 3 exactly
    ))
    assert [s.count for s in plan.sources] == [8, 3, 13, 2, 8, 1, 4, 3]
    assert plan.total == 42
    assert [s.target for s in plan.sources] == [7.5, 2.5, 12.5, 1.5, 7.5, 1.25, 3.75, 3.0]
    assert [s.epochs for s in plan.sources] == [8 / 5, 3 / 5, 13 / 5, 2 / 3, 8 / 3, 1 / 5, 4 / 5, 1.0]
    assert [s.passes for s in plan.sources] == [2, 1, 3, 1, 3, 1, 1, 1]
    assert not any(s.capped for s in plan.sources)


def test_max_caps_an_epochs_source(world: Path) -> None:
    plan = _plan(world, "size: 20\n" + _sources(
        "{path: a, epochs: 2, max: 7}",  # 10 > 7: held at 7
        "{path: c, epochs: 2, max: 6}",  # 6 == max: not capped
        "{path: b, weight: 1}",  # takes the rest of size: 20 - 7 - 6
    ))
    a, c, b = plan.sources
    assert (a.count, a.capped, a.target) == (7, True, 10.0)  # target: requested before caps
    assert (c.count, c.capped, c.target) == (6, False, 6.0)
    assert (b.count, b.capped) == (7, False)
    assert plan.total == 20 and plan.warnings == []
    assert [s.max for s in plan.manifest().sources] == [7, 6, None]
    assert [s.capped for s in plan.manifest().sources] == [True, False, False]


def test_a_capped_epochs_source_counts_capped_against_size(world: Path) -> None:
    with pytest.raises(RecipeError, match=r"size: 12 is smaller than the 13 records that the `epochs` sources take"):
        _plan(world, "size: 12\n" + _sources("{path: a, epochs: 2, max: 7}", "{path: c, epochs: 2, max: 6}",
                                             "{path: b, weight: 1}"))


# ---------------------------------------------------------------- weights: largest remainder, water-filling
@pytest.mark.parametrize(("size", "weights", "counts"), [
    (10, (1, 1, 1), [4, 3, 3]),  # one record left, three equal remainders: the first source
    (11, (1, 1, 1), [4, 4, 3]),  # two left: the first two
    (6, (1, 2, 1), [2, 3, 1]),  # 1.5, 3, 1.5: the tie between the first and the last goes to the first
    (10, (3, 4), [4, 6]),  # 4.29, 5.71: a larger remainder beats an earlier source
])
def test_largest_remainder_ties_go_to_the_earlier_source(world: Path, size: int, weights: tuple[int, ...],
                                                         counts: list[int]) -> None:
    names = ["a", "b", "c"]
    plan = _plan(world, f"size: {size}\n" + _sources(*(f"{{path: {names[i]}, weight: {w}}}"
                                                       for i, w in enumerate(weights))))
    assert [s.count for s in plan.sources] == counts and plan.total == size


def test_water_filling_holds_capped_sources_and_shares_the_surplus_over_rounds(world: Path) -> None:
    plan = _plan(world, "size: 100\n" + _sources(
        "{path: a, weight: 2, max: 40}",  # round 1: 50 > 40
        "{path: b, weight: 1, max: 28}",  # round 1: 25; round 2: 60 / 2 = 30 > 28
        "{path: c, weight: 1}",  # round 3: what is left, 32
    ))
    assert [s.count for s in plan.sources] == [40, 28, 32]
    assert [s.capped for s in plan.sources] == [True, True, False]
    assert [s.target for s in plan.sources] == [50.0, 30.0, 32.0]  # each source's quota in the round it settled
    assert plan.warnings == [f"a: repeated 8.0 times (40 records from 5){REPEAT}",
                             f"b: repeated 5.6 times (28 records from 5){REPEAT}",
                             f"c: repeated 10.7 times (32 records from 3){REPEAT}"]


def test_a_share_equal_to_max_is_not_capped(world: Path) -> None:
    plan = _plan(world, "size: 10\n" + _sources("{path: a, weight: 1, max: 5}", "{path: b, weight: 1}"))
    assert [(s.count, s.capped) for s in plan.sources] == [(5, False), (5, False)]


# ---------------------------------------------------------------- warnings, word for word
def test_every_weighted_source_at_its_max_is_warned(world: Path) -> None:
    plan = _plan(world, "size: 100\n" + _sources(
        "{path: a, weight: 1, max: 10}", "{path: b, weight: 3, max: 20}", "{path: c, epochs: 2}"))
    assert [(s.count, s.capped) for s in plan.sources] == [(10, True), (20, True), (6, False)]
    assert plan.total == 36
    # b is repeated exactly 4.0 times: at the threshold, not above it, so no repeat warning
    assert plan.warnings == ["every weighted source is at its max: the mixture has 36 records, not size 100"]
    assert plan.manifest().warnings == plan.warnings


def test_weighted_sources_exactly_at_their_max_filling_size_are_not_warned(world: Path) -> None:
    plan = _plan(world, "size: 30\n" + _sources("{path: a, weight: 1, max: 10}", "{path: b, weight: 2, max: 20}"))
    assert [(s.count, s.capped) for s in plan.sources] == [(10, False), (20, False)]
    assert plan.warnings == []


@pytest.mark.parametrize(("size", "weights", "counts", "warnings"), [
    (25, (4, 1), [20, 5], []),  # a: exactly 4.0 epochs
    (26, (4, 1), [21, 5], [f"a: repeated 4.2 times (21 records from 5){REPEAT}"]),
    (100, (99, 1), [99, 1], [f"a: repeated 19.8 times (99 records from 5){REPEAT}"]),  # b: exactly 1.00%
    (101, (100, 1), [100, 1], [f"a: repeated 20.0 times (100 records from 5){REPEAT}",
                               "b: only 0.99% of the mixture (1 records)"]),
])
def test_repeat_and_small_share_warnings_at_their_thresholds(world: Path, size: int, weights: tuple[int, int],
                                                             counts: list[int], warnings: list[str]) -> None:
    plan = _plan(world, f"size: {size}\n" + _sources(f"{{path: a, weight: {weights[0]}}}",
                                                     f"{{path: b, weight: {weights[1]}}}"))
    assert [s.count for s in plan.sources] == counts
    assert plan.warnings == warnings


# ---------------------------------------------------------------- which rows
A_SEED3 = [1, 4, 3, 0, 2, 4, 0, 1, 2, 3, 0, 3, 4, 1, 2]  # source "a", 5 rows, seed 3: three passes
B_SEED3 = [0, 4, 2, 1, 3, 1, 3, 4, 0, 2, 2, 4, 3, 1, 0]


def test_source_rows_are_pinned() -> None:
    assert source_rows(3, "a", 5, 15).tolist() == A_SEED3
    assert source_rows(3, "b", 5, 15).tolist() == B_SEED3
    assert source_rows(3, "a", 5, 7).tolist() == A_SEED3[:7]  # a count is a prefix of the endless stream
    empty = source_rows(3, "a", 5, 0)
    assert empty.tolist() == [] and empty.dtype == np.dtype("<u8")


def test_each_pass_is_a_fresh_permutation() -> None:
    for n, name in ((5, "a"), (50, "long")):
        rows = source_rows(11, name, n, 3 * n).tolist()
        passes = [rows[p * n:(p + 1) * n] for p in range(3)]
        for p in passes:
            assert sorted(p) == list(range(n))  # every row once per pass
        assert passes[0] != passes[1] and passes[1] != passes[2] and passes[0] != passes[2]


def test_passes_in_a_plan_are_fresh_permutations(world: Path) -> None:
    plan = _plan(world, "seed: 3\n" + _sources("{path: a, epochs: 3}"))
    rows = build_index(plan)["row"].tolist()
    assert rows == A_SEED3
    assert sorted(rows[5:10]) == list(range(5)) and rows[5:10] != rows[:5]


def test_sources_of_the_same_length_have_different_orders(world: Path) -> None:
    plan = _plan(world, "seed: 3\n" + _sources("{path: a, epochs: 1}", "{path: b, epochs: 1}"))
    index = build_index(plan)
    a, b = index["row"][index["dataset"] == 0].tolist(), index["row"][index["dataset"] == 1].tolist()
    assert a == A_SEED3[:5] and b == B_SEED3[:5] and a != b


def test_the_permutation_is_keyed_by_the_source_name_not_its_path(world: Path) -> None:
    # One dataset under two names: two orders.
    twice = build_index(_plan(world, "seed: 3\n" + _sources("{path: a, name: x, epochs: 1}",
                                                            "{path: a, name: y, epochs: 1}")))
    x, y = twice["row"][twice["dataset"] == 0].tolist(), twice["row"][twice["dataset"] == 1].tolist()
    assert sorted(x) == sorted(y) == list(range(5)) and x != y
    # The name "b" over dataset a takes the order "b" has over dataset b.
    renamed = build_index(_plan(world, "seed: 3\n" + _sources("{path: a, name: b, epochs: 1}")))
    assert renamed["row"].tolist() == B_SEED3[:5]
    # and the seed matters
    assert build_index(_plan(world, "seed: 4\n" + _sources("{path: a, epochs: 1}")))["row"].tolist() != A_SEED3[:5]


# ---------------------------------------------------------------- golden plans and the merge by time
GOLDEN = "seed: 3\nsize: 20\n" + _sources("{path: a, weight: 2}", "{path: b, weight: 1}", "{path: c, epochs: 1.5}")
GOLDEN_INDEX = [(0, 1), (1, 0), (2, 0), (0, 4), (0, 3), (1, 4), (2, 2), (0, 0), (0, 2), (1, 2), (2, 1), (0, 4),
                (0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 3), (2, 0), (0, 3)]


def test_golden_plan(world: Path, tmp_path: Path) -> None:
    recipe = world / "golden.yaml"
    recipe.write_text(GOLDEN)
    plan = mix(recipe, tmp_path / "m")
    assert [(s.name, s.mode, s.count) for s in plan.sources] == [("a", "weight", 10), ("b", "weight", 5),
                                                                  ("c", "epochs", 5)]
    assert [s.target for s in plan.sources] == [10.0, 5.0, 4.5] and plan.total == 20 and plan.warnings == []
    index = np.load(tmp_path / "m" / INDEX)
    # a at .05, .15, ...; b and c at .1, .3, ...: b and c tie, and b (the earlier source) comes first
    assert _pairs(index)[:12] == GOLDEN_INDEX[:12]
    assert _pairs(index) == GOLDEN_INDEX


@pytest.mark.parametrize(("size", "weights", "datasets"), [
    (4, (1, 3), [1, 0, 1, 1]),  # a at ½; b at ⅙, ½, ⅚: the tie at ½ goes to a
    (4, (3, 1), [0, 0, 1, 0]),  # a at ⅙, ½, ⅚; b at ½
    (6, (1, 1, 1), [0, 1, 2] * 2),
    (5, (2, 3), [1, 0, 1, 0, 1]),  # a at ¼, ¾; b at ⅙, ½, ⅚
])
def test_merge_by_time_with_ties_to_the_earlier_source(world: Path, size: int, weights: tuple[int, ...],
                                                       datasets: list[int]) -> None:
    names = ["a", "b", "c"]
    plan = _plan(world, f"size: {size}\n" + _sources(*(f"{{path: {names[i]}, weight: {w}}}"
                                                       for i, w in enumerate(weights))))
    assert build_index(plan)["dataset"].tolist() == datasets


def test_many_ties_keep_source_order(world: Path) -> None:
    plan = _plan(world, "size: 600\n" + _sources("{path: a, weight: 1}", "{path: b, weight: 1}",
                                                 "{path: c, weight: 1}"))
    index = build_index(plan)
    assert index["dataset"].tolist() == [0, 1, 2] * 200
    # each source's rows keep their stream order through the merge
    for d, name in enumerate("abc"):
        assert np.array_equal(index["row"][index["dataset"] == d], source_rows(0, name, SIZES[name], 200))
