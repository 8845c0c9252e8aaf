"""The training loop: one explicit loop over the DeepSpeed engine, the same for stage 1 and stage 2.

    recipe → process group → model (build / load, stage parts, LoRA) → mixture → loader → AdamW + cosine
    → deepspeed.initialize → [resume] → for each step: grad_accum micro-batches (forward, backward, step)
    → metrics → every N steps a checkpoint → final checkpoint → export/

A stage is data (`TrainRecipe.stage_config`: what trains, whether the vision loss is on); nothing below branches
on the stage name. Run directory: recipe.yaml, ds_config.json, metrics.jsonl, tb/, skipped-rank{r}.jsonl,
checkpoints/, export/.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from mmdata.errors import InputError, NotFound, UserError
from mmdata.loader import MixtureLoader
from mmdata.mixture import Mixture
from mmdata.storage_errors import writing
from trainer import checkpoint
from trainer.data import Collator, ConversationDataset
from trainer.engine import Dist, cosine_schedule, ds_config, init_distributed, param_groups, prepare_model
from trainer.export import export
from trainer.metrics import MetricsLogger
from trainer.model import UnifiedModel
from trainer.recipe import TrainRecipe

log = logging.getLogger("trainer")
TENSOR_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "image_is_target")
RESUME_HINT = "free space (or make it writable) and rerun the same command: it resumes from the last checkpoint"


class NonFiniteLoss(UserError):
    """The loss or gradient norm became NaN/inf: the run stops before a checkpoint or export could keep it."""


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    steps: int
    global_batch: int


def train(recipe: TrainRecipe) -> RunResult:
    """Run (or resume) the recipe's stage; collective across all launched ranks. A full or read-only disk is one
    `StorageError` naming the path; checkpoints already written stay usable."""
    with writing(recipe.output_dir, RESUME_HINT):
        return _train(recipe)


@dataclass(frozen=True)
class Start:
    dist: Dist
    run_dir: Path
    accum: int
    global_batch: int
    lr: float
    resume: bool


def start(recipe: Any) -> Start:
    """What every run does first (a stage or the visualizer: any recipe with output_dir, batch, optim, train and
    checkpoint sections): process group, batch split, lr, the resume decision, seeds, threads."""
    d = init_distributed()
    run_dir = Path(recipe.output_dir)
    accum = recipe.batch.resolve(d.world_size)
    global_batch = recipe.batch.per_device * accum * d.world_size
    lr = recipe.optim.resolve_lr(global_batch)
    resume = should_resume(recipe, run_dir)
    seed_all(recipe.train.seed + d.rank)
    if recipe.train.cpu_threads is not None:
        torch.set_num_threads(recipe.train.cpu_threads)
    return Start(d, run_dir, accum, global_batch, lr, resume)


def write_run_files(run_dir: Path, recipe: Any, config: dict[str, Any]) -> None:
    """recipe.yaml (the validated recipe, overrides applied) and ds_config.json; rank 0 only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    (run_dir / "ds_config.json").write_text(json.dumps(config, indent=2))


def _train(recipe: TrainRecipe) -> RunResult:
    st = start(recipe)
    d, run_dir, accum, global_batch, lr, resume = st.dist, st.run_dir, st.accum, st.global_batch, st.lr, st.resume

    loaded = prepare_model(recipe)
    model = loaded.model
    mixture = Mixture(recipe.data.mixture)
    data = ConversationDataset.for_model(mixture, model, max_length=recipe.data.max_length,
                                         on_error=recipe.data.on_error)
    loader = MixtureLoader(data, batch_size=recipe.batch.per_device, rank=d.rank, world_size=d.world_size,
                           seed=recipe.train.seed, shuffle=recipe.data.shuffle, drop_last=True,
                           num_workers=recipe.data.num_workers, collate_fn=Collator(model.pad_token_id))
    steps_per_epoch = len(loader) // accum
    total = recipe.train.max_steps or steps_per_epoch * recipe.train.epochs
    if steps_per_epoch == 0:
        raise InputError(f"data.mixture {recipe.data.mixture}: {len(mixture)} samples give no full optimizer step "
                         f"at a global batch of {global_batch}; use a bigger mixture or a smaller batch")

    config = ds_config(recipe, accum, d.world_size)
    if d.main:
        write_run_files(run_dir, recipe, config)
        print(f"[mmtrain] {recipe.stage}: global batch {global_batch} = {recipe.batch.per_device} per device × "
              f"{accum} accumulation × {d.world_size} ranks; lr {lr:.3g}; {steps_per_epoch} steps/epoch, "
              f"{total} steps; ZeRO-{recipe.train.zero_stage}, {recipe.train.precision}; run dir {run_dir}",
              flush=True)

    import deepspeed

    groups = param_groups(model, recipe.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.optim.betas), eps=recipe.optim.eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(total, recipe.optim.warmup_ratio, recipe.optim.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=config)

    step = 0
    if resume:
        client = checkpoint.load(engine, run_dir, rank=d.rank)
        step = int(client["step"])
        loader.load_state_dict(client["loader"])
        if d.main:
            print(f"[mmtrain] resumed from {run_dir / checkpoint.CHECKPOINTS / checkpoint.tag(step)} "
                  f"(step {step}, {client['loader']['consumed']} samples into epoch {client['loader']['epoch']})",
                  flush=True)

    metrics = MetricsLogger(run_dir, total_steps=total, start_step=step, enabled=d.main,
                            tensorboard=recipe.logging.tensorboard, progress=recipe.logging.progress)
    stepper = _Stepper(engine, model, data, loader, accum, d, run_dir)
    engine.train()
    try:
        while step < total:
            lr_now = schedule.get_last_lr()[0]  # the lr this step uses; the engine advances the schedule
            row = stepper.step()
            step += 1
            check_finite(row, step, run_dir)
            row |= {"step": step, "epoch": loader.state_dict()["epoch"], "lr": lr_now}
            metrics.log(row)
            if step % recipe.checkpoint.every == 0 or step == total:
                checkpoint.save(engine, run_dir, step, {"step": step, "loader": loader.state_dict()},
                                rank=d.rank, keep=recipe.checkpoint.keep)
    finally:
        metrics.close()
    out = export(engine, model, run_dir, rank=d.rank, zero_stage=recipe.train.zero_stage)
    if d.main:
        print(f"[mmtrain] done: {step} steps; checkpoints in {run_dir / checkpoint.CHECKPOINTS}; exported model "
              f"in {out}", flush=True)
    return RunResult(run_dir, out, step, global_batch)


class _Stepper:
    """One optimizer step = `accum` micro-batches through the engine; returns the step's metrics row.

    An all-skipped micro-batch still runs forward/backward (on a fallback batch, loss × 0): every rank must take
    part in the same collectives, and gradient accumulation must stay aligned with DeepSpeed's micro-step count.
    """

    def __init__(self, engine: Any, model: UnifiedModel, data: ConversationDataset, loader: MixtureLoader,
                 accum: int, d: Dist, run_dir: Path) -> None:
        self.engine, self.model, self.data, self.loader, self.accum, self.d = engine, model, data, loader, accum, d
        self.batches = micro_batches(loader, accum)
        self.fallback: dict[str, Any] | None = None
        self.skip_log = run_dir / f"skipped-rank{d.rank}.jsonl"

    def step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        sums = torch.zeros(6, dtype=torch.float64)  # loss, text, vision, samples, tokens, skipped
        n_vision = 0
        for _ in range(self.accum):
            batch = next(self.batches)
            log_skips(self.skip_log, self.d.rank, batch["skipped"])
            empty = batch["input_ids"].shape[0] == 0
            if not empty:
                self.fallback = batch
            out = self.engine(**self._tensors(batch if not empty else self._fallback()))
            self.engine.backward(out.loss * 0.0 if empty else out.loss)
            self.engine.step()
            sums[5] += len(batch["skipped"])
            if empty:
                continue
            sums[0] += out.loss.item()
            sums[1] += out.text_loss.item()
            if out.vision_loss is not None and out.n_vision_targets:
                sums[2] += out.vision_loss.item()
                n_vision += 1
            sums[3] += batch["input_ids"].shape[0]
            sums[4] += int(batch["attention_mask"].sum())
        counts = torch.tensor([self.accum, n_vision], dtype=torch.float64)
        if self.d.world_size > 1:
            both = torch.cat([sums, counts])
            dist.all_reduce(both)
            sums, counts = both[:6], both[6:]
        dt = time.perf_counter() - t0
        grad_norm = self.engine.get_global_grad_norm()
        return {
            "loss": float(sums[0] / counts[0]), "text_loss": float(sums[1] / counts[0]),
            "vision_loss": float(sums[2] / counts[1]) if counts[1] else None,
            "vision_cos": float(-sums[2] / counts[1]) if counts[1] else None,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "samples": int(sums[3]), "tokens": int(sums[4]), "skipped": int(sums[5]),
            "samples_per_s": float(sums[3]) / dt, "tokens_per_s": float(sums[4]) / dt, "step_time": dt,
        }

    def _tensors(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: batch[k] for k in TENSOR_KEYS}

    def _fallback(self) -> dict[str, Any]:
        if self.fallback is None:  # no good batch seen yet on this rank: the first usable sample of the data
            good = next((s for s in (self.data[i] for i in range(len(self.data))) if not hasattr(s, "reason")), None)
            if good is None:
                raise InputError("every sample of the mixture was skipped; see skipped-rank*.jsonl for why")
            self.fallback = Collator(self.model.pad_token_id)([good])
        return self.fallback


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


def check_finite(row: dict[str, Any], step: int, run_dir: Path) -> None:
    """NaN/inf weights must never reach a checkpoint or the export. Every rank sees the same all-reduced loss."""
    bad = {k: row[k] for k in ("loss", "grad_norm") if row[k] is not None and not math.isfinite(row[k])}
    if bad:
        last = checkpoint.latest_tag(run_dir)
        raise NonFiniteLoss(
            f"step {step}: {', '.join(f'{k} is {v}' for k, v in bad.items())}; training stopped, nothing of this "
            f"step was saved (last checkpoint: {last or 'none'}). Lower optim.lr, set optim.grad_clip, or check "
            "the data; then rerun (it resumes from the last checkpoint)")


def should_resume(recipe: TrainRecipe, run_dir: Path) -> bool:
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
