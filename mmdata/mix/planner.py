"""`mmdata mix recipe.yaml`: resolve a recipe into a mixture (manifest + index of (dataset, row) pairs).

How counts are realized, exactly and without coin flips:
- an `epochs: e` source contributes round(e × len) records (capped by `max`);
- weighted sources share `size` minus those, in proportion to their weights, by largest-remainder rounding; a
  source whose share exceeds its `max` is held at `max` and the surplus goes to the others (water-filling).
Which rows: pass p of a source is a fresh permutation of its rows drawn from (seed, source name, p), so a pass
never repeats a row and a source's row sequence does not depend on any other source: changing one weight changes
the other sources' counts (the prefix they take), never their order.
Where in the order: the k-th record of a source sits at "time" (k + ½) / count and all sources are merged by time,
so any window of the mixture holds each source within about one record of its target share.

Only the manifests of the datasets are read: mixing is O(total records) integer work and never opens a record.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mmdata.core.errors import writing
from mmdata.core.schema import Record
from mmdata.format.manifests import INDEX_DTYPE, MIXTURE_VERSION, MixtureManifest, MixtureSource
from mmdata.format.names import INDEX, MIXTURE
from mmdata.format.views import WRITE_HINT, write_index
from mmdata.mix.filters import Filters
from mmdata.mix.recipe import MixRecipe, RecipeError, SourceSpec, load_recipe
from mmdata.read.view import manifest_sha256, open_any
from mmdata.storage.location import Location, as_location, relative
from mmdata.storage.output import Destination, open_destination

REPEAT_WARNING = 4.0  # effective epochs above which a source is flagged as likely over-fit


SMALL_WARNING = 0.01  # proportion under which a source is flagged as probably negligible


@dataclass
class SourcePlan:
    name: str
    path: Location
    length: int  # records in the dataset
    mode: str  # "weight" | "epochs"
    requested: float  # the recipe's weight or epochs
    cap: int | None
    target: float  # requested count before rounding and caps
    count: int = 0  # realized records in the mixture
    proportion: float = 0.0  # count / mixture total
    target_proportion: float = 0.0
    capped: bool = False
    dataset_sha256: str = ""
    available: int = 0  # records in the source before filters
    filtered: dict[str, int] = field(default_factory=dict)  # filter → records it fails (one may fail several)
    rows: np.ndarray | None = None  # the rows that pass the filters (None: every row)

    @property
    def epochs(self) -> float:
        return self.count / self.length

    @property
    def passes(self) -> int:
        return math.ceil(self.count / self.length)


@dataclass
class MixPlan:
    recipe: MixRecipe
    sources: list[SourcePlan]
    total: int
    out: Location | None
    warnings: list[str] = field(default_factory=list)

    def manifest(self) -> MixtureManifest:
        return MixtureManifest(
            version=MIXTURE_VERSION, name=self.recipe.name, recipe=self.recipe.data,
            recipe_file=str(self.recipe.file), recipe_sha256=self.recipe.sha256, seed=self.recipe.seed,
            total=self.total, index=INDEX,
            sources=[MixtureSource(
                name=s.name, path=relative(s.path, self.out) if self.out is not None else str(s.path),
                abs_path=str(s.path), length=s.length, dataset_sha256=s.dataset_sha256, mode=s.mode,
                requested=s.requested, max=s.cap, requested_count=s.target,
                requested_proportion=s.target_proportion, count=s.count, proportion=s.proportion,
                epochs=s.epochs, capped=s.capped, available=s.available, filtered=s.filtered)
                for s in self.sources],
            warnings=self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self.manifest())


def default_out(recipe: MixRecipe) -> Path:
    """Where `mmdata mix` writes without `--out`: `mixtures/<recipe name>` under the current directory."""
    return Path("mixtures") / recipe.name


def mix(recipe_path: Path, out: Location | None = None, dry_run: bool = False,
        storage_options: dict[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> MixPlan:
    """Plan the mixture of `recipe_path` (with `overrides` of its keys, see `load_recipe`) and, unless `dry_run`,
    write `out/mixture.json` + `out/index.npy`. `out` and the recipe's source paths may be URLs; `storage_options`
    (credentials) stay in memory."""
    recipe = load_recipe(recipe_path, overrides=overrides, storage_options=storage_options)
    target = None if dry_run else as_location(out) if out is not None else default_out(recipe)
    plan = make_plan(recipe, target, storage_options)
    if target is not None:
        write_mixture(plan, build_index(plan), open_destination(target, storage_options))
    return plan


def make_plan(recipe: MixRecipe, out: Location | None = None,
              storage_options: dict[str, Any] | None = None) -> MixPlan:
    sources = [_source_plan(s, i, recipe, storage_options) for i, s in enumerate(recipe.sources)]
    fixed = 0
    for s in sources:
        if s.mode == "epochs":
            s.count = _round_half_up(Fraction(s.requested) * s.length)
            if s.cap is not None and s.count > s.cap:
                s.count, s.capped = s.cap, True
            fixed += s.count
    weighted = [s for s in sources if s.mode == "weight"]
    warnings: list[str] = []
    if recipe.size is not None:
        if recipe.size < fixed:
            raise RecipeError(f"{recipe.file}: size: {recipe.size} is smaller than the {fixed} records that the "
                              "`epochs` sources take; raise size or lower their epochs")
        _share(weighted, recipe.size - fixed)
        if sum(s.count for s in weighted) < recipe.size - fixed:
            warnings.append(f"every weighted source is at its max: the mixture has "
                            f"{fixed + sum(s.count for s in weighted)} records, not size {recipe.size}")
    total = sum(s.count for s in sources)
    if total == 0:
        raise RecipeError(f"{recipe.file}: the recipe selects no records; raise size or epochs")
    weight_sum = sum(s.requested for s in weighted)
    for s in sources:
        s.proportion = s.count / total
        if s.mode == "epochs":
            s.target = float(s.requested * s.length)
            s.target_proportion = s.target / total
        else:
            s.target_proportion = (recipe.size - fixed) / (recipe.size or 1) * s.requested / weight_sum
        if s.epochs > REPEAT_WARNING:
            warnings.append(f"{s.name}: repeated {s.epochs:.1f} times ({s.count} records from {s.length}); "
                            "lower its weight or accept the risk of over-fitting it")
        if s.proportion < SMALL_WARNING:
            warnings.append(f"{s.name}: only {s.proportion:.2%} of the mixture ({s.count} records)")
    return MixPlan(recipe=recipe, sources=sources, total=total, out=out, warnings=warnings)


def _source_plan(spec: SourceSpec, i: int, recipe: MixRecipe, storage_options: dict[str, Any] | None) -> SourcePlan:
    # a dataset or a view: only its manifest is read, unless filters must look
    source = open_any(spec.path, storage_options=storage_options)
    available = length = len(source)
    if length == 0:
        raise RecipeError(f"{recipe.file}: sources[{i}].path: {spec.path} holds no records; remove it or rebuild it")
    filters = spec.filters.over(recipe.filters) if spec.filters is not None else recipe.filters
    rows, filtered = apply_filters(source, filters) if filters is not None else (None, {})
    if rows is not None:
        length = len(rows)
        if length == 0:
            raise RecipeError(f"{recipe.file}: sources[{i}]: the filters keep no record of {spec.path} "
                              f"(failed: {filtered}); loosen them")
    mode, requested = ("weight", spec.weight) if spec.weight is not None else ("epochs", spec.epochs)
    assert requested is not None
    return SourcePlan(name=spec.name, path=spec.path, length=length, mode=mode, requested=requested, cap=spec.max,
                      target=0.0, dataset_sha256=manifest_sha256(spec.path, storage_options), available=available,
                      filtered=filtered, rows=rows)


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def _share(weighted: list[SourcePlan], budget: int) -> None:
    """Split `budget` records among `weighted` by weight, exactly (largest remainder), honouring `max` caps."""
    active = list(weighted)
    while True:
        wsum = sum(Fraction(s.requested) for s in active)
        quotas = {id(s): budget * Fraction(s.requested) / wsum for s in active} if active else {}
        over = [s for s in active if s.cap is not None and quotas[id(s)] > s.cap]
        for s in active:
            s.target = float(quotas[id(s)])
        if not over:
            break
        for s in over:
            s.count, s.capped = s.cap or 0, True
            budget -= s.count
            active.remove(s)
    floors = {id(s): math.floor(quotas[id(s)]) for s in active}
    left = budget - sum(floors.values())
    # Ties go to the earlier source, so the result depends on nothing but the recipe.
    by_remainder = sorted(range(len(active)), key=lambda k: (-(quotas[id(active[k])] - floors[id(active[k])]), k))
    for s in active:
        s.count = floors[id(s)]
    for k in by_remainder[:left]:
        active[k].count += 1


# ---------------------------------------------------------------- the index
def source_rows(seed: int, name: str, length: int, count: int) -> np.ndarray:
    """The first `count` rows of a source's endless stream: pass after pass, each a fresh permutation."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    passes = [np.random.Generator(np.random.PCG64([seed, key, p])).permutation(length)
              for p in range(math.ceil(count / length))]
    rows = np.concatenate(passes) if passes else np.zeros(0, dtype=np.int64)
    return rows[:count].astype("<u8")


def _rows(seed: int, s: SourcePlan) -> np.ndarray:
    """A source's rows in mixture order: its stream over the rows that pass its filters."""
    rows = source_rows(seed, s.name, s.length, s.count)
    return rows if s.rows is None else s.rows[rows.astype(np.int64)].astype("<u8")


def apply_filters(source: Sequence[Record], filters: Filters) -> tuple[np.ndarray | None, dict[str, int]]:
    """(rows that pass every filter, filter → records it fails); (None, {}) when no filter is set."""
    checks = filters.checks()
    if not checks:
        return None, {}
    failed = dict.fromkeys((name for name, _ in checks), 0)
    keep = np.ones(len(source), dtype=bool)
    for row, record in enumerate(source):
        for name, passes in checks:
            if not passes(record):
                failed[name] += 1
                keep[row] = False
    return np.flatnonzero(keep), failed


def build_index(plan: MixPlan) -> np.ndarray:
    """The mixture order: a packed array of (dataset, row), sources merged by their ideal "time" (k + ½) / count."""
    counts = [s.count for s in plan.sources]
    times = np.concatenate([(np.arange(c, dtype=np.float64) + 0.5) / c for c in counts if c > 0])
    order = np.argsort(times, kind="stable")  # stable: equal times go to the earlier source, deterministically
    del times
    index = np.empty(plan.total, dtype=INDEX_DTYPE)
    index["dataset"] = np.repeat(np.arange(len(counts), dtype="<u4"), counts)[order]
    rows = np.concatenate([_rows(plan.recipe.seed, s) for s in plan.sources])
    index["row"] = rows[order]
    return index


def write_mixture(plan: MixPlan, index: np.ndarray, dest: Destination) -> None:
    """Write the index, then the manifest (`mixture.json` exists only for a complete mixture). A mixture already at
    `dest` is replaced only once the new one is complete (`Destination.replace`: on a local folder, built beside it
    and swapped in): a killed or disk-full re-mix leaves the previous mixture readable, and the same command then
    starts again."""
    with writing(dest.where(), WRITE_HINT), dest.exclusive("mmdata mix", MIXTURE):
        if not dest.holds_only((INDEX, MIXTURE)) and not dest.storage.exists(MIXTURE):
            raise RecipeError(f"{dest.where()}: output holds files that are not a mixture; choose another --out")
        if not dest.storage.empty():
            dest.replace()
        plan.out = dest.location
        write_index(dest.storage, index)
        dest.storage.write_bytes(MIXTURE, orjson.dumps(plan.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        dest.commit()


def plan_table(plan: MixPlan) -> Any:
    """The plan as a `rich` table: one row per source, requested vs realized."""
    from rich.table import Table

    table = Table(title=f"mixture {plan.recipe.name!r}: {plan.total:,} records, seed {plan.recipe.seed}")
    filtering = any(s.rows is not None for s in plan.sources)
    columns = ("source", "records", *(("filtered out",) if filtering else ()), "asked", "requested", "realized",
               "share", "target share", "epochs")
    for col in columns:
        table.add_column(col, justify="left" if col in ("source", "filtered out") else "right")
    for s in plan.sources:
        asked = f"weight {s.requested:g}" if s.mode == "weight" else f"epochs {s.requested:g}"
        if s.cap is not None:
            asked += f", max {s.cap:,}" + (" (hit)" if s.capped else "")
        dropped = (f"{s.available - s.length:,} of {s.available:,}: " +
                   ", ".join(f"{name} {n:,}" for name, n in s.filtered.items()),) if filtering else ()
        table.add_row(s.name, f"{s.length:,}", *dropped, asked, f"{s.target:,.1f}", f"{s.count:,}",
                      f"{s.proportion:.2%}", f"{s.target_proportion:.2%}", f"{s.epochs:.2f}")
    return table
