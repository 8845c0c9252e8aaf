"""Typed trainer configs, validated by `mmdata.core.options.from_dict` (the one mechanism for every config).

Components take plain arguments, not these objects; `trainer/README.md` documents every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmdata.core.options import ConfigError, from_dict

TRAINABLE_PARTS = ("projector", "new_token_rows", "llm", "vision_head", "vision")


@dataclass
class ModelConfig:
    llm: str  # local Hugging Face causal-LM directory, with its tokenizer
    vision_tower: str  # local SigLIP or CLIP vision model directory
    mm_vision_select_layer: int = -1  # the tower's hidden_states entry used; -1: the last, before the post-layernorm
    normalize_vision: bool = True  # L2-normalise each reduced image token (projector input and vision-loss target)
    token_reduction: str = "interpolation"  # patch grid → N tokens: interpolation, avgpool or none
    num_image_tokens: int = 64  # N, tokens per image (each image takes N + 2 positions)
    mm_projector_type: str = "mlp2x_gelu"  # mlp2x_gelu or linear
    vision_head_type: str | None = "mlp"  # the head predicting image tokens; null: none (understanding only)
    vision_coef: float = 1.0  # weight of the vision loss in the total loss
    template: str = "llama3"  # chat template for training and inference: llama3, qwen2, plain
    image_aspect_ratio: Literal["pad", "resize"] = "pad"  # pad to a square (LLaVA) or stretch (MetaMorph)
    ce_chunk_size: int = 1024  # rows of logits computed at a time in the text loss
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # dtype the model is loaded in
    attn_implementation: str | None = None  # the LM's attention, e.g. flash_attention_2 on GPU; null: transformers' default

    def __post_init__(self) -> None:
        # Registries are imported here, not at module top, so config stays importable without torch.
        from trainer.heads import HEADS
        from trainer.projector import PROJECTORS
        from trainer.templates import TEMPLATES
        from trainer.vision import REDUCTIONS

        _one_of("token_reduction", self.token_reduction, REDUCTIONS)
        _one_of("mm_projector_type", self.mm_projector_type, PROJECTORS)
        _one_of("template", self.template, TEMPLATES)
        if self.vision_head_type is not None:
            _one_of("vision_head_type", self.vision_head_type, HEADS)
        if self.num_image_tokens < 1:
            raise ConfigError(f"must be >= 1, got {self.num_image_tokens}", key="num_image_tokens")
        if self.ce_chunk_size < 1:
            raise ConfigError(f"must be >= 1, got {self.ce_chunk_size}", key="ce_chunk_size")
        if self.vision_coef < 0:
            raise ConfigError(f"must be >= 0, got {self.vision_coef}", key="vision_coef")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, d)


@dataclass
class StageConfig:
    """What trains and which losses are on: the only difference between stage 1 and stage 2."""

    trainable: list[str] = field(default_factory=lambda: ["projector", "new_token_rows"])
    vision_loss: bool = False

    def __post_init__(self) -> None:
        for i, part in enumerate(self.trainable):
            if part not in TRAINABLE_PARTS:
                raise ConfigError(f"trainable[{i}] is {part!r}; expected one of {list(TRAINABLE_PARTS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageConfig:
        return from_dict(cls, d)


STAGES: dict[str, StageConfig] = {
    "stage1": StageConfig(trainable=["projector", "new_token_rows"], vision_loss=False),
    "stage2": StageConfig(trainable=["llm", "projector", "vision_head"], vision_loss=True),
}


def _one_of(key: str, value: str, registry: dict[str, Any]) -> None:
    if value not in registry:
        raise ConfigError(f"is {value!r}; expected one of {sorted(registry)}", key=key)


__all__ = ["STAGES", "TRAINABLE_PARTS", "ConfigError", "ModelConfig", "StageConfig", "from_dict"]
