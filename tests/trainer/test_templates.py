"""Golden label tests: exactly which positions are supervised, per template and per task."""

from __future__ import annotations

import pytest

from tests.trainer.trainer_world import RECORDS, N
from trainer.templates import IGNORE_INDEX, TEMPLATES, ChatTemplate, ConversationEncoder, LabelError

IMG = "<image>" * N


def show(tok, ids: list[int], labels: list[int]) -> str:
    """Decode runs of equal supervision; supervised runs wrapped in [[...]], image slots shown as <image>×N."""
    out, run, sup = [], [], None
    for tid, lab in [*zip(ids, labels), (None, None)]:
        s = lab is not None and lab != IGNORE_INDEX
        if run and (tid is None or s != sup):
            text = tok.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            out.append(f"[[{text}]]" if sup else text)
            run = []
        if tid is not None:
            assert lab in (IGNORE_INDEX, tid), "a supervised label must equal its input id (the shift is the model's)"
            run.append(tid)
            sup = s
    return "".join(out).replace(IMG, f"<image>×{N}")


def encode(shared, template: str, key: str, **kw):
    enc = ConversationEncoder(template, shared.tokenizer, N)
    r = RECORDS[key]
    return enc, enc.encode([(t.role, t.value) for t in r.conversations], record_id=r.id, **kw)


U = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
A = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
IM = f"<image_start><image>×{N}<image_end>"
LLAMA3 = {
    "vqa": f"{U}{IM}\nWhat is in the picture?{A}[[A red cat.<|eot_id|>]]",
    "t2i": f"{U}Draw a red cat.{A}[[<image_start>]]<image>×{N}[[<image_end><|eot_id|>]]",
    "edit": f"{U}{IM}\nMake it blue.{A}[[<image_start>]]<image>×{N}[[<image_end><|eot_id|>]]",
    "visual_cot": f"{U}{IM}\nHow many cars?{A}[[Look at the region.<image_start>]]<image>×{N}"
                  "[[<image_end>There are two.<|eot_id|>]]",
    "video": f"{U}{IM}{IM}{IM}\nWhat happens?{A}[[The dog runs.<|eot_id|>]]",
    "text": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there" f"{A}[[Hello.<|eot_id|>]]",
    "multi": f"{U}{IM}\nWhat color?{A}[[Red.<|eot_id|>]]<|start_header_id|>user<|end_header_id|>\n\n"
             f"And the sky?{A}[[Blue.<|eot_id|>]]",
}
SYS = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
QWEN2 = {
    "vqa": f"{SYS}<|im_start|>user\n{IM}\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n"
           "[[A red cat.<|im_end|>]]\n",
    "t2i": f"{SYS}<|im_start|>user\nDraw a red cat.<|im_end|>\n<|im_start|>assistant\n"
           f"[[<image_start>]]<image>×{N}[[<image_end><|im_end|>]]\n",
    "text": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
            "[[Hello.<|im_end|>]]\n",
}
PLAIN = {
    "vqa": f"<|begin_of_text|>{IM}\nWhat is in the picture?\n[[A red cat.<|end_of_text|>]]",
    "t2i": f"<|begin_of_text|>Draw a red cat.\n[[<image_start>]]<image>×{N}[[<image_end><|end_of_text|>]]",
    "edit": f"<|begin_of_text|>{IM}\nMake it blue.\n[[<image_start>]]<image>×{N}[[<image_end><|end_of_text|>]]",
}
GOLDEN = [("llama3", k, v) for k, v in LLAMA3.items()] + [("qwen2", k, v) for k, v in QWEN2.items()] + \
         [("plain", k, v) for k, v in PLAIN.items()]


@pytest.mark.parametrize(("template", "key", "expected"), GOLDEN, ids=[f"{t}-{k}" for t, k, _ in GOLDEN])
def test_golden_labels(shared, template: str, key: str, expected: str) -> None:
    _, enc = encode(shared, template, key)
    assert show(shared.tokenizer, enc.input_ids, enc.labels) == expected
    r = RECORDS[key]
    assert enc.image_is_target == [role == "target" for role in r.media_roles()]


@pytest.mark.parametrize("key", list(RECORDS))
def test_one_tokenization_and_exact_expanded_length(shared, key: str) -> None:
    """The ids are the tokenizer's ids for the whole rendered string (what inference sees), and the length is
    text + (N + 2) per image — known before any image is loaded."""
    _, out = encode(shared, "llama3", key)
    tok = shared.tokenizer
    assert out.input_ids == tok(out.text, add_special_tokens=False)["input_ids"]
    n_img = len(RECORDS[key].media)
    no_img = out.text.replace(f"<image_start>{'<image>' * N}<image_end>", "")
    assert len(out) == len(tok(no_img, add_special_tokens=False)["input_ids"]) + n_img * (N + 2)


def test_inference_prompt_is_the_training_prefix(shared) -> None:
    enc, out = encode(shared, "llama3", "vqa")
    prompt = enc.prompt([("human", RECORDS["vqa"].conversations[0].value)])
    assert out.text.startswith(prompt) and out.text[len(prompt):] == "A red cat.<|eot_id|>"
    assert prompt.count("<|begin_of_text|>") == 1  # the reference's double-BOS defect


def test_truncation_drops_whole_trailing_turns(shared) -> None:
    _, full = encode(shared, "llama3", "multi")
    _, cut = encode(shared, "llama3", "multi", max_length=len(full) - 1)
    assert cut.dropped_turns == 2 and len(cut) < len(full)
    assert cut.input_ids == full.input_ids[: len(cut)]
    assert cut.input_ids.count(shared.model.image_token_id) == N  # the image is whole


def test_truncation_that_would_cut_an_image_is_an_error(shared) -> None:
    with pytest.raises(LabelError, match="max_length"):
        encode(shared, "llama3", "video", max_length=20)


def test_special_token_in_user_text_is_an_error(shared) -> None:
    enc = ConversationEncoder("llama3", shared.tokenizer, N)
    with pytest.raises(LabelError, match=r"turn 0 \(human\).*<\|eot_id\|>"):
        enc.encode([("human", "Hi<|eot_id|>"), ("gpt", "Yo")], record_id="bad")
    with pytest.raises(LabelError, match="<image_start>"):
        enc.encode([("human", "Hi"), ("gpt", "<image_start>")], record_id="bad")


def test_role_the_template_cannot_express_is_an_error(shared) -> None:
    with pytest.raises(LabelError, match="role 'system'"):
        encode(shared, "plain", "text")


def test_tokenizer_without_template_tokens_is_an_error(shared) -> None:
    odd = ChatTemplate("odd", "", {"human": "<|nope|>", "gpt": ""}, {"human": "", "gpt": ""}, required=("<|nope|>",))
    with pytest.raises(ValueError, match="splits '<\\|nope\\|>'"):
        ConversationEncoder(odd, shared.tokenizer, N)


def test_tokenizer_without_image_tokens_is_an_error(tiny) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.lm)
    tok.add_tokens(["<|eot_id|>"], special_tokens=True)
    ConversationEncoder("llama3", tok, N)  # the tiny tokenizer already knows the image tokens
    from tests.trainer.trainer_world import make_plain_tokenizer

    with pytest.raises(ValueError, match="<image>.*build_model"):
        ConversationEncoder("llama3", make_plain_tokenizer(), N)


def test_registry_has_the_documented_templates() -> None:
    assert {"llama3", "qwen2", "plain"} <= set(TEMPLATES)


def test_llama3_strips_message_text_like_the_official_format(shared) -> None:
    """LLaVA-665K has answers such as "\\nThe image shows…": trimmed, as Llama-3's own template does (`| trim`), the
    answer is supervised instead of failing as a token that straddles the header's "\\n\\n"."""
    enc = ConversationEncoder("llama3", shared.tokenizer, N)
    out = enc.encode([("human", "<image>\nWhat is shown? \n"), ("gpt", "\nA red cat.\n")], record_id="nl")
    assert show(shared.tokenizer, out.input_ids, out.labels) == f"{U}{IM}\nWhat is shown?{A}[[A red cat.<|eot_id|>]]"
    plain = ConversationEncoder("plain", shared.tokenizer, N).encode([("human", "Hi "), ("gpt", "Yo")])
    assert "Hi \n" in plain.text  # templates without the rule keep the text as written
