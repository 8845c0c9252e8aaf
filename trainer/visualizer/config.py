"""The visualizer recipe (`recipes/*/visualizer.yaml`) → a typed `VisualizerRecipe`, validated once, here.

The batch, optimiser, train, checkpoint and logging sections are the stages' own (`trainer.recipe`); what is new is
where the condition comes from (`condition`), the diffusion model (`diffusion`), the condition projector
(`projector`) and the image source (`data`). `trainer/README.md` documents every key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmdata.core.errors import NotFound
from mmdata.core.options import ConfigError, from_dict, parse_overrides
from trainer.config import ModelConfig
from trainer.recipe import BatchSection, CheckpointSection, LoggingSection, OptimSection, TrainSection, read_recipe

__all__ = ["ConditionSpec", "VisualizerRecipe", "load_visualizer_recipe", "parse_overrides"]

PROJECTOR_TYPES = ("mlp", "xattn", "transformer")


@dataclass
class VisDataSection:
    source: str  # a built dataset or a mixture directory
    images: Literal["target", "any"] = "target"  # target: the first generation target of a record; any: its first image
    on_error: Literal["raise", "skip"] = "skip"
    num_workers: int = 0  # dataloader worker processes (image decoding and preprocessing)
    shuffle: bool = False  # reshuffle every epoch (seeded); a mixture is already interleaved
    vision_features: str | None = None  # a `mmtrain cache-features` directory: condition tokens read, tower not run

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class ConditionSection:
    """Which tokens condition the UNet: stage 2's, read from its export, or named here (checked against it)."""

    from_model: str | None = None  # a stage-1/2 run directory or export: its tower, reduction, N and aspect mode
    vision_tower: str | None = None  # without from_model: the tower dir; with it: must be the model's tower
    mm_vision_select_layer: int | None = None  # unset: the model's (or the stages' default, -1)
    token_reduction: str | None = None  # unset: the model's (or interpolation)
    num_image_tokens: int | None = None  # unset: the model's (or 64)
    normalize_vision: bool | None = None  # unset: the model's (or true)
    image_aspect_ratio: Literal["pad", "resize"] | None = None  # unset: the model's (or pad)

    def __post_init__(self) -> None:
        if self.from_model is None and self.vision_tower is None:
            raise ConfigError("condition: set from_model (a stage-2 run or export) or vision_tower")


@dataclass
class DiffusionSection:
    pretrained: str  # a local diffusers directory in the Stable Diffusion layout: unet/, vae/, scheduler/
    unet: Literal["frozen", "train", "scratch"] = "train"  # scratch: the pretrained UNet's config, random weights
    resolution: int = 512  # images are resized (shorter side) and centre-cropped to this for the VAE
    cond_dropout: float = 0.1  # probability of a zero condition per sample (classifier-free guidance)
    noise_offset: float = 0.0  # scale of a per-image, per-channel constant added to the noise

    def __post_init__(self) -> None:
        if not 0 <= self.cond_dropout < 1:
            raise ConfigError(f"diffusion.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.resolution < 8:
            raise ConfigError(f"diffusion.resolution must be >= 8, got {self.resolution}")
        if self.noise_offset < 0:
            raise ConfigError(f"diffusion.noise_offset must be >= 0, got {self.noise_offset}")


@dataclass
class ProjectorSection:
    type: Literal["mlp", "xattn", "transformer"] = "mlp"  # maps the N condition tokens to the UNet's context
    hidden_dim: int = 2048  # width inside the projector
    num_layers: int = 2  # layers (mlp: input and output at least)
    num_heads: int = 8  # attention heads (xattn, transformer)
    context_tokens: int = 77  # length of the UNet's context; mlp pads its N tokens with zeros up to it

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.hidden_dim < 1 or self.num_heads < 1:
            raise ConfigError("projector.num_layers, hidden_dim and num_heads must be >= 1")
        if self.context_tokens < 1:
            raise ConfigError(f"projector.context_tokens must be >= 1, got {self.context_tokens}")


@dataclass
class VisOptimSection(OptimSection):
    weight_decay: float = 0.01  # MetaMorph's visualizer uses AdamW with 0.01
    schedule: Literal["cosine", "constant"] = "cosine"  # after the linear warmup


@dataclass
class VisualizerRecipe:
    output_dir: str  # run directory: recipe, metrics, checkpoints, export/
    data: VisDataSection
    condition: ConditionSection
    diffusion: DiffusionSection
    projector: ProjectorSection = field(default_factory=ProjectorSection)
    batch: BatchSection = field(default_factory=BatchSection)
    optim: VisOptimSection = field(default_factory=VisOptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def __post_init__(self) -> None:
        if self.train.zero_stage == 3:
            # The frozen VAE and tower run outside the engine and the UNet fits one device; ZeRO-2 already shards
            # the optimizer state, which is what grows with a trainable UNet.
            raise ConfigError("train.zero_stage 3 is not supported for the visualizer; use 2 (optimizer state "
                              "sharded) or 0")
        if self.projector.type == "mlp" and self.projector.num_layers < 2:
            raise ConfigError("projector.num_layers must be >= 2 for type mlp (input and output layers)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PATH_KEYS = (("output_dir",), ("data", "source"), ("data", "vision_features"), ("condition", "from_model"),
             ("condition", "vision_tower"), ("diffusion", "pretrained"))


def load_visualizer_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> VisualizerRecipe:
    """Read, override, resolve paths (file paths relative to the file, flags to the cwd), validate."""
    return read_recipe(path, overrides, build=lambda raw: from_dict(VisualizerRecipe, raw), path_keys=PATH_KEYS,
                       missing="visualizer recipe not found; see recipes/tiny/visualizer.yaml")


# ---------------------------------------------------------------------------- the condition contract

SPEC_FIELDS = ("mm_vision_select_layer", "token_reduction", "num_image_tokens", "normalize_vision",
               "image_aspect_ratio")
TOWER_KEYS = ("model_type", "hidden_size", "image_size", "patch_size", "num_hidden_layers")


@dataclass(frozen=True)
class ConditionSpec:
    """What the condition tokens are: a tower (its identity) and how its features become N normalised tokens.

    The visualizer and the stage-2 model must agree on all of it: the LLM predicts exactly these tokens.
    """

    vision_tower: str  # where the tower was read from (not compared: a copy elsewhere is the same tower)
    tower: dict[str, Any]  # TOWER_KEYS of its config.json
    mm_vision_select_layer: int
    token_reduction: str
    num_image_tokens: int
    normalize_vision: bool
    image_aspect_ratio: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionSpec:
        return cls(**d)

    @classmethod
    def of_model(cls, model_dir: str | Path) -> ConditionSpec:
        """The spec of an exported unified model (stage 1 or 2), or of a run directory's export/."""
        from trainer.engine import resolve_init_from
        from trainer.model import MM_CONFIG

        export = Path(resolve_init_from(str(model_dir)))
        m = json.loads((export / MM_CONFIG).read_text())["model"]
        return cls.build(str(export / m["vision_tower"]), **{k: m[k] for k in SPEC_FIELDS})

    @classmethod
    def build(cls, vision_tower: str, **fields: Any) -> ConditionSpec:
        cfg_file = Path(vision_tower, "config.json")
        if not cfg_file.is_file():
            raise NotFound(f"vision tower: no config.json in {vision_tower}; pass a local SigLIP/CLIP dir")
        cfg = json.loads(cfg_file.read_text())
        cfg = cfg.get("vision_config", cfg) if cfg.get("model_type") in ("siglip", "clip") else cfg
        return cls(vision_tower=str(vision_tower), tower={k: cfg.get(k) for k in TOWER_KEYS}, **fields)

    def mismatches(self, other: ConditionSpec) -> list[str]:
        """Human-readable differences (`num_image_tokens: 64 vs 16`), tower identity included."""
        out = [f"tower {k}: {self.tower.get(k)!r} vs {other.tower.get(k)!r}" for k in TOWER_KEYS
               if self.tower.get(k) != other.tower.get(k)]
        return out + [f"{k}: {getattr(self, k)!r} vs {getattr(other, k)!r}" for k in SPEC_FIELDS
                      if getattr(self, k) != getattr(other, k)]


def resolve_condition(c: ConditionSection) -> ConditionSpec:
    """The recipe's condition as a spec: from the model's export, with any key set here checked against it."""
    explicit = {k: getattr(c, k) for k in SPEC_FIELDS if getattr(c, k) is not None}
    if c.from_model is None:
        defaults = {k: getattr(ModelConfig, k) for k in SPEC_FIELDS}  # the stages' own defaults
        assert c.vision_tower is not None
        return ConditionSpec.build(c.vision_tower, **(defaults | explicit))
    spec = ConditionSpec.of_model(c.from_model)
    for k, v in explicit.items():
        if getattr(spec, k) != v:
            raise ConfigError(f"condition.{k} is {v!r} but the model at {c.from_model} was trained with "
                              f"{getattr(spec, k)!r}; the visualizer must see the tokens that model predicts: "
                              "remove the key (it is read from the model) or point from_model at a matching model")
    if c.vision_tower is not None:
        mine = ConditionSpec.build(c.vision_tower, **{k: getattr(spec, k) for k in SPEC_FIELDS})
        diff = spec.mismatches(mine)
        if diff:
            raise ConfigError(f"condition.vision_tower {c.vision_tower} is not the tower of {c.from_model} "
                              f"({'; '.join(diff)}); remove condition.vision_tower to use the model's own")
        spec = mine
    return spec
