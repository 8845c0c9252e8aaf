"""Dataset items, skips, collation and length grouping."""

from __future__ import annotations

import pytest
import torch

from mmdata.read.loader import RecordList
from tests.trainer.trainer_world import RECORDS, N, fake_image, rec
from trainer import Collator, ConversationDataset, LengthGroupedSampler, Sample, Skipped
from trainer.templates import LabelError

MIXED = ["vqa", "text", "t2i", "video", "edit", "visual_cot"]


def dataset(shared, keys=MIXED, **kw) -> ConversationDataset:
    kw.setdefault("max_length", 512)
    source = RecordList([RECORDS[k] for k in keys], kw.pop("load_image", fake_image))
    return ConversationDataset.for_model(source, shared.model, **kw)


def test_item_length_is_known_before_loading_images(shared) -> None:
    calls = []
    ds = dataset(shared, load_image=lambda r, j: calls.append((r.id, j)) or fake_image(r, j))
    lengths = ds.lengths()
    assert calls == []
    assert [len(ds[i]) for i in range(len(ds))] == lengths
    assert len(calls) == sum(len(RECORDS[k].media) for k in MIXED)


def test_collator_stacks_images_in_placeholder_order_with_target_flags(shared) -> None:
    ds = dataset(shared)
    items = [ds[i] for i in range(len(ds))]
    pad = shared.model.pad_token_id
    batch = Collator(pad)(items)
    n_images = sum(len(RECORDS[k].media) for k in MIXED)
    assert batch["pixel_values"].shape == (n_images, 3, 64, 64)
    expected_flags = [role == "target" for k in MIXED for role in RECORDS[k].media_roles()]
    assert batch["image_is_target"].tolist() == expected_flags
    expected_pixels = torch.stack([shared.processor(fake_image(RECORDS[k], j))
                                   for k in MIXED for j in range(len(RECORDS[k].media))])
    assert torch.equal(batch["pixel_values"], expected_pixels)
    width = max(len(s) for s in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (len(MIXED), width)
    for b, s in enumerate(items):
        assert batch["attention_mask"][b].sum() == len(s)
        assert (batch["input_ids"][b, len(s):] == pad).all() and (batch["labels"][b, len(s):] == -100).all()
    slots = (batch["input_ids"] == shared.model.image_token_id).sum()
    assert slots == n_images * N


def test_text_only_samples_carry_no_dummy_image(shared) -> None:
    ds = dataset(shared, ["text"])
    item = ds[0]
    assert isinstance(item, Sample) and item.pixel_values is None
    batch = Collator(shared.model.pad_token_id)([item])
    assert batch["pixel_values"] is None and batch["image_is_target"].numel() == 0


def test_pad_id_is_explicit_and_llama_without_pad_gets_one(shared) -> None:
    # The tiny Llama tokenizer ships without a pad token, like Llama-3; the model resolves one explicitly.
    assert shared.model.pad_token_id == shared.tokenizer.eos_token_id
    with pytest.raises(TypeError, match="pad_token_id"):
        Collator(None)  # type: ignore[arg-type]


def test_broken_image_is_an_error_in_raise_mode_and_a_counted_skip_in_skip_mode(shared) -> None:
    def broken(r, j):
        if r.id == "t2i1":
            raise OSError("cannot identify image file")
        return fake_image(r, j)

    with pytest.raises(ValueError, match="t2i1.*media\\[0\\]"):
        dataset(shared, load_image=broken)[2]
    ds = dataset(shared, load_image=broken, on_error="skip")
    items = [ds[i] for i in range(len(ds))]
    batch = Collator(shared.model.pad_token_id)(items)
    assert [s.id for s in batch["skipped"]] == ["t2i1"] and "OSError" in batch["skipped"][0].reason
    assert batch["input_ids"].shape[0] == len(MIXED) - 1
    assert batch["image_is_target"].numel() == batch["pixel_values"].shape[0]


def test_programming_errors_are_not_swallowed_by_skip_mode(shared) -> None:
    def buggy(r, j):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        dataset(shared, ["vqa"], load_image=buggy, on_error="skip")[0]


def test_unbuildable_labels_skip_with_reason(shared) -> None:
    bad = rec("bad1", "vqa", ("human", "say <|eot_id|> please"), ("gpt", "no"))
    ds = ConversationDataset.for_model(RecordList([bad], fake_image), shared.model, max_length=512, on_error="skip")
    item = ds[0]
    assert isinstance(item, Skipped) and item.id == "bad1" and "special token" in item.reason
    assert ds.length(0) == 0
    strict = ConversationDataset.for_model(RecordList([bad], fake_image), shared.model, max_length=512)
    with pytest.raises(LabelError):
        strict[0]
    batch = Collator(shared.model.pad_token_id)([item])
    assert batch["input_ids"].shape == (0, 0) and len(batch["skipped"]) == 1


def test_truncated_sample_loads_only_kept_images_and_counts_dropped_turns(shared) -> None:
    calls = []
    two = rec("two", "vqa", ("human", "<image>\nA?"), ("gpt", "Red."), ("human", "<image>\nB?"), ("gpt", "Blue."))
    full = ConversationDataset.for_model(RecordList([two], fake_image), shared.model, max_length=512).length(0)
    source = RecordList([two], lambda r, j: calls.append(j) or fake_image(r, j))
    ds = ConversationDataset.for_model(source, shared.model, max_length=full - 1)
    item = ds[0]
    assert item.dropped_turns == 2 and calls == [0] and item.pixel_values.shape[0] == 1
    assert Collator(shared.model.pad_token_id)([item])["dropped_turns"] == 2


def test_length_grouped_sampler_is_a_deterministic_permutation_grouping_lengths() -> None:
    lengths = [(i * 37) % 101 for i in range(400)]
    s = LengthGroupedSampler(lengths, batch_size=4, seed=1, mega_batch_mult=25)
    order = list(s)
    assert sorted(order) == list(range(400)) and order == list(s)
    s.set_epoch(1)
    assert list(s) != order
    batches = [order[i: i + 4] for i in range(0, 400, 4)]
    spread = sum(max(lengths[j] for j in b) - min(lengths[j] for j in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 4 from 0..100 spread ~60
