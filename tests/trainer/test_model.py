"""The unified model: shapes, splicing, the shifted vision head, losses, trainable parts, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmdata.read.loader import RecordList
from tests.trainer.trainer_world import RECORDS, N, fake_image, model_config
from trainer import (
    STAGES,
    Collator,
    ConversationDataset,
    ModelConfig,
    apply_stage,
    apply_trainable,
    build_model,
    load,
)
from trainer.config import ConfigError
from trainer.heads import HEADS
from trainer.losses import chunked_cross_entropy, cosine_vision_loss
from trainer.projector import PROJECTORS
from trainer.vision import REDUCTIONS, ImageProcessor

MIXED = ["vqa", "text", "t2i", "video", "edit", "visual_cot"]


def batch_for(model, keys=MIXED):
    ds = ConversationDataset.for_model(RecordList([RECORDS[k] for k in keys], fake_image), model, max_length=512)
    return Collator(model.pad_token_id)([ds[i] for i in range(len(ds))])


# ---------------------------------------------------------------------------- components

@pytest.mark.parametrize(("name", "n", "expected"), [("interpolation", 4, 4), ("avgpool", 4, 4), ("none", 16, 16)])
def test_reduction_shapes(name: str, n: int, expected: int) -> None:
    x = torch.randn(3, 16, 48)
    assert REDUCTIONS[name](x, n).shape == (3, expected, 48)


def test_interpolation_matches_metamorph_bilinear() -> None:
    x = torch.randn(2, 27 * 27, 8)
    grid = x.reshape(2, 27, 27, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    assert torch.allclose(REDUCTIONS["interpolation"](x, 64), ref)
    x = torch.arange(16.0).reshape(1, 16, 1)
    assert REDUCTIONS["avgpool"](x, 4).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_reduction_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="perfect square"):
        REDUCTIONS["interpolation"](torch.randn(1, 16, 4), 5)
    with pytest.raises(ValueError, match="set num_image_tokens to 16"):
        REDUCTIONS["none"](torch.randn(1, 16, 4), 4)


def test_build_rejects_none_reduction_with_wrong_n(tiny) -> None:
    with pytest.raises(ValueError, match="num_image_tokens to 16"):
        build_model(model_config(tiny, token_reduction="none"))


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_projector_shapes(name: str) -> None:
    assert PROJECTORS[name](48, 64)(torch.randn(2, 4, 48)).shape == (2, 4, 64)


def test_head_shape() -> None:
    assert HEADS["mlp"](64, 48)(torch.randn(2, 4, 64)).shape == (2, 4, 48)


def test_head_starts_as_the_reference_normal_002_zero_bias() -> None:
    torch.manual_seed(0)
    head = HEADS["mlp"](512, 384)
    for layer in (head[0], head[2]):
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.02)
        assert abs(layer.weight.mean().item()) < 1e-3 and not layer.bias.any()


def test_new_token_rows_are_the_mean_row(tiny) -> None:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny.lm)
    m = build_model(model_config(tiny)).model
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old = getattr(base, get)().weight
        new = getattr(m.llm, get)().weight
        assert new.shape[0] == old.shape[0] + 3
        assert torch.equal(new[: old.shape[0]], old)
        for i in m.new_token_ids:
            assert torch.allclose(new[i], old.mean(0), atol=1e-6)


def test_splicing_puts_projected_features_in_the_slots(built) -> None:
    m = built.model
    batch = batch_for(m, ["vqa", "video"])
    feats = m.encode_images(batch["pixel_values"])
    assert feats.shape == (4, N, m.vision.hidden_size)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(4, N), atol=1e-5)  # normalize_vision
    emb = m.embed(batch["input_ids"], feats)
    slots = batch["input_ids"] == m.image_token_id
    assert torch.allclose(emb[slots], m.projector(feats).reshape(-1, emb.shape[-1]))
    plain = m.llm.get_input_embeddings()(batch["input_ids"])
    assert torch.equal(emb[~slots], plain[~slots])


def test_slot_count_mismatch_is_an_error(built) -> None:
    m = built.model
    batch = batch_for(m, ["vqa", "edit"])
    with pytest.raises(ValueError, match="slots in input_ids but"):
        m(**(batch | {"pixel_values": batch["pixel_values"][:1]}))
    m.use_vision_loss = True
    with pytest.raises(ValueError, match="image_is_target flags"):
        m(**(batch | {"image_is_target": batch["image_is_target"][:1]}))


def test_head_at_image_start_predicts_image_token_zero(built) -> None:
    m = built.model
    batch = batch_for(m, ["vqa", "t2i"])
    m.use_vision_loss = True
    with torch.no_grad():
        out = m(**batch)
        feats = m.encode_images(batch["pixel_values"])
        hidden = m.hidden_states(batch["input_ids"], batch["attention_mask"], feats)
    ids = batch["input_ids"][1].tolist()  # the t2i sample; its image (index 1) is the only target
    s = ids.index(m.image_start_id)
    cos = [F.cosine_similarity(m.vision_head(hidden[1, s + k]), feats[1, k], dim=0) for k in range(N)]
    assert out.n_vision_targets == 1
    assert torch.allclose(out.vision_loss, -torch.stack(cos).mean(), atol=1e-6)
    # …and the last image token predicts <image_end> through the text loss.
    assert batch["labels"][1, s + N + 1] == m.image_end_id


def test_vision_loss_without_target_is_zero_not_nan_and_still_touches_the_head(built) -> None:
    m = built.model
    apply_stage(m, STAGES["stage2"])
    out = m(**batch_for(m, ["vqa", "text"]))
    assert out.vision_loss == 0 and out.n_vision_targets == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in m.vision_head.parameters())


def test_chunked_cross_entropy_equals_full_and_backprops() -> None:
    head = torch.nn.Linear(8, 50, bias=False)
    h = torch.randn(37, 8, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    full = F.cross_entropy(head(h), y)
    (g_full,) = torch.autograd.grad(full, h)
    chunked = chunked_cross_entropy(h, y, head, chunk_size=5)
    (g_chunk,) = torch.autograd.grad(chunked, h)
    assert torch.allclose(full, chunked, atol=1e-6) and torch.allclose(g_full, g_chunk, atol=1e-6)
    with pytest.raises(ValueError, match="no supervised"):
        chunked_cross_entropy(h[:0], y[:0], head)


def test_cosine_loss_count_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="predictions for"):
        cosine_vision_loss(torch.randn(2, 4, 8), torch.randn(1, 4, 8))
    x = torch.randn(2, 4, 8)
    assert torch.allclose(cosine_vision_loss(x, 3 * x), torch.tensor(-1.0))


def test_text_loss_matches_the_bare_lm_on_text_only(built) -> None:
    m = built.model
    batch = batch_for(m, ["text", "multi"][:1])
    with torch.no_grad():
        ours = m(**batch).text_loss
        ref = m.llm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(ours, ref, atol=1e-5)


# ---------------------------------------------------------------------------- trainable parts

def test_stage1_only_projector_and_new_token_rows_get_gradients(built) -> None:
    m = built.model
    counts = apply_stage(m, STAGES["stage1"])
    assert set(counts) == {"projector", "new_token_rows"}
    out = m(**batch_for(m))
    assert out.vision_loss is None
    out.loss.backward()
    emb_in, emb_out = m.llm.get_input_embeddings().weight, m.llm.get_output_embeddings().weight
    new = torch.zeros(emb_in.shape[0], dtype=torch.bool)
    new[m.new_token_ids] = True
    for name, p in m.named_parameters():
        if name.startswith("projector."):
            assert p.grad is not None and p.grad.any(), name
        elif p is emb_in or p is emb_out:
            assert not p.grad[~new].any(), f"{name}: old rows must get no gradient"
            assert p.grad[m.image_start_id].any(), name
        else:
            assert p.grad is None, f"{name} should be frozen in stage 1"
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0).step()
    assert torch.equal(emb_in[~new], before["llm.model.embed_tokens.weight"][~new])
    assert not torch.equal(emb_in[m.image_start_id], before["llm.model.embed_tokens.weight"][m.image_start_id])


def test_stage2_trains_llm_projector_head_not_vision(built) -> None:
    m = built.model
    apply_stage(m, STAGES["stage2"])
    out = m(**batch_for(m))
    assert out.n_vision_targets == 3 and out.vision_loss is not None
    out.loss.backward()
    assert all(p.grad is None for p in m.vision.parameters())
    assert all(p.grad is not None for p in m.vision_head.parameters())
    assert all(p.grad is not None for n, p in m.llm.named_parameters() if "layers.0." in n)


def test_apply_trainable_rejects_unknown_part(built) -> None:
    with pytest.raises(ValueError, match="'lm'.*expected one of"):
        apply_trainable(built.model, ["lm"])


# ---------------------------------------------------------------------------- save / load, other families

def test_save_load_round_trip(built, tmp_path) -> None:
    m = built.model
    apply_stage(m, STAGES["stage2"])
    with torch.no_grad():
        for p in [*m.projector.parameters(), *m.vision_head.parameters()]:
            p.add_(torch.randn_like(p))
    batch = batch_for(m)
    with torch.no_grad():
        ref = m(**batch)
    m.save_pretrained(tmp_path / "ckpt")
    again = load(tmp_path / "ckpt")
    again.model.use_vision_loss = True
    with torch.no_grad():
        out = again.model(**batch)
    assert torch.equal(out.loss, ref.loss) and torch.equal(out.vision_loss, ref.vision_loss)
    assert again.model.config == m.config.__class__(**(vars(m.config) | {"llm": str(tmp_path / "ckpt/llm"),
                                                                          "vision_tower": str(tmp_path / "ckpt/vision")}))
    assert again.model.pad_token_id == m.pad_token_id and len(again.tokenizer) == len(built.tokenizer)


def test_load_of_a_base_dir_says_what_to_do(tiny) -> None:
    with pytest.raises(FileNotFoundError, match="build_model"):
        load(tiny.lm)


def test_qwen2_with_clip_tied_embeddings(tiny_qwen_clip) -> None:
    loaded = build_model(model_config(tiny_qwen_clip, template="qwen2", mm_projector_type="linear",
                                      token_reduction="avgpool"))
    m = loaded.model
    assert m.vision.skip_tokens == 1 and m.pad_token_id == loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    apply_stage(m, STAGES["stage1"])
    out = m(**batch_for(m, ["vqa", "t2i"]))
    out.loss.backward()
    w = m.llm.get_input_embeddings().weight
    assert w is m.llm.get_output_embeddings().weight
    assert w.grad[m.image_end_id].any() and not w.grad[:100].any()


def test_image_processor_matches_transformers(tiny, tiny_qwen_clip) -> None:
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8))
    for paths, cls in ((tiny, SiglipImageProcessorPil), (tiny_qwen_clip, CLIPImageProcessorPil)):
        ours = ImageProcessor.from_pretrained(paths.vision, pad_to_square=False)(img)
        ref = torch.as_tensor(np.asarray(cls.from_pretrained(paths.vision)(img)["pixel_values"][0]))
        assert ours.shape == ref.shape == (3, 64, 64)
        assert torch.allclose(ours, ref, atol=2e-2), (ours - ref).abs().max()


def test_config_rejects_unknown_keys_and_wrong_types(tiny) -> None:
    base = {"llm": str(tiny.lm), "vision_tower": str(tiny.vision)}
    assert ModelConfig.from_dict(base).num_image_tokens == 64
    with pytest.raises(ConfigError, match="num_image_token: unknown key"):
        ModelConfig.from_dict(base | {"num_image_token": 16})
    with pytest.raises(ConfigError, match="num_image_tokens: must be an integer, got str '16'"):
        ModelConfig.from_dict(base | {"num_image_tokens": "16"})
    with pytest.raises(ConfigError, match="mm_projector_type.*'mlp2x_gelu'"):
        ModelConfig.from_dict(base | {"mm_projector_type": "mlp3x"})
    with pytest.raises(ConfigError, match="vision_tower: missing"):
        ModelConfig.from_dict({"llm": "x"})
    with pytest.raises(ConfigError, match="image_aspect_ratio"):
        ModelConfig.from_dict(base | {"image_aspect_ratio": "crop"})
    with pytest.raises(ConfigError, match=r"trainable\[1\]"):
        from trainer import StageConfig

        StageConfig.from_dict({"trainable": ["projector", "lm"]})


def test_every_registry_module_is_registered() -> None:
    assert set(PROJECTORS) == {"mlp2x_gelu", "linear"} and set(HEADS) == {"mlp"}
    assert set(REDUCTIONS) == {"interpolation", "avgpool", "none"}
