"""Vision heads: final LLM hidden state (llm_dim) → predicted vision embedding (vision_dim). One registry."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mmdata.errors import InputError


def mlp(llm_dim: int, vision_dim: int) -> nn.Module:
    """MetaMorph's head: Linear(llm, llm) → GELU → Linear(llm, vision)."""
    return nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, vision_dim))


HEADS: dict[str, Callable[[int, int], nn.Module]] = {"mlp": mlp}


def build_head(name: str, llm_dim: int, vision_dim: int) -> nn.Module:
    if name not in HEADS:
        raise InputError(f"vision_head_type {name!r} is unknown; expected one of {sorted(HEADS)}")
    return HEADS[name](llm_dim, vision_dim)
