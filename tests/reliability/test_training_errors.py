"""A training run never exports NaN weights, and a full disk mid-run is one line and a resumable state."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest
import torch

from mmdata.core.errors import StorageError
from tests.worlds import make_train_world
from trainer.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("MMTRAIN_SHM_COMM", "0")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_train_world(tmp_path_factory.mktemp("train_world"), size=48)


def _recipe(world: tuple[Path, Path], out: Path):
    models, mixture = world
    return load_recipe(ROOT / "recipes" / "tiny" / "stage1.yaml", {
        "data.mixture": str(mixture), "output_dir": str(out), "model.llm": str(models / "lm"),
        "model.vision_tower": str(models / "vision"), "logging.progress": False, "logging.tensorboard": False,
        "train.max_steps": 4, "checkpoint.every": 2, "checkpoint.keep": 2})


def test_non_finite_loss_stops_naming_the_step(world: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.model import UnifiedModel
    from trainer.train import NonFiniteLoss, train

    real = UnifiedModel.forward
    calls = {"n": 0}

    def poisoned(self: UnifiedModel, *args: object, **kwargs: object):  # from step 3 on (2 micro-batches a step)
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        return dataclasses.replace(out, loss=out.loss * float("nan")) if calls["n"] > 4 else out

    monkeypatch.setattr(UnifiedModel, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"^step 3: loss is nan.*last checkpoint: step_00000002"):
        train(_recipe(world, out))
    assert not (out / "export").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002"


def test_disk_full_at_a_checkpoint_is_one_line_and_resumable(world: tuple[Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import checkpoint
    from trainer.train import train

    real = checkpoint.save

    def full_at_4(engine: object, run_dir: Path, step: int, *args: object, **kwargs: object) -> Path:
        if step == 4:
            torch.save({"x": 1}, Path(run_dir) / "partial.pt")  # as if the disk filled while writing
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(engine, run_dir, step, *args, **kwargs)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", full_at_4)
        with pytest.raises(StorageError, match=rf"^{out}: No space left on device; .*resumes from the last checkpoint"):
            train(_recipe(world, out))
    assert not (out / "export").exists()
    result = train(_recipe(world, out))  # the same command: resumes from step 2
    assert result.steps == 4 and (out / "export").is_dir()
