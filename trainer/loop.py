"""The training loop, written once: `Trainer` owns everything a run does around its model; a trainer is a subclass
that says what it trains and how one micro-batch goes forward (`trainer.train.StageTrainer` for stage 1 and
stage 2, `trainer.visualizer.train.VisualizerTrainer` for the visualizer).

    recipe → process group, batch split, lr, resume decision, seeds → build()*: model/parts + data + loader
    → run directory (recipe.yaml, ds_config.json) → AdamW (`param_groups`) + warmup/cosine (lr_factor*)
    → deepspeed.initialize → [resume from the newest checkpoint (restore*)]
    → for each step: grad_accum micro-batches (forward*, backward, step; an all-skipped one runs on a fallback
      batch with loss × 0) → metrics row (micro_metrics*, step_metrics*) → finite check → after_step*
      → metrics.jsonl → every N steps and at the end a checkpoint (client_state*) → after_checkpoint*
    → summary* → export* → done line

(* = an override point.) Must override: `build`, `describe`, `no_full_step`, `forward`, `micro_metrics`,
`step_metrics`, `export`. May override: `lr_factor`, `client_state` / `restore` (extra checkpoint entries and their
check on resume), `collate_one` (the fallback batch), `resumed_message`, `after_step`, `after_checkpoint`,
`summary`, `done_message`. The step loop, the fallback, the finite check, checkpoints and metrics are not
overridden: they are what every trainer must do alike for resume and multi-rank runs to stay exact.

Run directory: recipe.yaml, ds_config.json, metrics.jsonl, tb/, skipped-rank{r}.jsonl, checkpoints/, export/ (what
export/ holds is the subclass's).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import yaml

from mmdata import MixtureLoader
from mmdata.core.errors import InputError, NotFound, UserError, writing
from trainer import checkpoint
from trainer.engine import cosine_schedule, ds_config, init_distributed, param_groups
from trainer.metrics import MetricsLogger
from trainer.recipe import RunRecipe

log = logging.getLogger("trainer")
RESUME_HINT = "free space (or make it writable) and rerun the same command: it resumes from the last checkpoint"
LOOP_SUMS = ("skipped", "micro_batches", "used")  # the loop's own per-step counts, beside a trainer's SUMS
R = TypeVar("R", bound=RunRecipe)


class NonFiniteLoss(UserError):
    """The loss or gradient norm became NaN/inf: the run stops before a checkpoint or export could keep it."""


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    steps: int
    global_batch: int
    summary: dict[str, Any] | None = None  # this invocation's throughput, padding and skips (stages: `summarize`)


@dataclass
class Parts:
    """What `Trainer.build` hands the loop."""

    module: torch.nn.Module  # what DeepSpeed trains: the optimizer gets its parameters with requires_grad
    data: Any  # the dataset `loader` reads (items: samples, or skips with a `reason`): the fallback's source
    loader: MixtureLoader  # this rank's batches of `data`, resumable (`state_dict`)
    collate: Callable[[list[Any]], dict[str, Any]]  # items → a batch with at least `ids` and `skipped`


class Trainer(ABC, Generic[R]):
    """One run of a recipe: `Trainer.run(recipe)`, or `trainer = Sub(recipe)` (the whole set-up, collective)
    then `trainer.train()`; benchmarks call `trainer.train_step()` directly.

    Batches are dicts with at least `ids` (the samples in it; empty when every item was skipped) and `skipped`
    (skip records with `id` and `reason`, logged to skipped-rank{r}.jsonl and counted)."""

    SUMS: ClassVar[tuple[str, ...]] = ()  # names of the per-step sums `micro_metrics` contributes (all-reduced)

    def __init__(self, recipe: R) -> None:
        self.recipe = recipe
        self.dist = d = init_distributed()
        self.run_dir = Path(recipe.output_dir)
        self.accum = recipe.batch.resolve(d.world_size)
        self.global_batch = recipe.batch.per_device * self.accum * d.world_size
        self.lr = recipe.optim.resolve_lr(self.global_batch)
        resume = should_resume(recipe, self.run_dir)
        seed_all(recipe.train.seed + d.rank)  # before build(): every rank builds the same initial weights
        if recipe.train.cpu_threads is not None:
            torch.set_num_threads(recipe.train.cpu_threads)

        parts = self.build()
        self.module, self.data, self.loader, self.collate = parts.module, parts.data, parts.loader, parts.collate
        self.steps_per_epoch = len(self.loader) // self.accum
        if self.steps_per_epoch == 0:
            raise InputError(self.no_full_step())
        self.total = recipe.train.max_steps or self.steps_per_epoch * recipe.train.epochs

        config = ds_config(recipe, self.accum, d.world_size)
        if d.main:
            write_run_files(self.run_dir, recipe, config)
            print(self.describe(), flush=True)
        self.engine, self.schedule = self._initialize(config)
        self.step = 0  # optimizer steps done
        if resume:
            self._resume()
        self.batches = micro_batches(self.loader, self.accum)
        self.fallback: dict[str, Any] | None = None  # the last good micro-batch of this rank
        self.skip_log = self.run_dir / f"skipped-rank{d.rank}.jsonl"
        self.skips: Counter[str] = Counter()  # why samples were skipped, by kind, on this rank
        self.engine.train()

    @classmethod
    def run(cls, recipe: R) -> RunResult:
        """Run (or resume) `recipe`; collective across all launched ranks. A full or read-only disk is one
        `StorageError` naming the path; checkpoints already written stay usable."""
        with writing(recipe.output_dir, RESUME_HINT):
            return cls(recipe).train()

    # ------------------------------------------------------------------ what a trainer must say
    @abstractmethod
    def build(self) -> Parts:
        """The model (or parts) and the data, after seeding and before DeepSpeed; keep what forward needs on self."""

    @abstractmethod
    def describe(self) -> str:
        """The start line rank 0 prints (self.total, steps_per_epoch, global_batch, lr are set by then)."""

    @abstractmethod
    def no_full_step(self) -> str:
        """The error when the data gives no full optimizer step at this global batch: what, and how to fix it."""

    @abstractmethod
    def forward(self, batch: dict[str, Any], micro: int) -> tuple[torch.Tensor, Any]:
        """One micro-batch (number `micro` of step `self.step`) through `self.engine`: (the loss to backpropagate,
        anything `micro_metrics` needs). `batch` may be the fallback batch, whose loss the loop multiplies by 0."""

    @abstractmethod
    def micro_metrics(self, batch: dict[str, Any], loss: torch.Tensor, aux: Any) -> dict[str, float]:
        """A good micro-batch's contributions to `SUMS` (summed over micro-batches and ranks)."""

    @abstractmethod
    def step_metrics(self, sums: dict[str, float], dt: float, grad_norm: float | None) -> dict[str, Any]:
        """The step's metrics row from the all-reduced sums (`SUMS` + `LOOP_SUMS`: skipped, micro_batches over all
        ranks, used = good micro-batches); the loop adds `step`, `epoch` and `lr`."""

    @abstractmethod
    def export(self) -> Path:
        """Collective: write `<run_dir>/export` from the trained module; returns its path."""

    # ------------------------------------------------------------------ what a trainer may change
    def lr_factor(self, total: int) -> Callable[[int], float]:
        """The schedule, a factor of the lr per step: linear warmup, then cosine to `optim.min_lr_ratio`."""
        o = self.recipe.optim
        return cosine_schedule(total, o.warmup_ratio, o.min_lr_ratio)

    def client_state(self) -> dict[str, Any]:
        """Entries saved with each checkpoint besides `step` and `loader`."""
        return {}

    def restore(self, client: dict[str, Any]) -> None:
        """On resume, before the loader moves: check (or restore) what `client_state` saved."""

    def collate_one(self, sample: Any) -> dict[str, Any]:
        """One usable sample as a batch (the fallback when this rank has not seen a good batch yet)."""
        return self.collate([sample])

    def resumed_message(self, client: dict[str, Any]) -> str:
        return f"[mmtrain] resumed from {self.run_dir / checkpoint.CHECKPOINTS / checkpoint.tag(self.step)} " \
               f"(step {self.step})"

    def after_step(self, row: dict[str, Any]) -> None:
        """Every rank, after each step's finite check and before its row is logged (entries added to `row` are
        logged with it) and before the step's checkpoint: the place for evaluation or trackers."""

    def after_checkpoint(self, path: Path) -> None:
        """Every rank, after the checkpoint of `self.step` was written to `path` (and older ones pruned)."""

    def summary(self, start_step: int, wall: float) -> dict[str, Any] | None:
        """Collective, after the last step: what this invocation did (`RunResult.summary`); None: nothing."""
        return None

    def done_message(self, out: Path, summary: dict[str, Any] | None) -> str:
        return f"[mmtrain] done: {self.step} steps; exported in {out}"

    # ------------------------------------------------------------------ the loop
    def train(self) -> RunResult:
        """Steps up to the total, checkpoints every `checkpoint.every` steps and at the end, then the export."""
        r, d = self.recipe, self.dist
        metrics = MetricsLogger(self.run_dir, total_steps=self.total, start_step=self.step, enabled=d.main,
                                tensorboard=r.logging.tensorboard, progress=r.logging.progress)
        start_step, t_start = self.step, time.perf_counter()
        try:
            while self.step < self.total:
                row = self.train_step()
                check_finite(row, self.step, self.run_dir)
                self.after_step(row)
                metrics.log(row)
                if self.step % r.checkpoint.every == 0 or self.step == self.total:
                    self.save_checkpoint()
        finally:
            metrics.close()
        summary = self.summary(start_step, time.perf_counter() - t_start)
        out = self.export()
        if d.main:
            print(self.done_message(out, summary), flush=True)
        return RunResult(self.run_dir, out, self.step, self.global_batch, summary)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step = `accum` micro-batches through the engine (DeepSpeed steps the optimizer and the
        schedule at the boundary); advances `self.step` and returns the step's metrics row.

        An all-skipped micro-batch still runs forward/backward (on a fallback batch, loss × 0): every rank must take
        part in the same collectives, and gradient accumulation must stay aligned with DeepSpeed's micro-step count.
        """
        lr = self.schedule.get_last_lr()[0]  # the lr this step uses; the engine advances the schedule
        t0 = time.perf_counter()
        sums = dict.fromkeys((*self.SUMS, *LOOP_SUMS), 0.0)
        for micro in range(self.accum):
            batch = next(self.batches)
            self._note_skips(batch["skipped"])
            empty = not batch["ids"]
            if not empty:
                self.fallback = batch
            loss, aux = self.forward(self._fallback() if empty else batch, micro)
            self.engine.backward(loss * 0.0 if empty else loss)
            self.engine.step()
            sums["skipped"] += len(batch["skipped"])
            if not empty:
                for k, v in self.micro_metrics(batch, loss, aux).items():
                    sums[k] += v
                sums["used"] += 1
        sums["micro_batches"] = float(self.accum)
        if self.dist.world_size > 1:
            both = torch.tensor(list(sums.values()), dtype=torch.float64)
            dist.all_reduce(both)
            sums = dict(zip(sums, both.tolist()))
        dt = time.perf_counter() - t0
        grad_norm = self.engine.get_global_grad_norm()
        self.step += 1
        row = self.step_metrics(sums, dt, None if grad_norm is None else float(grad_norm))
        return row | {"step": self.step, "epoch": self.loader.state_dict()["epoch"], "lr": lr}

    def save_checkpoint(self) -> Path:
        """Collective: the engine's state, the loader's position, the step, RNG and `client_state()`."""
        state = {"step": self.step, "loader": self.loader.state_dict()} | self.client_state()
        path = checkpoint.save(self.engine, self.run_dir, self.step, state, rank=self.dist.rank,
                               keep=self.recipe.checkpoint.keep)
        self.after_checkpoint(path)
        return path

    def skip_kinds(self) -> Counter[str]:
        """Skip counts by kind (`skip_kind`), summed over ranks (collective)."""
        if self.dist.world_size == 1:
            return self.skips
        parts: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(parts, self.skips)
        return sum(parts, Counter())

    # ------------------------------------------------------------------ internals
    def _initialize(self, config: dict[str, Any]) -> tuple[Any, Any]:
        import deepspeed

        o = self.recipe.optim
        optimizer = torch.optim.AdamW(param_groups(self.module, o.weight_decay), lr=self.lr, betas=tuple(o.betas),
                                      eps=o.eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor(self.total))
        engine, _, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer, lr_scheduler=schedule,
                                               config=config)
        if self.dist.world_size == 1 and self.recipe.train.zero_stage == 0:
            # One process, no partitioning: DeepSpeed would still flatten, "all-reduce" and copy back every gradient
            # (~15 % of a tiny step). With ZeRO >= 1 the same hook moves gradients into the optimizer's partitions.
            engine.enable_backward_allreduce = False
        return engine, schedule

    def _resume(self) -> None:
        client = checkpoint.load(self.engine, self.run_dir, rank=self.dist.rank)
        self.step = int(client["step"])
        self.restore(client)
        self.loader.load_state_dict(client["loader"])
        if self.dist.main:
            print(self.resumed_message(client), flush=True)

    def _note_skips(self, skipped: list[Any]) -> None:
        log_skips(self.skip_log, self.dist.rank, skipped)
        self.skips.update(skip_kind(s.reason) for s in skipped)

    def _fallback(self) -> dict[str, Any]:
        if self.fallback is None:  # no good batch seen yet on this rank: the first usable sample of the data
            good = next((s for s in (self.data[i] for i in range(len(self.data))) if not hasattr(s, "reason")), None)
            if good is None:
                raise InputError(f"every sample of the training data was skipped; see {self.run_dir}/"
                                 "skipped-rank*.jsonl for why")
            self.fallback = self.collate_one(good)
        return self.fallback


def write_run_files(run_dir: Path, recipe: RunRecipe, config: dict[str, Any]) -> None:
    """recipe.yaml (the validated recipe, overrides applied) and ds_config.json; rank 0 only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    (run_dir / "ds_config.json").write_text(json.dumps(config, indent=2))


def micro_batches(loader: MixtureLoader, accum: int) -> Iterator[Any]:
    """The loader's batches across epochs, whole optimizer steps only: a partial step at an epoch's end is dropped."""
    while True:
        usable = len(loader) // accum * accum
        it = iter(loader)
        for _ in range(usable):
            yield next(it)
        del it
        loader.set_epoch(loader.state_dict()["epoch"] + 1)


def log_skips(path: Path, rank: int, skipped: list[Any]) -> None:
    """Append a batch's skipped samples (dataclasses: index/id, reason) to `path` and warn once for the batch."""
    if skipped:
        with path.open("a") as f:
            for s in skipped:
                f.write(json.dumps(dataclasses.asdict(s)) + "\n")
        log.warning("rank %d: skipped %d sample(s), e.g. %s: %s", rank, len(skipped), skipped[0].id,
                    skipped[0].reason)


def skip_kind(reason: str) -> str:
    """'labels: …' → 'labels'; 'image 0 (a.jpg): OSError: …' → 'image: OSError'; 'media[0] (a.jpg): OSError: …'
    → 'media: OSError'; 'features: KeyError: …' → 'features: KeyError'. Kinds, not files: a summary stays short."""
    head, _, rest = reason.partition(": ")
    if head.startswith(("image", "media")):
        return f"{head.split(' ', 1)[0].split('[', 1)[0]}: {rest.split(':', 1)[0]}"
    if head == "features":
        return f"features: {rest.split(':', 1)[0]}"
    return head


def check_finite(row: dict[str, Any], step: int, run_dir: Path) -> None:
    """NaN/inf weights must never reach a checkpoint or the export. Every rank sees the same all-reduced loss."""
    bad = {k: row[k] for k in ("loss", "grad_norm") if row[k] is not None and not math.isfinite(row[k])}
    if bad:
        last = checkpoint.latest_tag(run_dir)
        raise NonFiniteLoss(
            f"step {step}: {', '.join(f'{k} is {v}' for k, v in bad.items())}; training stopped, nothing of this "
            f"step was saved (last checkpoint: {last or 'none'}). Lower optim.lr, set optim.grad_clip, or check "
            "the data; then rerun (it resumes from the last checkpoint)")


def should_resume(recipe: RunRecipe, run_dir: Path) -> bool:
    has = checkpoint.latest_tag(run_dir) is not None
    if recipe.checkpoint.resume is True and not has:
        raise NotFound(f"--resume: {run_dir / checkpoint.CHECKPOINTS} holds no checkpoint; run without "
                       "--resume (or set checkpoint.resume: auto)")
    if recipe.checkpoint.resume is False and has:
        raise InputError(f"{run_dir} already holds checkpoints; pass --resume to continue it, or choose another "
                         "--output_dir")
    return has


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
