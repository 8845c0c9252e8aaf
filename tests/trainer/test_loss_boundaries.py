"""Pins the losses (`trainer.losses`) and how `UnifiedModel.forward` combines them, before a refactoring moves them:

- total loss == text loss + vision_coef × vision loss, exactly, for a coefficient other than 1 (0.25) and for 0;
- the vision loss exists only when the stage turns it on (stage 2), never in stage 1, whatever vision_coef says;
- the recipe's `vision_coef` reaches the model through `prepare_model`; without it the saved model's value stays;
- chunked cross-entropy is the mean over supervised rows at every chunk boundary; the cosine loss is −mean cosine
  of normalised vectors and never sends a gradient into its targets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mmdata.read.loader import RecordList
from tests.trainer.trainer_world import RECORDS, fake_image
from trainer import STAGES, Collator, ConversationDataset, apply_stage
from trainer.losses import chunked_cross_entropy, cosine_vision_loss

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def batch(model: Any, keys: tuple[str, ...] = ("vqa", "t2i", "edit")) -> dict[str, Any]:
    ds = ConversationDataset.for_model(RecordList([RECORDS[k] for k in keys], fake_image), model, max_length=512)
    return Collator(model.pad_token_id)([ds[i] for i in range(len(ds))])


# ---------------------------------------------------------------------------- vision_coef in forward


@pytest.mark.parametrize("coef", [0.25, 0.0, 3.0])
def test_total_loss_is_text_plus_coef_times_vision_exactly(built: Any, coef: float) -> None:
    model = built.model
    apply_stage(model, STAGES["stage2"])
    model.config.vision_coef = coef
    b = batch(model)
    with torch.no_grad():
        out = model(**b)
    assert out.vision_loss is not None and out.n_vision_targets == 2  # t2i and edit generate an image
    assert float(out.vision_loss) != 0 and float(out.text_loss) > 0
    assert torch.equal(out.loss, out.text_loss + coef * out.vision_loss)
    if coef != 0:
        assert not torch.equal(out.loss, out.text_loss + out.vision_loss)


def test_the_coefficient_scales_the_gradient_the_vision_head_gets(built: Any) -> None:
    model = built.model
    apply_stage(model, STAGES["stage2"])
    b = batch(model, ("t2i",))
    grads = {}
    for coef in (1.0, 0.25):
        model.zero_grad()
        model.config.vision_coef = coef
        model(**b).loss.backward()
        grads[coef] = model.vision_head[-1].weight.grad.clone()  # only the vision loss reaches the head
    torch.testing.assert_close(grads[0.25], 0.25 * grads[1.0], rtol=1e-5, atol=1e-9)


def test_stage1_has_no_vision_loss_even_with_targets_and_a_coefficient(built: Any) -> None:
    model = built.model
    apply_stage(model, STAGES["stage1"])
    model.config.vision_coef = 0.25
    b = batch(model)
    with torch.no_grad():
        out = model(**b)
        forced = model(**b, vision_loss=True)  # the per-call switch still works
    assert out.vision_loss is None and out.n_vision_targets == 0 and torch.equal(out.loss, out.text_loss)
    assert forced.n_vision_targets == 2 and torch.equal(forced.loss, forced.text_loss + 0.25 * forced.vision_loss)
    assert STAGES["stage1"].vision_loss is False and STAGES["stage2"].vision_loss is True
    apply_stage(model, STAGES["stage2"])
    with torch.no_grad():
        assert model(**b, vision_loss=False).vision_loss is None


# ---------------------------------------------------------------------------- vision_coef from the recipe


def test_the_recipe_vision_coef_reaches_the_model(built: Any, tmp_path: Path) -> None:
    from trainer.engine import prepare_model
    from trainer.recipe import load_recipe

    built.model.config.vision_coef = 0.5
    built.model.save_pretrained(tmp_path / "s1")
    common = {"init_from": str(tmp_path / "s1"), "data.mixture": str(tmp_path), "output_dir": str(tmp_path / "o"),
              "train.gradient_checkpointing": False}
    model = prepare_model(load_recipe(TINY / "stage2.yaml", common | {"vision_coef": 0.25})).model
    assert model.config.vision_coef == 0.25 and model.use_vision_loss is True
    with torch.no_grad():
        out = model(**batch(model))
    assert torch.equal(out.loss, out.text_loss + 0.25 * out.vision_loss)
    kept = prepare_model(load_recipe(TINY / "stage2.yaml", common | {"vision_coef": None})).model
    assert kept.config.vision_coef == 0.5
    stage1 = prepare_model(load_recipe(TINY / "stage2.yaml", common | {"vision_coef": 0.25, "vision_loss": False}))
    assert stage1.model.use_vision_loss is False


# ---------------------------------------------------------------------------- the loss functions


@pytest.mark.parametrize("k", [1, 4, 5, 8, 9])
def test_chunked_cross_entropy_is_the_mean_at_every_chunk_boundary(k: int) -> None:
    torch.manual_seed(k)
    head = torch.nn.Linear(6, 11, bias=False)
    h = torch.randn(k, 6)
    y = torch.randint(0, 11, (k,))
    full = F.cross_entropy(head(h), y)
    with torch.no_grad():  # no checkpointing: the plain path
        plain = chunked_cross_entropy(h, y, head, chunk_size=4)
    torch.testing.assert_close(plain, full, rtol=1e-6, atol=0)
    hg = h.clone().requires_grad_(True)
    chunked = chunked_cross_entropy(hg, y, head, chunk_size=4)  # k > 4: checkpointed chunks
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=0)
    (g,) = torch.autograd.grad(chunked, hg)
    hr = h.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(head(hr), y), hr)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)
    assert chunked.dtype == torch.float32


def test_chunked_cross_entropy_refuses_no_supervised_row() -> None:
    head = torch.nn.Linear(6, 11, bias=False)
    with pytest.raises(ValueError, match=r"^chunked_cross_entropy: no supervised position in the batch"):
        chunked_cross_entropy(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long), head)


def test_cosine_vision_loss_values_and_no_gradient_into_targets() -> None:
    pred = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 5.0], [2.0, 0.0]]], requires_grad=True)
    loss = cosine_vision_loss(pred, target)
    assert math.isclose(loss.item(), -(0.0 + 1 / math.sqrt(2)) / 2, rel_tol=1e-6)
    loss.backward()
    assert target.grad is None and pred.grad is not None
    assert float(cosine_vision_loss(torch.tensor([[3.0, 4.0]]), torch.tensor([[-6.0, -8.0]]))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"^vision loss: \(2, 3\) predictions for \(2, 4\) targets"):
        cosine_vision_loss(torch.zeros(2, 3), torch.zeros(2, 4))
