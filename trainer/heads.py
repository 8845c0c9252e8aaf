"""Vision heads: final LLM hidden state (llm_dim) → predicted vision embedding (vision_dim). One registry."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mmdata.core.errors import InputError

INIT_STD = 0.02  # the LLM's own initializer_range, which the reference's head gets from the model's _init_weights


def mlp(llm_dim: int, vision_dim: int) -> nn.Module:
    """MetaMorph's head: Linear(llm, llm) → GELU → Linear(llm, vision), initialised as the reference does."""
    head = nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, vision_dim))
    init_linear(head)
    return head


def init_linear(module: nn.Module, std: float = INIT_STD) -> None:
    """Weights ~ normal(0, std), biases 0. PyTorch's default (Kaiming-uniform) starts the 4096-wide head with
    outputs several times larger than the reference's, and a different first stage-2 loss curve."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


HEADS: dict[str, Callable[[int, int], nn.Module]] = {"mlp": mlp}


def build_head(name: str, llm_dim: int, vision_dim: int) -> nn.Module:
    if name not in HEADS:
        raise InputError(f"vision_head_type {name!r} is unknown; expected one of {sorted(HEADS)}")
    return HEADS[name](llm_dim, vision_dim)
