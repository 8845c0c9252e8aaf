"""Typed trainer configs, validated once at the edge: an unknown key or a wrong type is an error naming the key.

Components take plain arguments, not these objects; `trainer/README.md` documents every key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

TRAINABLE_PARTS = ("projector", "new_token_rows", "llm", "vision_head", "vision")


class ConfigError(ValueError):
    """A config key is unknown, missing, or of the wrong type / value. The message names the key."""


@dataclass
class ModelConfig:
    llm: str
    vision_tower: str
    mm_vision_select_layer: int = -1
    normalize_vision: bool = True
    token_reduction: str = "interpolation"
    num_image_tokens: int = 64
    mm_projector_type: str = "mlp2x_gelu"
    vision_head_type: str | None = "mlp"
    vision_coef: float = 1.0
    template: str = "llama3"
    image_aspect_ratio: Literal["pad", "resize"] = "pad"
    ce_chunk_size: int = 1024
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

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
            raise ConfigError(f"num_image_tokens must be >= 1, got {self.num_image_tokens}")
        if self.ce_chunk_size < 1:
            raise ConfigError(f"ce_chunk_size must be >= 1, got {self.ce_chunk_size}")
        if self.vision_coef < 0:
            raise ConfigError(f"vision_coef must be >= 0, got {self.vision_coef}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, d)


@dataclass
class DataConfig:
    max_length: int = 4096
    on_error: Literal["raise", "skip"] = "skip"
    group_by_length: bool = True

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
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
        raise ConfigError(f"{key} is {value!r}; expected one of {sorted(registry)}")


def from_dict(cls: type[T], d: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass `cls` from `d`, rejecting unknown keys, missing required keys and wrong types by name."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}{unknown[0]!r}: unknown key in {cls.__name__}; accepted keys: {sorted(fields)}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in d:
            raise ConfigError(f"{where}{name!r}: required key missing in {cls.__name__}")
        if name in d:
            _check_type(f"{where}{name}", d[name], hints[name])
    return cls(**d)


def _check_type(key: str, value: Any, typ: Any) -> None:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _check_type(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not any of {[_name(a) for a in args]}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        for i, v in enumerate(value):
            _check_type(f"{key}[{i}]", v, args[0])
        return
    if typ is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, typ)
    if not ok:
        raise ConfigError(f"{key}: expected {_name(typ)}, got {type(value).__name__} {value!r}")


def _name(t: Any) -> str:
    return getattr(t, "__name__", str(t))
