"""Packing: the plan, the packed batch's exactness against its samples run one by one, and no cross-sample attention."""

from __future__ import annotations

import random

import pytest
import torch

from mmdata.read.loader import RecordList
from tests.trainer.trainer_world import RECORDS, fake_image
from trainer import Collator, ConversationDataset
from trainer.packing import PackedDataset, block_causal_mask, fingerprint, padding, plan_packs
from trainer.train import model_inputs

PACKS = [["vqa", "t2i", "video"], ["text", "edit", "visual_cot", "multi"]]


def test_plan_places_every_sample_once_within_capacity() -> None:
    rng = random.Random(0)
    lengths = [rng.choice([60, 200, 2970]) + rng.randint(0, 40) for _ in range(3000)] + [0, 0]
    packs = plan_packs(lengths, 4096, window=512)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in p) <= 4096 for p in packs)
    real, pad = padding(lengths, packs, batch_size=4)
    assert real == sum(lengths) and pad / (real + pad) < 0.05
    _, unpacked_pad = padding(lengths, [[i] for i in range(len(lengths))], batch_size=4)
    assert unpacked_pad > 10 * pad
    assert fingerprint(packs) == fingerprint(plan_packs(lengths, 4096, window=512)) != fingerprint(packs[::-1])
    with pytest.raises(ValueError, match="longer than the pack capacity 4096"):
        plan_packs([10, 5000], 4096)


def _samples(model, keys):
    ds = ConversationDataset.for_model(RecordList([RECORDS[k] for k in keys], fake_image), model, max_length=512)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture
def f64(built):
    model = built.model.to(torch.float64)
    model.eval()
    return model


def test_packed_batch_equals_its_samples_one_by_one(f64) -> None:
    model = f64
    packs = [_samples(model, keys) for keys in PACKS]
    batch = Collator(model.pad_token_id, packed=True)(packs)
    assert batch["input_ids"].shape[0] == 2 and (batch["position_ids"][:, 0] == 0).all()
    singles = [Collator(model.pad_token_id)([s]) for p in packs for s in p]

    def run(b):
        b = b | {"pixel_values": None if b["pixel_values"] is None else b["pixel_values"].double()}
        with torch.no_grad():
            out = model(**model_inputs(b), vision_loss=True)
            feats = None if b["pixel_values"] is None else model.encode_images(b["pixel_values"])
            hidden = model.hidden_states(b["input_ids"], b["attention_mask"], feats,
                                         position_ids=b.get("position_ids"))
        return out, hidden

    packed_out, packed_hidden = run(batch)
    outs = [run(b) for b in singles]
    # Logits: every sample's hidden states (hence logits) inside the pack equal the sample's own.
    k = 0
    for row, pack in enumerate(packs):
        o = 0
        for s in pack:
            alone = outs[k][1][0]
            torch.testing.assert_close(packed_hidden[row, o:o + len(s)], alone, rtol=0, atol=1e-10)
            o, k = o + len(s), k + 1
    head = model.llm.get_output_embeddings()
    torch.testing.assert_close(head(packed_hidden[0, :len(packs[0][0])]), head(outs[0][1][0]), rtol=0, atol=1e-10)
    # Losses: means over the same supervised tokens / regressed images as the unpacked samples together.
    n_text = sum(o.n_text_tokens for o, _ in outs)
    assert packed_out.n_text_tokens == n_text
    text = sum(o.text_loss * o.n_text_tokens for o, _ in outs) / n_text
    torch.testing.assert_close(packed_out.text_loss.double(), text.double(), rtol=1e-6, atol=0)
    n_vis = sum(o.n_vision_targets for o, _ in outs)
    assert packed_out.n_vision_targets == n_vis == 3  # t2i, edit, visual_cot
    vis = sum(o.vision_loss * o.n_vision_targets for o, _ in outs) / n_vis
    torch.testing.assert_close(packed_out.vision_loss.double(), vis.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(packed_out.loss.double(), (text + model.config.vision_coef * vis).double(),
                               rtol=1e-6, atol=0)


def test_no_token_attends_across_a_sample_boundary(f64) -> None:
    model = f64
    first, second = _samples(model, ["text", "vqa"])
    batch = Collator(model.pad_token_id, packed=True)([[first, second]])
    ids, pos = batch["input_ids"], batch["position_ids"]
    feats = model.encode_images(batch["pixel_values"].double())
    changed = ids.clone()
    text = torch.arange(ids.shape[1]) < len(first)
    changed[0, text & (ids[0] > 40) & (ids[0] < 200)] = 77  # other words in the first sample, same length
    assert not torch.equal(changed, ids)
    with torch.no_grad():
        a = model.hidden_states(ids, batch["attention_mask"], feats, position_ids=pos)
        b = model.hidden_states(changed, batch["attention_mask"], feats, position_ids=pos)
        causal = [model.hidden_states(x, torch.ones_like(x), feats) for x in (ids, changed)]  # no block mask
    n = len(first)
    assert not torch.equal(a[0, :n], b[0, :n])
    assert torch.equal(a[0, n:], b[0, n:]), "the second sample saw the first one's tokens"
    assert not torch.equal(causal[0][0, n:], causal[1][0, n:])  # the check above can fail: plain causal leaks
    mask = block_causal_mask(pos, torch.float64)[0, 0]
    assert (mask[n:, :n] < 0).all() and (mask[:n, n:] < 0).all() and (mask[n:, n:].diagonal() == 0).all()


def test_packed_dataset_serves_packs_and_counts_skips(shared) -> None:
    def broken(r, j):
        if r.id == "t2i1":
            raise OSError("truncated file")
        return fake_image(r, j)

    data = ConversationDataset.for_model(RecordList([RECORDS[k] for k in ("vqa", "t2i", "text")], broken),
                                         shared.model, max_length=512, on_error="skip")
    packed = PackedDataset(data, [[0, 1], [2]])
    batch = Collator(shared.model.pad_token_id, packed=True)([packed[0], packed[1]])
    assert [s.id for s in batch["skipped"]] == ["t2i1"] and batch["ids"] == ["vqa1", "txt1"]
    assert batch["attention_mask"].sum() == data.length(0) + data.length(2)
