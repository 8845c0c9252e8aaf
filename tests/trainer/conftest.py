"""Tiny world for trainer tests: random LM + vision tower + tokenizer built once per session, loaded for real."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers

from tests.trainer.trainer_world import TrainWorld, model_config
from tests.worlds import make_train_world
from trainer import build_model, make_tiny
from trainer.tiny import TinyPaths

transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return make_tiny(tmp_path_factory.mktemp("tiny_llama_siglip"), llm="llama", vision="siglip")


@pytest.fixture(scope="session")
def tiny_qwen_clip(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return make_tiny(tmp_path_factory.mktemp("tiny_qwen_clip"), llm="qwen2", vision="clip")


@pytest.fixture
def built(tiny: TinyPaths):
    """A fresh model per test (0.3 s): tests change trainable flags and weights."""
    return build_model(model_config(tiny))


@pytest.fixture(scope="session")
def shared(tiny: TinyPaths):
    """One model for read-only tests (templates, data)."""
    return build_model(model_config(tiny))


@pytest.fixture(scope="session")
def train_world(tmp_path_factory: pytest.TempPathFactory) -> TrainWorld:
    root = tmp_path_factory.mktemp("train_world")
    models, mixture = make_train_world(root, size=48)
    return TrainWorld(root, models, mixture)
