"""Losses: chunked cross-entropy (never full-vocab fp32 logits for the whole batch) and MetaMorph's cosine loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _ce_sum(hidden: torch.Tensor, targets: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    return F.cross_entropy(lm_head(hidden).float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, lm_head: nn.Module,
                          chunk_size: int = 1024) -> torch.Tensor:
    """Mean CE of `lm_head(hidden)` against `targets`, over (K, D) rows already restricted to supervised positions.

    Logits exist for at most `chunk_size` rows at a time: each chunk is checkpointed, so backward recomputes its
    logits instead of keeping all K × vocab of them alive until the backward pass.
    """
    k = hidden.shape[0]
    if k == 0:
        raise ValueError("chunked_cross_entropy: no supervised position in the batch (every label is -100)")
    total = hidden.new_zeros((), dtype=torch.float32)
    use_ckpt = torch.is_grad_enabled() and k > chunk_size
    for s in range(0, k, chunk_size):
        h, y = hidden[s: s + chunk_size], targets[s: s + chunk_size]
        total = total + (checkpoint(_ce_sum, h, y, lm_head, use_reentrant=False) if use_ckpt
                         else _ce_sum(h, y, lm_head))
    return total / k


def cosine_vision_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−mean cosine similarity between L2-normalised predictions and the detached, normalised targets."""
    if pred.shape != target.shape:
        raise ValueError(f"vision loss: {tuple(pred.shape)} predictions for {tuple(target.shape)} targets; "
                         "every generation-target image needs exactly one prediction per image token")
    p = F.normalize(pred.float(), dim=-1)
    t = F.normalize(target.detach().float(), dim=-1)
    return -(p * t).sum(-1).mean()
