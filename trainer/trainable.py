"""Stage semantics as data: which parts train, applied in one place that logs trainable parameter counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from mmdata.core.errors import InputError
from trainer.config import TRAINABLE_PARTS, StageConfig
from trainer.model import UnifiedModel

log = logging.getLogger("trainer")


def apply_trainable(model: UnifiedModel, parts: Sequence[str]) -> dict[str, int]:
    """Freeze everything, then unfreeze `parts`; returns (and logs) trainable parameter counts per part.

    "new_token_rows" without "llm" makes the embedding matrices trainable behind a gradient mask, so only the
    image-token rows get a non-zero gradient (with AdamW and weight decay 0 the other rows never move; keep weight
    decay off for those tensors). Calling again replaces the previous setting, masks included.
    """
    for i, part in enumerate(parts):
        if part not in TRAINABLE_PARTS:
            raise InputError(f"trainable part [{i}] {part!r} is unknown; expected one of {list(TRAINABLE_PARTS)}")
    if "vision_head" in parts and model.vision_head is None:
        raise InputError("trainable part 'vision_head' requested but the model has no vision head")
    for h in model._row_hooks:
        h.remove()
    model._row_hooks.clear()
    model.requires_grad_(False)

    counts: dict[str, int] = {}
    modules = {"projector": model.projector, "llm": model.llm, "vision": model.vision,
               "vision_head": model.vision_head}
    for part in parts:
        if part in modules and modules[part] is not None:
            modules[part].requires_grad_(True)
            counts[part] = sum(p.numel() for p in modules[part].parameters())
    if "new_token_rows" in parts:
        counts["new_token_rows"] = _train_new_rows(model, masked="llm" not in parts)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("trainable parts %s: %s; %d of %d parameters require grad (new-row masking counted as full "
             "matrices)", list(parts), counts, trainable, total)
    return counts


def apply_stage(model: UnifiedModel, stage: StageConfig) -> dict[str, int]:
    if stage.vision_loss and model.vision_head is None:
        raise InputError("stage has vision_loss on but the model has no vision head (vision_head_type is null)")
    model.use_vision_loss = stage.vision_loss
    return apply_trainable(model, stage.trainable)


def _train_new_rows(model: UnifiedModel, *, masked: bool) -> int:
    mats = [model.llm.get_input_embeddings().weight]
    out = model.llm.get_output_embeddings()
    if out is not None and out.weight is not mats[0]:
        mats.append(out.weight)
    ids = torch.tensor(model.new_token_ids)
    for w in mats:
        w.requires_grad_(True)
        if masked:
            mask = torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device)
            mask[ids] = 1
            model._row_hooks.append(w.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype)))
    return len(ids) * sum(w.shape[1] for w in mats)
