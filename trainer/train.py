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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

import mmdata
from mmdata import MixtureLoader
from mmdata.core.errors import InputError, NotFound, UserError, writing
from trainer import checkpoint
from trainer.data import Collator, ConversationDataset, LengthGroupedSampler
from trainer.engine import Dist, cosine_schedule, ds_config, init_distributed, param_groups, prepare_model
from trainer.export import export
from trainer.lengths import expanded_lengths
from trainer.metrics import MetricsLogger
from trainer.packing import PackedDataset, fingerprint, plan_packs
from trainer.recipe import TrainRecipe

log = logging.getLogger("trainer")
TENSOR_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "image_is_target", "image_features",
               "position_ids")
RESUME_HINT = "free space (or make it writable) and rerun the same command: it resumes from the last checkpoint"


class NonFiniteLoss(UserError):
    """The loss or gradient norm became NaN/inf: the run stops before a checkpoint or export could keep it."""


@dataclass
class RunResult:
    run_dir: Path
    export_dir: Path | None
    steps: int
    global_batch: int
    summary: dict[str, Any] | None = None  # this invocation's throughput, padding and skips (see `summarize`)


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
    mixture = mmdata.open(recipe.data.mixture)  # a mixture, a view or a dataset
    mixture.check_media()  # media left on the machine that built a dataset: one message now, not a skip per record
    features = None
    if recipe.data.vision_features is not None:
        from trainer.features import FeatureStore

        features = FeatureStore.open(recipe.data.vision_features, model)  # before ZeRO-3 partitions the tower
    data = ConversationDataset.for_model(mixture, model, max_length=recipe.data.max_length,
                                         on_error=recipe.data.on_error, features=features)
    loader, collate, data_order = make_loader(recipe, data, model.pad_token_id, d)
    steps_per_epoch = len(loader) // accum
    total = recipe.train.max_steps or steps_per_epoch * recipe.train.epochs
    if steps_per_epoch == 0:
        unit = "packs of data.max_length" if recipe.data.packing else "samples"
        raise InputError(f"data.mixture {recipe.data.mixture}: {loader.sampler.length} {unit} give no full "
                         f"optimizer step at a global batch of {global_batch}; use a bigger mixture or a smaller "
                         "batch")

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
        if client.get("data_order", data_order) != data_order:
            raise InputError(f"{run_dir}: the checkpoint's batches were ordered as {client['data_order']!r}, this "
                             f"recipe orders them as {data_order!r}; resume with the same data.packing, "
                             "data.group_by_length, data.max_length and mixture, or start a new output_dir")
        loader.load_state_dict(client["loader"])
        if d.main:
            print(f"[mmtrain] resumed from {run_dir / checkpoint.CHECKPOINTS / checkpoint.tag(step)} "
                  f"(step {step}, {client['loader']['consumed']} samples into epoch {client['loader']['epoch']})",
                  flush=True)

    metrics = MetricsLogger(run_dir, total_steps=total, start_step=step, enabled=d.main,
                            tensorboard=recipe.logging.tensorboard, progress=recipe.logging.progress)
    stepper = _Stepper(engine, data, loader, collate, accum, d, run_dir)
    engine.train()
    start_step, t_start = step, time.perf_counter()
    try:
        while step < total:
            lr_now = schedule.get_last_lr()[0]  # the lr this step uses; the engine advances the schedule
            row = stepper.step()
            step += 1
            check_finite(row, step, run_dir)
            row |= {"step": step, "epoch": loader.state_dict()["epoch"], "lr": lr_now}
            metrics.log(row)
            if step % recipe.checkpoint.every == 0 or step == total:
                checkpoint.save(engine, run_dir, step, {"step": step, "loader": loader.state_dict(),
                                                        "data_order": data_order},
                                rank=d.rank, keep=recipe.checkpoint.keep)
    finally:
        metrics.close()
    summary = summarize(run_dir, start_step, time.perf_counter() - t_start, stepper.skip_kinds(), d)
    out = export(engine, model, run_dir, rank=d.rank, zero_stage=recipe.train.zero_stage)
    if d.main:
        print(format_summary(summary), flush=True)
        print(f"[mmtrain] done: {step} steps; checkpoints in {run_dir / checkpoint.CHECKPOINTS}; exported model "
              f"in {out}", flush=True)
    return RunResult(run_dir, out, step, global_batch, summary)


def make_loader(recipe: TrainRecipe, data: ConversationDataset, pad_token_id: int,
                d: Dist) -> tuple[MixtureLoader, Collator, str]:
    """The rank's loader, its collator, and a name for the batch order (saved with checkpoints, checked on resume).

    Packing and length grouping both need every sample's exact length: `expanded_lengths` reads them from the
    lengths cache, or tokenizes what is missing (split across ranks) and writes it there for the next launch.
    """
    cfg = recipe.data
    source: Any = data
    order, data_order = None, "shuffled" if cfg.shuffle else "mixture"
    if cfg.packing or cfg.group_by_length:
        lengths = sample_lengths(recipe, data, d)
        if cfg.packing:
            packs = plan_packs(lengths, cfg.max_length)
            source, data_order = PackedDataset(data, packs), f"packed:{fingerprint(packs)}"
        else:
            sampler = LengthGroupedSampler(lengths, recipe.batch.per_device, world_size=d.world_size,
                                           seed=recipe.train.seed)
            order, data_order = sampler.order, "group_by_length"
    collate = Collator(pad_token_id, packed=cfg.packing)
    loader = MixtureLoader(source, batch_size=recipe.batch.per_device, rank=d.rank, world_size=d.world_size,
                           seed=recipe.train.seed, shuffle=cfg.shuffle, drop_last=True, order=order,
                           num_workers=cfg.num_workers, collate_fn=collate)
    return loader, collate, data_order


def sample_lengths(recipe: TrainRecipe, data: ConversationDataset, d: Dist) -> list[int]:
    """Every sample's expanded length through the lengths cache (collective), with one line on what it cost."""
    cache = recipe.data.lengths_cache or Path(recipe.output_dir) / "lengths"
    t0 = time.perf_counter()
    lengths, stats = expanded_lengths(data, cache, rank=d.rank, world_size=d.world_size)
    if d.main:
        took = f"{time.perf_counter() - t0:.1f}s"
        if stats.cache is None:
            print(f"[mmtrain] lengths: {len(lengths):,} samples tokenized (no lengths cache for a source that is "
                  f"not on local disk); {took}", flush=True)
        else:
            print(f"[mmtrain] lengths of {len(lengths):,} samples: {stats.computed:,} records tokenized across "
                  f"{d.world_size} rank(s), the rest read from {stats.cache}; {took}", flush=True)
    return lengths


class _Stepper:
    """One optimizer step = `accum` micro-batches through the engine; returns the step's metrics row.

    An all-skipped micro-batch still runs forward/backward (on a fallback batch, loss × 0): every rank must take
    part in the same collectives, and gradient accumulation must stay aligned with DeepSpeed's micro-step count.
    """

    def __init__(self, engine: Any, data: ConversationDataset, loader: MixtureLoader, collate: Collator,
                 accum: int, d: Dist, run_dir: Path) -> None:
        self.engine, self.data, self.loader, self.collate, self.accum, self.d = engine, data, loader, collate, accum, d
        self.batches = micro_batches(loader, accum)
        self.fallback: dict[str, Any] | None = None
        self.skip_log = run_dir / f"skipped-rank{d.rank}.jsonl"
        self.skips: Counter[str] = Counter()  # why samples were skipped, by kind, on this rank

    def step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        sums = torch.zeros(8, dtype=torch.float64)  # loss, text, vision, samples, tokens, skipped, padded, images
        n_vision = 0
        for _ in range(self.accum):
            batch = next(self.batches)
            log_skips(self.skip_log, self.d.rank, batch["skipped"])
            self.skips.update(skip_kind(s.reason) for s in batch["skipped"])
            empty = batch["input_ids"].shape[0] == 0
            if not empty:
                self.fallback = batch
            inputs = model_inputs(batch if not empty else self._fallback())
            out = self.engine(**{k: v.to(self.engine.device) if isinstance(v, torch.Tensor) else v
                                 for k, v in inputs.items()})
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
            sums[3] += len(batch["ids"])
            real = int(batch["attention_mask"].sum())
            sums[4] += real
            sums[6] += batch["input_ids"].numel() - real
            sums[7] += batch["image_is_target"].numel()
        counts = torch.tensor([self.accum, n_vision], dtype=torch.float64)
        if self.d.world_size > 1:
            both = torch.cat([sums, counts])
            dist.all_reduce(both)
            sums, counts = both[:8], both[8:]
        dt = time.perf_counter() - t0
        grad_norm = self.engine.get_global_grad_norm()
        return {
            "loss": float(sums[0] / counts[0]), "text_loss": float(sums[1] / counts[0]),
            "vision_loss": float(sums[2] / counts[1]) if counts[1] else None,
            "vision_cos": float(-sums[2] / counts[1]) if counts[1] else None,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "samples": int(sums[3]), "tokens": int(sums[4]), "padded_tokens": int(sums[6]),
            "padding": float(sums[6] / max(sums[4] + sums[6], 1)), "images": int(sums[7]), "skipped": int(sums[5]),
            "samples_per_s": float(sums[3]) / dt, "tokens_per_s": float(sums[4]) / dt, "step_time": dt,
        }

    def _fallback(self) -> dict[str, Any]:
        if self.fallback is None:  # no good batch seen yet on this rank: the first usable sample of the data
            good = next((s for s in (self.data[i] for i in range(len(self.data))) if not hasattr(s, "reason")), None)
            if good is None:
                raise InputError("every sample of the mixture was skipped; see skipped-rank*.jsonl for why")
            self.fallback = self.collate([[good]] if self.collate.packed else [good])
        return self.fallback

    def skip_kinds(self) -> Counter[str]:
        """Skip counts by kind, summed over ranks (collective)."""
        if self.d.world_size == 1:
            return self.skips
        parts: list[Any] = [None] * self.d.world_size
        dist.all_gather_object(parts, self.skips)
        return sum(parts, Counter())


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


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch keys the model takes (the rest, e.g. `ids` and `skipped`, are for the loop)."""
    return {k: batch[k] for k in TENSOR_KEYS if k in batch}


def skip_kind(reason: str) -> str:
    """'labels: …' → 'labels'; 'image 0 (a.jpg): OSError: …' → 'image: OSError'; 'features: KeyError: …' alike."""
    head, _, rest = reason.partition(": ")
    if head.startswith("image"):
        return f"image: {rest.split(':', 1)[0]}"
    if head == "features":
        return f"features: {rest.split(':', 1)[0]}"
    return head


def summarize(run_dir: Path, start_step: int, wall: float, skips: Counter[str], d: Dist) -> dict[str, Any]:
    """Throughput, padding and skips of the steps this invocation ran (rank 0's metrics.jsonl holds them)."""
    from trainer.metrics import METRICS, read

    rows = [r for r in read(run_dir / METRICS) if r["step"] > start_step] if d.main else []
    tokens, padded = sum(r["tokens"] for r in rows), sum(r.get("padded_tokens", 0) for r in rows)
    step_time = sum(r["step_time"] for r in rows)
    return {"steps": len(rows), "samples": sum(r["samples"] for r in rows), "tokens": tokens,
            "padded_tokens": padded, "padding": padded / max(tokens + padded, 1),
            "tokens_per_s": tokens / step_time if step_time else 0.0, "wall_s": wall,
            "skipped": sum(skips.values()), "skipped_by_kind": dict(skips.most_common())}


def format_summary(s: dict[str, Any]) -> str:
    why = ", ".join(f"{n} {k}" for k, n in s["skipped_by_kind"].items()) or "none"
    return (f"[mmtrain] summary: {s['steps']} steps, {s['samples']} samples, {s['tokens']:,} real tokens at "
            f"{s['tokens_per_s']:,.0f} tokens/s; padding {100 * s['padding']:.1f}% ({s['padded_tokens']:,} pad "
            f"tokens); skipped {s['skipped']} ({why}); {s['wall_s']:.1f}s")


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
