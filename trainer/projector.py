"""Projectors: vision features (vision_dim) → LLM input embeddings (llm_dim). One registry."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mmdata.core.errors import InputError


def mlp2x_gelu(vision_dim: int, llm_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))


def linear(vision_dim: int, llm_dim: int) -> nn.Module:
    return nn.Linear(vision_dim, llm_dim)


PROJECTORS: dict[str, Callable[[int, int], nn.Module]] = {"mlp2x_gelu": mlp2x_gelu, "linear": linear}


def build_projector(name: str, vision_dim: int, llm_dim: int) -> nn.Module:
    if name not in PROJECTORS:
        raise InputError(f"mm_projector_type {name!r} is unknown; expected one of {sorted(PROJECTORS)}")
    return PROJECTORS[name](vision_dim, llm_dim)
