"""Cached vision features: the same features and loss as the live tower, resumable building, mismatches refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmdata.read.loader import RecordList
from mmdata.read.view import Mixture
from tests.trainer.trainer_world import RECORDS, N, TrainWorld, fake_image
from trainer import Collator, ConversationDataset, ModelConfig, Skipped, build_model
from trainer.features import MANIFEST, FeatureStore, build_cache
from trainer.loop import skip_kind
from trainer.train import model_inputs


def _model(world: TrainWorld, **kw):
    cfg = {"num_image_tokens": 4} | kw
    return build_model(ModelConfig(llm=str(world.models / "lm"), vision_tower=str(world.models / "vision"),
                                   **cfg)).model


@pytest.fixture(scope="module")
def cache(train_world: TrainWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("features")
    summary = build_cache(_model(train_world), Mixture(train_world.mixture), out, dtype="float32", batch_size=5,
                          shard_images=8, progress=False)
    assert summary["complete"] and len(summary["shards"]) > 2 and summary["counts"]["failed_records"] == 0
    return out


def test_cached_batch_gives_the_live_towers_features_and_loss(train_world: TrainWorld, cache: Path) -> None:
    torch.manual_seed(0)
    model = _model(train_world)
    mixture = Mixture(train_world.mixture)
    live = ConversationDataset.for_model(mixture, model, max_length=512)
    cached = ConversationDataset.for_model(mixture, model, max_length=512,
                                           features=FeatureStore.open(cache, model))
    idx = range(12)
    a = Collator(model.pad_token_id)([live[i] for i in idx])
    b = Collator(model.pad_token_id)([cached[i] for i in idx])
    assert b["pixel_values"] is None and b["image_features"].shape[0] == a["pixel_values"].shape[0] > 0
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["image_is_target"], b["image_is_target"])
    with torch.no_grad():
        torch.testing.assert_close(b["image_features"], model.encode_images(a["pixel_values"]), rtol=0, atol=1e-6)
        out_a, out_b = model(**model_inputs(a), vision_loss=True), model(**model_inputs(b), vision_loss=True)
    assert out_b.n_vision_targets == out_a.n_vision_targets > 0
    torch.testing.assert_close(out_b.loss, out_a.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(out_b.vision_loss, out_a.vision_loss, rtol=1e-6, atol=0)


def test_an_interrupted_cache_resumes_to_the_same_bytes(train_world: TrainWorld, cache: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    (copy / "shard-00001.json").unlink()  # shard 1 was being written when the run died
    (copy / "shard-00001.npy").unlink()
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps(manifest | {"complete": False}))
    model = _model(train_world)
    with pytest.raises(ValueError, match="incomplete"):
        FeatureStore.open(copy, model)
    torch.manual_seed(0)
    build_cache(model, Mixture(train_world.mixture), copy, dtype="float32", batch_size=5, shard_images=8,
                progress=False)
    for f in sorted(cache.iterdir()):
        assert (copy / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize(("change", "field"), [({"num_image_tokens": 1}, "num_image_tokens"),
                                                ({"token_reduction": "avgpool"}, "token_reduction"),
                                                ({"image_aspect_ratio": "resize"}, "image_aspect_ratio")])
def test_a_cache_from_another_setup_is_refused(train_world: TrainWorld, cache: Path, change: dict,
                                               field: str) -> None:
    with pytest.raises(ValueError, match=f"another vision setup.*{field}"):
        FeatureStore.open(cache, _model(train_world, **change))


def test_another_tower_is_refused_and_the_cache_is_not_overwritten(train_world: TrainWorld, cache: Path) -> None:
    model = _model(train_world)
    with torch.no_grad():
        next(model.vision.parameters()).add_(1.0)  # any weight of the tower counts
    with pytest.raises(ValueError, match="tower_sha256"):
        FeatureStore.open(cache, model)
    with pytest.raises(ValueError, match="other settings.*tower_sha256"):
        build_cache(model, Mixture(train_world.mixture), cache, dtype="float32", shard_images=8, progress=False)


def _broken_t2i(record, j):
    if record.id == "t2i1":
        raise OSError("image file is truncated")
    return fake_image(record, j)


def test_an_image_that_fails_at_caching_time_is_a_skip_with_its_reason(shared, tmp_path: Path) -> None:
    records = RecordList([RECORDS[k] for k in ("vqa", "t2i", "text", "edit")], _broken_t2i)
    summary = build_cache(shared.model, records, tmp_path, progress=False)
    assert summary["counts"] == {"records": 3, "images": 3, "failed_records": 1}  # the text record has no image
    data = ConversationDataset.for_model(records, shared.model, max_length=512, on_error="skip",
                                         features=FeatureStore.open(tmp_path, shared.model))
    items = [data[i] for i in range(len(data))]
    assert isinstance(items[1], Skipped) and "image file is truncated" in items[1].reason
    assert skip_kind(items[1].reason) == "features: InputError"
    assert [type(x).__name__ for x in items] == ["Sample", "Skipped", "Sample", "Sample"]
    assert items[3].image_features.shape == (2, N, shared.model.vision.hidden_size)
