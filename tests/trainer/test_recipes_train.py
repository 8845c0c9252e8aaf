"""Every shipped training recipe loads; overrides, batch arithmetic and the √ lr rule; errors name the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trainer.config import ConfigError
from trainer.engine import cosine_schedule, ds_config
from trainer.recipe import load_recipe, parse_overrides

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*/stage*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_loads(path: Path) -> None:
    r = load_recipe(path)
    assert r.stage == path.stem and (r.model is None) != (r.init_from is None)
    cfg = ds_config(r, r.batch.resolve(1 if r.batch.global_batch is None else 8), 8)
    assert cfg["zero_optimization"]["stage"] == r.train.zero_stage


def test_metamorph_reference_hyperparameters() -> None:
    root = RECIPES[0].parents[1] / "metamorph"
    s1, s2 = load_recipe(root / "stage1.yaml"), load_recipe(root / "stage2.yaml")
    assert (s1.optim.lr, s2.optim.lr) == (3.74e-5, 6.93e-5)
    assert (s1.batch.resolve(8), s2.batch.resolve(8)) == (7, 24)  # 448 / (8 × 8), 1536 / (8 × 8)
    assert (s1.train.zero_stage, s2.train.zero_stage) == (2, 3)
    assert s1.model.num_image_tokens == 64 and s1.data.max_length == 4096 and s1.optim.warmup_ratio == 0.03
    assert s1.stage_config.trainable == ["projector", "new_token_rows"] and s2.stage_config.vision_loss
    # The reference stretches images to the square (its decoder knows no padding) and clips no gradient.
    assert s1.model.image_aspect_ratio == "resize"
    assert s1.optim.grad_clip is None and s2.optim.grad_clip is None


def test_grad_clip_null_means_none() -> None:
    r = load_recipe(RECIPES[-1], {"optim.grad_clip": None})
    assert ds_config(r, 1, 1)["gradient_clipping"] == 0.0  # DeepSpeed clips only when > 0
    assert ds_config(load_recipe(RECIPES[-1], {"optim.grad_clip": 0.5}), 1, 1)["gradient_clipping"] == 0.5
    with pytest.raises(ConfigError, match="grad_clip must be >= 0 or null"):
        load_recipe(RECIPES[-1], {"optim.grad_clip": -1})


def test_overrides_are_yaml_and_validated(tmp_path: Path) -> None:
    # `1e-4` is a number (YAML 1.1 alone would read a string); a quoted "1e-4" still validates as optim.lr's float.
    assert parse_overrides(["--optim.lr", "1e-4", "--train.max_steps=3", "--trainable", "[llm, projector]",
                            "--lora", "null"]) == {"optim.lr": 1e-4, "train.max_steps": 3,
                                                    "trainable": ["llm", "projector"], "lora": None}
    r = load_recipe(RECIPES[-1], {"optim.lr": "1e-4", "output_dir": "rel"})
    assert r.optim.lr == 1e-4 and Path(r.output_dir).is_absolute()
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        load_recipe(RECIPES[-1], {"optim.lrr": 1})
    with pytest.raises(ConfigError, match="train.zero_stage must be 0, 1, 2 or 3"):
        load_recipe(RECIPES[-1], {"train.zero_stage": 4})
    with pytest.raises(ConfigError, match="trainable\\[0\\] is 'lm'"):
        load_recipe(RECIPES[-1], {"trainable": ["lm"]})
    with pytest.raises(ConfigError, match="exactly one of `model`"):
        load_recipe(RECIPES[-1], {"init_from": None})


def test_global_batch_and_sqrt_lr_rule() -> None:
    r = load_recipe(RECIPES[0], {"optim.lr_scale_from": "3.74e-5@448", "batch.per_device": 4})
    assert r.batch.resolve(8) == 14 and r.optim.resolve_lr(4 * 14 * 8) == pytest.approx(3.74e-5)
    assert r.optim.resolve_lr(112) == pytest.approx(3.74e-5 * math.sqrt(112 / 448))
    with pytest.raises(ConfigError, match="not a multiple of batch.per_device 4 × world size 3"):
        r.batch.resolve(3)
    with pytest.raises(ConfigError, match="BASE_LR@BASE_BATCH"):
        load_recipe(RECIPES[0], {"optim.lr_scale_from": "fast"})


def test_cosine_schedule_warms_up_then_decays() -> None:
    f = cosine_schedule(100, 0.03, 0.0)
    assert f(0) < f(1) < f(2) <= 1.0 and f(3) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 97))) and f(99) < 0.01
