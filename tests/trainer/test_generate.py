"""Inference details come from the chat template: which tokens end a generated turn."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.trainer.trainer_world import N
from trainer.generate import generate
from trainer.templates import TEMPLATES, ChatTemplate, ConversationEncoder


@pytest.mark.parametrize(("template", "stops"), [
    ("llama3", {"<|eot_id|>", "<|end_of_text|>"}),
    ("qwen2", {"<|im_end|>", "<|end_of_text|>"}),
    ("plain", {"<|end_of_text|>"}),  # the tokenizer's EOS closes a plain assistant turn
])
def test_stop_tokens_come_from_the_template(shared, template: str, stops: set[str]) -> None:
    tok = shared.tokenizer  # the tiny Llama-3 style tokenizer: EOS is <|end_of_text|>
    assert ConversationEncoder(template, tok, N).stop_ids == {tok.convert_tokens_to_ids(s) for s in stops}


def test_a_template_stop_token_must_be_one_token(shared) -> None:
    odd = dataclasses.replace(TEMPLATES["plain"], name="odd", stop=("<|not a token|>",))
    with pytest.raises(ValueError, match="splits '<|not a token|>'"):
        ConversationEncoder(odd, shared.tokenizer, N)
    assert ChatTemplate("x", "", {}, {}).stop == ("{eos}",)


@pytest.mark.parametrize(("template", "emitted", "stops"), [
    ("llama3", "<|eot_id|>", True),
    ("llama3", "<|im_end|>", False),  # ChatML's end of turn is just a token to a Llama-3 template
    ("qwen2", "<|im_end|>", True),
    ("plain", "<|eot_id|>", False),
])
def test_generation_ends_at_the_templates_stop_tokens(built, monkeypatch: pytest.MonkeyPatch, template: str,
                                                      emitted: str, stops: bool) -> None:
    model = built.model
    model.config = dataclasses.replace(model.config, template=template)
    target = model.tokenizer.convert_tokens_to_ids(emitted)

    def head(h: torch.Tensor) -> torch.Tensor:  # a model that always says `emitted`
        return torch.nn.functional.one_hot(torch.tensor([target]), len(model.tokenizer)).float()

    monkeypatch.setattr(model.llm, "get_output_embeddings", lambda: head)
    g = generate(model, "Draw a red cat.", max_new_tokens=4)
    assert g.token_ids == [target] * (1 if stops else 4)
