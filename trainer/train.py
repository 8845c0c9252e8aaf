"""Stage 1 and stage 2: `StageTrainer`, the loop (`trainer.loop.Trainer`) over the unified model.

    recipe → model (build / load init_from; stage parts, LoRA, checkpointing) → mixture → ConversationDataset
    → MixtureLoader (rank shard; packed or length-grouped through the lengths cache) → Collator → the loop
    → export/ (`trainer.export`)

A stage is data (`TrainRecipe.stage_config`: what trains, whether the vision loss is on); nothing below branches
on the stage name. What this adds to the loop: the model and data (`build`), one micro-batch through the model and
its numbers (`forward`, `micro_metrics`, `step_metrics`), the batch order saved with checkpoints and checked on
resume (`client_state`, `restore`), the summary of throughput, padding and skips, and the export.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

import mmdata
from mmdata import MixtureLoader
from mmdata.core.errors import InputError
from trainer import checkpoint
from trainer.data import Collator, ConversationDataset, LengthGroupedSampler
from trainer.engine import Dist, prepare_model
from trainer.export import export
from trainer.lengths import expanded_lengths
from trainer.loop import NonFiniteLoss, Parts, RunResult, Trainer
from trainer.packing import PackedDataset, fingerprint, plan_packs
from trainer.recipe import TrainRecipe

__all__ = ["NonFiniteLoss", "RunResult", "StageTrainer", "make_loader", "model_inputs", "train"]
TENSOR_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "image_is_target", "image_features",
               "position_ids")


def train(recipe: TrainRecipe) -> RunResult:
    """Run (or resume) the recipe's stage; collective across all launched ranks. A full or read-only disk is one
    `StorageError` naming the path; checkpoints already written stay usable."""
    return StageTrainer.run(recipe)


class StageTrainer(Trainer[TrainRecipe]):
    """Stage 1 / stage 2 of the unified model. Metrics: loss, text_loss, vision_loss, vision_cos, grad_norm,
    samples, tokens (real), padded_tokens, padding, images, skipped, samples_per_s, tokens_per_s, step_time."""

    SUMS = ("loss", "text_loss", "vision_loss", "vision_batches", "samples", "tokens", "padded_tokens", "images")

    def build(self) -> Parts:
        recipe = self.recipe
        self.model = model = prepare_model(recipe).model
        mixture = mmdata.open(recipe.data.mixture)  # a mixture, a view or a dataset
        mixture.check_media()  # media left on the machine that built a dataset: one message now, not a skip per record
        features = None
        if recipe.data.vision_features is not None:
            from trainer.features import FeatureStore

            features = FeatureStore.open(recipe.data.vision_features, model)  # before ZeRO-3 partitions the tower
        data = ConversationDataset.for_model(mixture, model, max_length=recipe.data.max_length,
                                             on_error=recipe.data.on_error, features=features)
        loader, collate, self.data_order = make_loader(recipe, data, model.pad_token_id, self.dist)
        return Parts(model, data, loader, collate)

    def no_full_step(self) -> str:
        unit = "packs of data.max_length" if self.recipe.data.packing else "samples"
        return (f"data.mixture {self.recipe.data.mixture}: {self.loader.sampler.length} {unit} give no full "
                f"optimizer step at a global batch of {self.global_batch}; use a bigger mixture or a smaller batch")

    def describe(self) -> str:
        r, d = self.recipe, self.dist
        return (f"[mmtrain] {r.stage}: global batch {self.global_batch} = {r.batch.per_device} per device × "
                f"{self.accum} accumulation × {d.world_size} ranks; lr {self.lr:.3g}; {self.steps_per_epoch} "
                f"steps/epoch, {self.total} steps; ZeRO-{r.train.zero_stage}, {r.train.precision}; run dir "
                f"{self.run_dir}")

    def client_state(self) -> dict[str, Any]:
        return {"data_order": self.data_order}

    def restore(self, client: dict[str, Any]) -> None:
        if client.get("data_order", self.data_order) != self.data_order:
            raise InputError(
                f"{self.run_dir}: the checkpoint's batches were ordered as {client['data_order']!r}, this recipe "
                f"orders them as {self.data_order!r}; resume with the same data.packing, data.group_by_length, "
                "data.max_length and mixture, or start a new output_dir")

    def resumed_message(self, client: dict[str, Any]) -> str:
        pos = client["loader"]
        return (f"[mmtrain] resumed from {self.run_dir / checkpoint.CHECKPOINTS / checkpoint.tag(self.step)} "
                f"(step {self.step}, {pos['consumed']} samples into epoch {pos['epoch']})")

    def collate_one(self, sample: Any) -> dict[str, Any]:
        return self.collate([[sample]] if self.collate.packed else [sample])

    def forward(self, batch: dict[str, Any], micro: int) -> tuple[torch.Tensor, Any]:
        device = self.engine.device
        out = self.engine(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                             for k, v in model_inputs(batch).items()})
        return out.loss, out

    def micro_metrics(self, batch: dict[str, Any], loss: torch.Tensor, out: Any) -> dict[str, float]:
        real = int(batch["attention_mask"].sum())
        m = {"loss": out.loss.item(), "text_loss": out.text_loss.item(), "samples": len(batch["ids"]),
             "tokens": real, "padded_tokens": batch["input_ids"].numel() - real,
             "images": batch["image_is_target"].numel()}
        if out.vision_loss is not None and out.n_vision_targets:
            m |= {"vision_loss": out.vision_loss.item(), "vision_batches": 1}
        return m

    def step_metrics(self, s: dict[str, float], dt: float, grad_norm: float | None) -> dict[str, Any]:
        n, nv = s["micro_batches"], s["vision_batches"]
        return {
            "loss": s["loss"] / n, "text_loss": s["text_loss"] / n,
            "vision_loss": s["vision_loss"] / nv if nv else None,
            "vision_cos": -s["vision_loss"] / nv if nv else None,
            "grad_norm": grad_norm,
            "samples": int(s["samples"]), "tokens": int(s["tokens"]), "padded_tokens": int(s["padded_tokens"]),
            "padding": s["padded_tokens"] / max(s["tokens"] + s["padded_tokens"], 1), "images": int(s["images"]),
            "skipped": int(s["skipped"]),
            "samples_per_s": s["samples"] / dt, "tokens_per_s": s["tokens"] / dt, "step_time": dt,
        }

    def summary(self, start_step: int, wall: float) -> dict[str, Any]:
        return summarize(self.run_dir, start_step, wall, self.skip_kinds(), self.dist)

    def export(self) -> Path:
        return export(self.engine, self.model, self.run_dir, rank=self.dist.rank,
                      zero_stage=self.recipe.train.zero_stage)

    def done_message(self, out: Path, summary: dict[str, Any] | None) -> str:
        assert summary is not None
        return (f"{format_summary(summary)}\n[mmtrain] done: {self.step} steps; checkpoints in "
                f"{self.run_dir / checkpoint.CHECKPOINTS}; exported model in {out}")


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


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch keys the model takes (the rest, e.g. `ids` and `skipped`, are for the loop)."""
    return {k: batch[k] for k in TENSOR_KEYS if k in batch}


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


