"""The pieces around the DeepSpeed engine: process group, DeepSpeed config, optimizer groups, schedule, model setup.

Kept apart from the loop (`loop.py`) so the loop reads top to bottom and the benchmarks can reuse the same setup.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch

from mmdata.core.errors import NotFound
from trainer.config import StageConfig
from trainer.model import Loaded, UnifiedModel, build_model, load
from trainer.recipe import RunRecipe, TrainRecipe
from trainer.trainable import apply_stage

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join (or, when not launched by torchrun / deepspeed, create) a gloo process group on the CPU.

    Without a launcher DeepSpeed falls back to MPI discovery and fails on a missing mpi4py, so a single process
    sets the rendezvous variables itself (free port, so parallel runs on one machine do not collide).
    """
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    import importlib

    import deepspeed

    # By module name: `import deepspeed.comm.torch as m` would bind the `torch` attribute of deepspeed.comm.
    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")

    world = int(os.environ["WORLD_SIZE"])
    if world == 1 or os.environ.get("MMTRAIN_SHM_COMM", "1") == "0":
        # The shared-memory all-reduce op is JIT-compiled (~40 s) on first use and buys nothing for one process.
        ds_torch_comm.build_shm_op = lambda: None
    deepspeed.utils.logger.setLevel(logging.WARNING)  # its per-step INFO lines drown the progress bar
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return Dist(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def ds_config(recipe: RunRecipe, grad_accum: int, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config, generated from the recipe (and saved in the run directory as ds_config.json)."""
    zero: dict[str, Any] = {"stage": recipe.train.zero_stage, "contiguous_gradients": True, "overlap_comm": False}
    if recipe.train.zero_stage == 3:
        # Export consolidates the partitioned weights into one 16-bit state dict on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    pd = recipe.batch.per_device
    return {
        "train_micro_batch_size_per_gpu": pd,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": pd * grad_accum * world_size,
        "gradient_clipping": recipe.optim.grad_clip or 0.0,  # DeepSpeed: 0 = no clipping
        "bf16": {"enabled": recipe.train.precision == "bf16"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # a plain torch AdamW: nothing to JIT-compile
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters: decay on matrices; none on biases and norms (ndim < 2), nor on
    what the module's `no_weight_decay()` lists (`UnifiedModel`: its row-masked embedding matrices). Both the
    stages and the visualizer take their groups from here."""
    listed = getattr(module, "no_weight_decay", None)
    exempt = {id(p) for p in listed()} if listed is not None else set()
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or id(p) in exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def cosine_schedule(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """Linear warmup over ceil(ratio × total) steps, then cosine to min_lr_ratio (LLaVA / HF `cosine`)."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def prepare_model(recipe: TrainRecipe) -> Loaded:
    """Build (stage 1) or load (stage 2, `init_from`) the model, then apply the stage, LoRA and checkpointing.

    Loading happens before `deepspeed.initialize`, on every rank, from an ordinary directory: under ZeRO-3 the
    weights (projector, new token rows, LLM) are therefore complete when DeepSpeed partitions them.
    """
    loaded = base_model(recipe)
    model = loaded.model
    if recipe.vision_coef is not None:
        model.config.vision_coef = recipe.vision_coef
    stage = recipe.stage_config
    if recipe.lora is not None:
        apply_lora(model, stage, recipe)
    else:
        apply_stage(model, stage)
    if recipe.train.gradient_checkpointing:
        # Non-reentrant: correct when the LM's inputs need no grad (frozen embeddings) and under ZeRO-3.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return loaded


def base_model(recipe: TrainRecipe) -> Loaded:
    """The recipe's model as built (`model`) or loaded (`init_from`), before any stage, LoRA or checkpointing."""
    if recipe.init_from is not None:
        return load(resolve_init_from(recipe.init_from))
    assert recipe.model is not None
    return build_model(recipe.model)


def resolve_init_from(path: str) -> str:
    from pathlib import Path

    from trainer.model import MM_CONFIG

    p = Path(path)
    if (p / MM_CONFIG).is_file():
        return str(p)
    if (p / "export" / MM_CONFIG).is_file():
        return str(p / "export")
    raise NotFound(f"init_from {p}: neither an exported model ({MM_CONFIG}) nor a run directory with "
                            "export/; point it at the stage-1 output_dir once stage 1 has finished")


def apply_lora(model: UnifiedModel, stage: StageConfig, recipe: TrainRecipe) -> None:
    """LoRA adapters on the LLM; the other stage parts (projector, head, new rows) train in full."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("lora needs the `peft` package: pip install 'peft==0.21.2'") from None
    assert recipe.lora is not None
    apply_stage(model, StageConfig(trainable=[p for p in stage.trainable if p != "llm"],
                                   vision_loss=stage.vision_loss))
    cfg = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                     target_modules=list(recipe.lora.target_modules), bias="none", task_type="CAUSAL_LM")
    keep = [p for p in model.llm.parameters() if p.requires_grad]  # new-token rows: peft would freeze them
    model.llm = get_peft_model(model.llm, cfg)
    for p in keep:
        p.requires_grad_(True)
    n = sum(p.numel() for n_, p in model.llm.named_parameters() if "lora_" in n_)
    log.info("LoRA r=%d alpha=%d on %s: %d adapter parameters", recipe.lora.r, recipe.lora.alpha,
             recipe.lora.target_modules, n)


def merge_lora(model: UnifiedModel) -> None:
    """Fold the adapters into the LLM weights (for export): the result loads without peft."""
    if hasattr(model.llm, "merge_and_unload"):
        model.llm = model.llm.merge_and_unload()
