"""Training recipes: `recipes/<name>/stage{1,2}.yaml` → a typed `TrainRecipe`.

Every section is a dataclass, validated by `mmdata.core.options` (the mechanism builder options and mixture recipes use
too): unknown keys and wrong types are errors naming `section.key`. Command-line overrides (`--data.mixture PATH`,
`--optim.lr 1e-4`, `--output_dir PATH`) are applied to the YAML *before* validation, so they pass the same checks.
Paths written in the file are relative to the file; paths given on the command line are relative to the working
directory. `trainer/README.md` documents every key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import yaml

from mmdata import is_url
from mmdata.core.errors import NotFound
from mmdata.core.options import ConfigError, from_dict, parse_overrides, safe_load, set_key
from trainer.config import STAGES, ModelConfig, StageConfig

__all__ = ["ConfigError", "RunRecipe", "TrainRecipe", "load_recipe", "parse_overrides"]

StageName = Literal["stage1", "stage2"]
T = TypeVar("T")


@dataclass
class DataSection:
    mixture: str  # a directory written by `mmdata mix` (or a dedup/decontamination view, or a dataset), or a URL (s3://…)
    max_length: int = 4096  # tokens per sample (or packed row); a longer conversation loses whole trailing exchanges
    on_error: Literal["raise", "skip"] = "skip"  # a sample that fails (bad image, no labels): skip it, or stop the run
    num_workers: int = 0  # dataloader worker processes
    shuffle: bool = False  # the mixture is already interleaved; true reshuffles every epoch (seeded)
    packing: bool = False  # whole samples packed into rows of max_length; batch.per_device then counts rows
    group_by_length: bool = False  # LLaVA's mega-batch length grouping (seeded, reshuffled each epoch)
    vision_features: str | None = None  # a directory written by `mmtrain cache-features`: no tower at train time
    lengths_cache: str | None = None  # where packing / grouping keep the expanded lengths; null: <output_dir>/lengths

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be >= 8, got {self.max_length}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.packing and self.group_by_length:
            raise ConfigError("data.packing and data.group_by_length are both true; packing already groups by "
                              "length (best-fit decreasing), so set one of them")


@dataclass
class BatchSection:
    per_device: int = 1  # samples (rows, when packing) per device per micro-batch
    grad_accum: int | None = None  # derived from global_batch when null
    global_batch: int | None = None  # per_device × grad_accum × world size; checked against the launch

    def __post_init__(self) -> None:
        for key in ("per_device", "grad_accum", "global_batch"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ConfigError(f"batch.{key} must be >= 1, got {v}")

    def resolve(self, world_size: int) -> int:
        """Gradient accumulation steps for this world size; an impossible global batch is an error."""
        if self.global_batch is None:
            return self.grad_accum or 1
        per_step = self.per_device * world_size
        if self.global_batch % per_step:
            raise ConfigError(f"batch.global_batch {self.global_batch} is not a multiple of batch.per_device "
                              f"{self.per_device} × world size {world_size}; change one of them")
        accum = self.global_batch // per_step
        if self.grad_accum is not None and self.grad_accum != accum:
            raise ConfigError(f"batch.grad_accum {self.grad_accum} disagrees with batch.global_batch "
                              f"{self.global_batch} = {self.per_device} × {accum} × {world_size} ranks; set one")
        return accum


@dataclass
class OptimSection:
    lr: float = 2e-5  # peak learning rate (reached at the end of the warmup)
    lr_scale_from: str | None = None
    """"BASE_LR@BASE_BATCH" (e.g. 3.74e-5@448): lr = BASE_LR × √(global batch / BASE_BATCH)"""
    weight_decay: float = 0.0  # AdamW; not applied to biases, norms and row-masked embeddings
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW
    eps: float = 1e-8  # AdamW
    warmup_ratio: float = 0.03  # share of the total steps spent in the linear warmup
    min_lr_ratio: float = 0.0  # cosine decays to lr × this
    grad_clip: float | None = 1.0
    """Max global gradient norm; null (or 0) applies none, as the reference's ZeRO configs (no gradient_clipping)."""

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"optim.eps must be a finite number > 0, got {self.eps}")
        if self.lr_scale_from is not None:
            parse_lr_scale(self.lr_scale_from)
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"optim.grad_clip must be >= 0 or null (no clipping), got {self.grad_clip}")

    def resolve_lr(self, global_batch: int) -> float:
        if self.lr_scale_from is None:
            return self.lr
        base_lr, base_batch = parse_lr_scale(self.lr_scale_from)
        return base_lr * math.sqrt(global_batch / base_batch)


@dataclass
class LoraSection:
    r: int = 16  # adapter rank
    alpha: int = 32  # adapter scale numerator (scale = alpha / r)
    dropout: float = 0.05  # dropout on the adapters' input
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """The LLM's linear layers that get adapters."""


@dataclass
class TrainSection:
    epochs: int = 1  # passes over the mixture
    max_steps: int | None = None  # stop after this many optimizer steps (crosses epochs if needed)
    seed: int = 0  # seeds the model init, shuffling and dropout
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 keeps fp32 master weights
    zero_stage: int = 2  # DeepSpeed ZeRO stage, 0-3
    gradient_checkpointing: bool = True  # recompute the LLM's activations in the backward pass (less memory)
    cpu_threads: int | None = None  # torch intra-op threads; 1 is much faster for tiny models on a busy CPU

    def __post_init__(self) -> None:
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"train.cpu_threads must be >= 1 or null, got {self.cpu_threads}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"train.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 or null, got {self.max_steps}")


@dataclass
class CheckpointSection:
    every: int = 500  # optimizer steps between checkpoints (one is always written at the end)
    keep: int = 2  # newest checkpoints kept; older ones are deleted
    resume: bool | Literal["auto"] = "auto"  # true: must resume; auto: resume if a checkpoint exists

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ConfigError(f"checkpoint.every and checkpoint.keep must be >= 1, got {self.every}, {self.keep}")


@dataclass
class LoggingSection:
    tensorboard: bool = True  # TensorBoard logs in <output_dir>/tb
    progress: bool = True  # a progress bar on rank 0 (stderr)


class RunRecipe(Protocol):
    """What the training loop (`trainer.loop.Trainer`) and `trainer.engine.ds_config` read of a recipe: the
    sections a stage's `TrainRecipe` and the visualizer's recipe share."""

    @property
    def output_dir(self) -> str: ...
    @property
    def batch(self) -> BatchSection: ...
    @property
    def optim(self) -> OptimSection: ...
    @property
    def train(self) -> TrainSection: ...
    @property
    def checkpoint(self) -> CheckpointSection: ...
    @property
    def logging(self) -> LoggingSection: ...
    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class TrainRecipe:
    stage: StageName  # must match the command: `mmtrain stage1` runs only stage1 recipes
    output_dir: str  # checkpoints, logs and export/ go here
    data: DataSection
    model: ModelConfig | None = None  # stage 1: base LM + tower; null when init_from is set
    init_from: str | None = None  # stage 2: a stage-1 run directory (its export/) or an exported model directory
    trainable: list[str] | None = None  # override of the stage's parts (e.g. add "vision" for the full strategy)
    vision_loss: bool | None = None  # override of the stage's vision loss
    vision_coef: float | None = None  # override of the model's vision_coef
    lora: LoraSection | None = None  # LoRA on the LLM instead of full fine-tuning ("llm" must be trainable)
    batch: BatchSection = field(default_factory=BatchSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def __post_init__(self) -> None:
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ConfigError(f"output_dir {self.output_dir} is a file, not a directory; choose another "
                              "--output_dir")
        self.stage_config  # noqa: B018 — validates `trainable` by name
        if (self.model is None) == (self.init_from is None):
            raise ConfigError("set exactly one of `model` (build from a base LM and vision tower) and `init_from` "
                              "(continue from a stage-1 run or exported model)")
        if self.lora is not None and "llm" not in self.stage_config.trainable:
            raise ConfigError("lora is set but 'llm' is not among the trainable parts; LoRA adapts the LLM")
        if self.data.vision_features is not None and "vision" in self.stage_config.trainable:
            raise ConfigError("data.vision_features is set but 'vision' is trainable: cached features come from a "
                              "frozen tower; drop 'vision' from trainable or data.vision_features")
        if self.lora is not None and self.train.zero_stage == 3:
            raise ConfigError("lora with train.zero_stage 3 is not supported (adapters are merged for export from "
                              "unpartitioned weights); use zero_stage 2")

    @property
    def stage_config(self) -> StageConfig:
        base = STAGES[self.stage]
        return StageConfig(trainable=list(self.trainable if self.trainable is not None else base.trainable),
                           vision_loss=base.vision_loss if self.vision_loss is None else self.vision_loss)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PATH_KEYS = (("model", "llm"), ("model", "vision_tower"), ("data", "mixture"), ("data", "vision_features"),
             ("data", "lengths_cache"), ("init_from",), ("output_dir",))


def parse_lr_scale(spec: str) -> tuple[float, int]:
    try:
        lr, batch = spec.split("@")
        base_lr, base_batch = float(lr), int(batch)
    except ValueError:
        raise ConfigError(f"lr_scale_from {spec!r}: expected BASE_LR@BASE_BATCH, e.g. 3.74e-5@448") from None
    if base_lr <= 0 or base_batch < 1:
        raise ConfigError(f"lr_scale_from {spec!r}: BASE_LR must be > 0 and BASE_BATCH >= 1")
    return base_lr, base_batch


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainRecipe:
    """Read, override, resolve paths, validate. Errors start with the file and name the key."""
    return read_recipe(path, overrides, build=recipe_from_dict, path_keys=PATH_KEYS,
                       missing="training recipe not found; see recipes/tiny/ and recipes/metamorph/")


def read_recipe(path: str | Path, overrides: dict[str, Any] | None, *, build: Callable[[dict[str, Any]], T],
                path_keys: tuple[tuple[str, ...], ...], missing: str) -> T:
    """Any recipe file (stages, visualizer): YAML, `path_keys` made absolute (relative to the file, or to the cwd
    when given as an override), overrides applied, then `build(raw)` validates."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: {missing}")
    try:
        raw = safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}")
    for keys in path_keys:
        _resolve_path(raw, keys, path.parent)
    try:
        for dotted, value in (overrides or {}).items():
            if tuple(dotted.split(".")) in path_keys and isinstance(value, str) and not is_url(value):
                value = str(Path(value).expanduser().resolve())  # a path typed on the command line: cwd-relative
            set_key(raw, dotted, value)
        return build(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def recipe_from_dict(raw: dict[str, Any]) -> TrainRecipe:
    if raw.get("init_from") is not None and isinstance(raw.get("model"), dict) and not raw["model"]:
        raw = raw | {"model": None}  # `model: {}` left in a stage-2 file that continues a run
    return from_dict(TrainRecipe, raw)


def _resolve_path(raw: dict[str, Any], keys: tuple[str, ...], base: Path) -> None:
    node: Any = raw
    for k in keys[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(keys[-1]), str) and not is_url(node[keys[-1]]):
        p = Path(node[keys[-1]]).expanduser()
        node[keys[-1]] = str(p if p.is_absolute() else (base / p).resolve())
