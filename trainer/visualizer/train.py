"""`mmtrain visualizer`: train the condition projector (+ UNet) on images from a built dataset or mixture.

    recipe → process group → condition spec (from the stage-2 export) → UNet, VAE, tower → RecordDataset +
    MixtureLoader → AdamW + cosine/constant → deepspeed.initialize (projector + UNet only) → [resume]
    → for each step: grad_accum micro-batches (tower tokens, VAE latents, noise → forward, backward, step)
    → metrics → checkpoints → export/

The process group, DeepSpeed config, checkpoints (exact resume: engine state, loader position, RNG), metrics and
run directory are the stages' own (`trainer.engine`, `trainer.checkpoint`, `trainer.metrics`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mmdata import MixtureLoader, RecordDataset
from mmdata import open as open_dataset
from mmdata.core.errors import InputError, writing
from trainer import checkpoint
from trainer.engine import Dist, cosine_schedule, ds_config
from trainer.metrics import MetricsLogger
from trainer.train import RESUME_HINT, RunResult, check_finite, log_skips, micro_batches, start, write_run_files
from trainer.visualizer.config import VisualizerRecipe, resolve_condition
from trainer.visualizer.data import VisTransform, collate, open_features
from trainer.visualizer.export import build, export
from trainer.visualizer.model import FrozenEncoders, VisualizerNet, draw, step_generator

log = logging.getLogger("trainer")


def lr_factor(recipe: VisualizerRecipe, total: int):
    o = recipe.optim
    if o.schedule == "constant":
        return cosine_schedule(total, o.warmup_ratio, 1.0)  # min ratio 1: warmup, then flat
    return cosine_schedule(total, o.warmup_ratio, o.min_lr_ratio)


def param_groups(net: VisualizerNet, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0})
            if g["params"]]


@dataclass
class Session:
    """Everything a run steps through, set up (and resumed) by `prepare`; the loop and the benchmark drive it."""

    engine: Any
    net: VisualizerNet
    encoders: FrozenEncoders
    loader: MixtureLoader
    schedule: Any
    stepper: VisStepper
    run_dir: Path
    dist: Dist
    total: int
    step: int
    global_batch: int


def prepare(recipe: VisualizerRecipe) -> Session:
    """Process group, condition spec, parts, data, DeepSpeed engine; restored from the newest checkpoint if resuming."""
    st = start(recipe)
    d, run_dir, accum, global_batch, lr = st.dist, st.run_dir, st.accum, st.global_batch, st.lr

    spec = resolve_condition(recipe.condition)
    net, encoders = build(recipe, spec)
    features = None
    if recipe.data.vision_features is not None:
        features = open_features(recipe.data.vision_features, encoders.tower, encoders.processor, spec)
    source = open_dataset(recipe.data.source)
    source.check_media()  # media left on the machine that built a dataset: one message now, not a skip per record
    data = RecordDataset(source, VisTransform(encoders.processor, recipe.diffusion.resolution,
                                              images=recipe.data.images, on_error=recipe.data.on_error,
                                              features=features))
    loader = MixtureLoader(data, batch_size=recipe.batch.per_device, rank=d.rank, world_size=d.world_size,
                           seed=recipe.train.seed, shuffle=recipe.data.shuffle, drop_last=True,
                           num_workers=recipe.data.num_workers, collate_fn=collate)
    steps_per_epoch = len(loader) // accum
    if steps_per_epoch == 0:
        raise InputError(f"data.source {recipe.data.source}: {len(source)} records give no full optimizer step at "
                         f"a global batch of {global_batch}; use more data or a smaller batch")
    total = recipe.train.max_steps or steps_per_epoch * recipe.train.epochs

    config = ds_config(recipe, accum, d.world_size)  # type: ignore[arg-type]  # batch, optim, train sections
    if d.main:
        write_run_files(run_dir, recipe, config)
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        print(f"[mmtrain] visualizer: {recipe.projector.type} projector, UNet {recipe.diffusion.unet} "
              f"({trainable:,} trainable parameters); condition {spec.num_image_tokens} tokens from "
              f"{spec.vision_tower}; global batch {global_batch} = {recipe.batch.per_device} × {accum} × "
              f"{d.world_size}; lr {lr:.3g} {recipe.optim.schedule}; {total} steps; ZeRO-{recipe.train.zero_stage}, "
              f"{recipe.train.precision}; run dir {run_dir}", flush=True)

    import deepspeed

    optimizer = torch.optim.AdamW(param_groups(net, recipe.optim.weight_decay), lr=lr,
                                  betas=tuple(recipe.optim.betas), eps=recipe.optim.eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, total))
    engine, _, _, _ = deepspeed.initialize(model=net, optimizer=optimizer, lr_scheduler=schedule, config=config)
    if d.world_size == 1 and recipe.train.zero_stage == 0:
        # One process, no partitioning: DeepSpeed would still flatten, "all-reduce" and copy back every gradient
        # (~15 % of a tiny step). With ZeRO >= 1 the same hook moves gradients into the optimizer's partitions.
        engine.enable_backward_allreduce = False

    step = 0
    if st.resume:
        client = checkpoint.load(engine, run_dir, rank=d.rank)
        step = int(client["step"])
        loader.load_state_dict(client["loader"])
        if d.main:
            print(f"[mmtrain] resumed from {run_dir / checkpoint.CHECKPOINTS / checkpoint.tag(step)} (step {step})",
                  flush=True)
    stepper = VisStepper(engine, net, encoders, loader, recipe, accum, d.rank, d.world_size, run_dir)
    engine.train()
    return Session(engine, net, encoders, loader, schedule, stepper, run_dir, d, total, step, global_batch)


def train_visualizer(recipe: VisualizerRecipe) -> RunResult:
    """Run (or resume) a visualizer recipe; collective across all launched ranks. A full or read-only disk is one
    `StorageError` naming the path; a NaN/inf loss stops the run before anything of that step is saved."""
    with writing(recipe.output_dir, RESUME_HINT):
        return _train(recipe)


def _train(recipe: VisualizerRecipe) -> RunResult:
    s = prepare(recipe)
    step, d = s.step, s.dist
    metrics = MetricsLogger(s.run_dir, total_steps=s.total, start_step=step, enabled=d.main,
                            tensorboard=recipe.logging.tensorboard, progress=recipe.logging.progress)
    try:
        while step < s.total:
            lr_now = s.schedule.get_last_lr()[0]
            row = s.stepper.step(step)
            step += 1
            check_finite(row, step, s.run_dir)
            metrics.log(row | {"step": step, "epoch": s.loader.state_dict()["epoch"], "lr": lr_now})
            if step % recipe.checkpoint.every == 0 or step == s.total:
                checkpoint.save(s.engine, s.run_dir, step, {"step": step, "loader": s.loader.state_dict()},
                                rank=d.rank, keep=recipe.checkpoint.keep)
    finally:
        metrics.close()
    out = export(s.net, s.encoders, recipe, s.run_dir, rank=d.rank)
    if d.main:
        print(f"[mmtrain] done: {step} steps; exported visualizer in {out}", flush=True)
    return RunResult(s.run_dir, out, step, s.global_batch)


class VisStepper:
    """One optimizer step = `accum` micro-batches; returns the step's metrics row.

    A micro-batch whose records were all skipped still runs (on the last good batch, loss × 0): every rank must
    take part in the same collectives and DeepSpeed's accumulation count must stay aligned.
    """

    def __init__(self, engine: Any, net: VisualizerNet, encoders: FrozenEncoders, loader: MixtureLoader,
                 recipe: VisualizerRecipe, accum: int, rank: int, world_size: int, run_dir: Path) -> None:
        self.engine, self.net, self.encoders, self.loader, self.accum = engine, net, encoders, loader, accum
        self.rank, self.world_size, self.seed = rank, world_size, recipe.train.seed
        self.diffusion = recipe.diffusion
        self.timesteps = net.scheduler.config.num_train_timesteps
        self.batches = micro_batches(loader, accum)
        self.fallback: dict[str, Any] | None = None
        self.skip_log = run_dir / f"skipped-rank{rank}.jsonl"

    def step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        sums = torch.zeros(5, dtype=torch.float64)  # loss, samples, dropped conditions, skipped, used micro-batches
        for micro in range(self.accum):
            batch = next(self.batches)
            log_skips(self.skip_log, self.rank, batch["skipped"])
            empty = batch["pixels"] is None
            if not empty:
                self.fallback = batch
            elif self.fallback is None:
                raise InputError("the first micro-batch held no usable image; see skipped-rank*.jsonl for why")
            use = self.fallback if empty else batch
            gen = step_generator(self.seed, self.rank, step, micro)
            latents = self.encoders.latents(use["pixels"], gen)
            cached = use["tokens"]
            tokens = self.encoders.tokens(use["tower_pixels"]) if cached is None else cached.to(latents.device)
            dr = draw(latents, gen, num_train_timesteps=self.timesteps, cond_dropout=self.diffusion.cond_dropout,
                      noise_offset=self.diffusion.noise_offset)
            loss = self.engine(latents, tokens, dr.noise, dr.timesteps, dr.drop)
            self.engine.backward(loss * 0.0 if empty else loss)
            self.engine.step()
            sums[3] += len(batch["skipped"])
            if not empty:
                sums[0] += loss.item()
                sums[1] += len(batch["ids"])
                sums[2] += int(dr.drop.sum())
                sums[4] += 1
        if self.world_size > 1:
            dist.all_reduce(sums)
        dt = time.perf_counter() - t0
        grad_norm = self.engine.get_global_grad_norm()
        return {"loss": float(sums[0] / sums[4]) if sums[4] else None,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "samples": int(sums[1]), "cond_dropped": int(sums[2]), "skipped": int(sums[3]),
                "samples_per_s": float(sums[1]) / dt, "step_time": dt}
