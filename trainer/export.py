"""The final model as an ordinary directory (`<run>/export/`): what `trainer.load` and stage 2's `init_from` read.

Same layout as `UnifiedModel.save_pretrained` (llm/ with tokenizer, vision/ with preprocessor config,
mm_config.json, mm_weights.safetensors) plus the recipe that produced it. LoRA adapters are merged first, so the
export loads without peft. Under ZeRO-3 the partitioned weights are consolidated into one 16-bit state dict on
rank 0 (DeepSpeed gathers layer by layer); under ZeRO 0-2 every rank already holds the full module.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from trainer.engine import merge_lora
from trainer.model import UnifiedModel

EXPORT = "export"


def export(engine: Any, model: UnifiedModel, run_dir: Path, *, rank: int, zero_stage: int) -> Path:
    """Collective: every rank calls it; rank 0 writes `<run_dir>/export` (replacing a previous one)."""
    out = run_dir / EXPORT
    state = engine._zero3_consolidated_16bit_state_dict() if zero_stage == 3 else None
    if rank == 0:
        tmp = run_dir / (EXPORT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        merge_lora(model)
        model.save_pretrained(tmp, state_dict=state)
        if (run_dir / "recipe.yaml").is_file():
            shutil.copy(run_dir / "recipe.yaml", tmp / "recipe.yaml")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)  # an export/ that exists is complete
    dist.barrier()
    return out
