"""One built quality world per test session: sources A and B (with planted duplicates) and the eval sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.testing.quality import QualityWorld, make_quality_world


@dataclass
class Built:
    world: QualityWorld
    a: Path
    b: Path
    cache: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("quality")
    w = make_quality_world(root / "raw")
    for name, src, fmt in (("a", w.a, "jsonl"), ("b", w.b, "wds")):
        build("cambrian", CambrianOptions(input=[src], media_root=w.media_root),
              BuildSettings(out=root / name, format=fmt, shard_size=10))
    return Built(w, root / "a", root / "b", root / "cache")
