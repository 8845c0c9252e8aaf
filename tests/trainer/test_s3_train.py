"""`mmtrain stage1` reading its mixture from S3 (moto's server on the loopback): the same records, mixture index and
losses as the same world on local disk; a JSONL source whose media stayed on the build machine stops it with one
message."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

import mmdata
from mmdata.read.dataset import MediaUnreachable
from mmdata.testing.s3 import S3Server
from tests.worlds import make_train_world
from trainer.metrics import read
from trainer.recipe import load_recipe

pytest.importorskip("s3fs")
TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny"
os.environ.setdefault("MMTRAIN_SHM_COMM", "0")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        server.bucket("mmtrain")
        yield server


def _stage1(models: Path, mixture: object, out: Path) -> Path:
    from trainer.train import train

    overrides = {"data.mixture": str(mixture), "output_dir": str(out), "logging.progress": False,
                 "logging.tensorboard": False, "train.max_steps": 4, "checkpoint.every": 4, "checkpoint.keep": 1,
                 "model.llm": str(models / "lm"), "model.vision_tower": str(models / "vision")}
    return train(load_recipe(TINY / "stage1.yaml", overrides)).run_dir


def test_stage1_from_an_s3_mixture_matches_local_disk(s3: S3Server, tmp_path: Path) -> None:
    models, remote = make_train_world(tmp_path / "remote", 48, data="s3://mmtrain/world", copy_media=True)
    _, local = make_train_world(tmp_path / "local", 48, data=tmp_path / "local" / "data", copy_media=True,
                                models=False)
    there, here = mmdata.open(remote), mmdata.open(local)
    assert isinstance(there, mmdata.Mixture) and isinstance(here, mmdata.Mixture)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fs.cat_file("mmtrain/world/mixture/index.npy") == (Path(local) / "index.npy").read_bytes()
    assert list(there) == list(here)

    shutil.rmtree(tmp_path / "remote" / "src")  # the build machine's media are gone: the S3 copies serve
    s3_run = _stage1(models, remote, tmp_path / "runs" / "s3")
    local_run = _stage1(models, local, tmp_path / "runs" / "local")
    losses = [(r["step"], r["loss"]) for r in read(s3_run)]
    assert len(losses) == 4 and losses == [(r["step"], r["loss"]) for r in read(local_run)]


def test_media_left_on_the_build_machine_stop_training_with_one_message(s3: S3Server, tmp_path: Path) -> None:
    models, remote = make_train_world(tmp_path, 48, data="s3://mmtrain/in-place")  # media referenced in place
    shutil.rmtree(tmp_path / "src" / "images")
    with pytest.raises(MediaUnreachable, match="--copy-media.*--format wds"):
        _stage1(models, remote, tmp_path / "run")
