"""The test world is generated on the spot: no network, no model hub, no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from mmdata.testing.llava import World, make_world


@pytest.fixture(scope="session")
def llava_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("llava_world"))


@pytest.fixture
def fresh_world(tmp_path: Path) -> World:
    return make_world(tmp_path / "world")
