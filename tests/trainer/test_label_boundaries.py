"""Pins how labels follow character offsets (`trainer.templates`) and what the dataset does at the edges
(`trainer.data`), with a hand-made tokenizer whose every token and offset is known:

- each token takes the supervision of the characters it covers: a token ending exactly where assistant text starts
  is unsupervised, one starting there is supervised; a token straddling the boundary (human → assistant, header →
  assistant, assistant → separator) makes the sample a `LabelError` with an exact message, a skip with the exact
  reason `labels: …` in skip mode, and a length of 0;
- a record with no supervised token: the exact error / skip reason;
- images expand to `<image_start>` + N × `<image>` + `<image_end>` (N + 2 positions), the markers supervised only
  in assistant turns;
- `max_length` equal to the expanded length keeps the record whole; one less drops whole trailing exchanges
  (counting the dropped turns, images of dropped turns neither counted nor loaded) or, with a single exchange left
  (an image that would be cut), raises / skips with the exact reason.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from PIL import Image

from mmdata.core.schema import Media, Record, Turn
from mmdata.read.loader import RecordList
from trainer.data import ConversationDataset, Sample, Skipped
from trainer.templates import IGNORE_INDEX, ChatTemplate, ConversationEncoder, LabelError

X = IGNORE_INDEX
SPECIALS = ["<s>", "</s>", "<image>", "<image_start>", "<image_end>"]
BOS, EOS, IMG, START, END = range(5)


class StubTokenizer:
    """Greedy longest match: special tokens first, then the given merges, then single characters (id 100 + ord).

    Offsets are exact character spans of the text, as a fast tokenizer reports them.
    """

    bos_token, eos_token = "<s>", "</s>"
    all_special_tokens = SPECIALS

    def __init__(self, merges: tuple[str, ...] = ()) -> None:
        self.vocab = {t: i for i, t in enumerate([*SPECIALS, *merges])}
        self.merges = sorted(merges, key=len, reverse=True)
        self.id_to_token = {i: t for t, i in self.vocab.items()}

    def _tokens(self, text: str) -> list[tuple[int, int, int]]:
        out, p = [], 0
        while p < len(text):
            for piece in (*sorted(SPECIALS, key=len, reverse=True), *self.merges):
                if text.startswith(piece, p):
                    out.append((self.vocab[piece], p, p + len(piece)))
                    p += len(piece)
                    break
            else:
                out.append((100 + ord(text[p]), p, p + 1))
                p += 1
        return out

    def __call__(self, text: str, add_special_tokens: bool = False,
                 return_offsets_mapping: bool = False) -> dict[str, list[Any]]:
        toks = self._tokens(text)
        return {"input_ids": [t for t, _, _ in toks], "offset_mapping": [(s, e) for _, s, e in toks]}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [t for t, _, _ in self._tokens(text)]

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab[token]

    def convert_ids_to_tokens(self, tid: int) -> str:
        return self.id_to_token[tid] if tid in self.id_to_token else chr(tid - 100)


def ids(text: str) -> list[int]:
    """Character ids of plain text (no specials, no merges)."""
    return [100 + ord(c) for c in text]


# A chat layout whose assistant turn is opened by an unsupervised header and followed by an unsupervised separator.
CHAT = ChatTemplate("chat", begin="{bos}", headers={"system": "S:", "human": "Q:", "gpt": "A:"},
                    end_of_turn={"system": "\n", "human": "\n", "gpt": "\n"}, separator="|")


def encoder(merges: tuple[str, ...] = (), template: str | ChatTemplate = "plain", n: int = 2) -> ConversationEncoder:
    return ConversationEncoder(template, StubTokenizer(merges), n)


def record(rid: str, *turns: tuple[str, str]) -> Record:
    n = sum(v.count("<image>") for _, v in turns)
    return Record(rid, "test", "vqa", [Turn(r, v) for r, v in turns],
                  [Media(path=f"{rid}/{j}.png", kind="image") for j in range(n)]).validate()


def dataset(records: list[Record], max_length: int, *, merges: tuple[str, ...] = (), on_error: str = "skip",
            loaded: list[tuple[str, int]] | None = None, n: int = 2) -> ConversationDataset:
    def image(r: Record, j: int) -> Image.Image:
        if loaded is not None:
            loaded.append((r.id, j))
        return Image.new("RGB", (4, 4), (10 * j, 0, 0))

    return ConversationDataset(RecordList(records, image), tokenizer=StubTokenizer(merges),
                               processor=lambda im: torch.full((3, 2, 2), float(im.getpixel((0, 0))[0])),
                               template="plain", num_image_tokens=n, max_length=max_length,
                               on_error=on_error)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- offsets → labels


def test_each_character_token_takes_the_supervision_of_its_character() -> None:
    enc = encoder().encode([("human", "hi"), ("gpt", "ok")], record_id="r")
    assert enc.text == "<s>hi\nok</s>"
    assert enc.input_ids == [BOS, *ids("hi\nok"), EOS]
    assert enc.labels == [X, X, X, X, *ids("ok"), EOS]
    assert enc.image_is_target == [] and enc.dropped_turns == 0 and len(enc) == 7


def test_tokens_ending_or_starting_exactly_at_the_boundary_are_not_straddling() -> None:
    enc = encoder(("hi\n", "ok")).encode([("human", "hi"), ("gpt", "ok")], record_id="r")
    hi_nl, ok = 5, 6  # "hi\n" ends where the assistant text starts; "ok" starts there
    assert enc.input_ids == [BOS, hi_nl, ok, EOS]
    assert enc.labels == [X, X, ok, EOS]


def test_a_token_spanning_the_end_of_the_human_turn_and_the_assistant_text_is_a_label_error() -> None:
    msg = ("record 'r1': token '\\no' spans text '\\no' that is partly assistant, partly not; the template and "
           "tokenizer disagree on this boundary")
    with pytest.raises(LabelError, match=f"^{re.escape(msg)}$"):
        encoder(("\no",)).encode([("human", "hi"), ("gpt", "ok")], record_id="r1")
    ds = dataset([record("r1", ("human", "hi"), ("gpt", "ok"))], 64, merges=("\no",))
    assert ds[0] == Skipped(0, "r1", f"labels: {msg}")
    assert ds.length(0) == 0 and ds.lengths() == [0]
    strict = dataset([record("r1", ("human", "hi"), ("gpt", "ok"))], 64, merges=("\no",), on_error="raise")
    with pytest.raises(LabelError, match=re.escape(msg)):
        strict[0]
    with pytest.raises(LabelError, match=re.escape(msg)):
        strict.length(0)


@pytest.mark.parametrize(("merge", "shown"), [(":o", "':o'"), ("k\n|", "'k\\n|'"), ("\n|", "'\\n|'")])
def test_straddling_the_header_or_the_separator_is_a_label_error(merge: str, shown: str) -> None:
    enc = encoder((merge,), CHAT)
    with pytest.raises(LabelError, match=f"^record 'r': token {re.escape(shown)} spans text {re.escape(shown)} that"):
        enc.encode([("human", "hi"), ("gpt", "ok")], record_id="r")


def test_header_end_of_turn_and_separator_supervision_in_a_chat_layout() -> None:
    enc = encoder(("A:",), CHAT).encode([("human", "hi"), ("gpt", "ok"), ("human", "x"), ("gpt", "y")], record_id="r")
    assert enc.text == "<s>Q:hi\n|A:ok\n|Q:x\n|A:y\n|"
    header = 5  # "A:", the assistant header: unsupervised; the assistant's "\n" end of turn: supervised
    assert enc.input_ids == [BOS, *ids("Q:hi\n|"), header, *ids("ok\n|Q:x\n|"), header, *ids("y\n|")]
    assert enc.labels == [X] * 8 + ids("ok\n") + [X] * 7 + ids("y\n") + [X]


def test_system_and_human_turns_are_never_supervised() -> None:
    enc = encoder((), CHAT).encode([("system", "be"), ("human", "hi"), ("gpt", "ok")], record_id="r")
    assert enc.text == "<s>S:be\n|Q:hi\n|A:ok\n|"
    assert enc.labels == [X] * 15 + ids("ok\n") + [X]


# ---------------------------------------------------------------------------- nothing to learn


def test_a_record_without_a_supervised_token_is_a_label_error_and_a_skip_with_its_reason() -> None:
    msg = "record 'q1': no supervised token (no assistant content)"
    with pytest.raises(LabelError, match=f"^{re.escape(msg)}$"):
        encoder().encode([("human", "hi")], record_id="q1")
    ds = dataset([record("ok1", ("human", "a"), ("gpt", "b")), record("q1", ("human", "<image>hi"))], 64)
    assert isinstance(ds[0], Sample)
    assert ds[1] == Skipped(1, "q1", f"labels: {msg}")
    assert ds.lengths() == [5, 0]
    strict = dataset([record("ok1", ("human", "a"), ("gpt", "b")), record("q1", ("human", "hi")),
                      record("q2", ("human", "yo"))], 64, on_error="raise")
    with pytest.raises(LabelError, match=r"^record 'q1': no supervised token"):  # the first of the zeros
        strict.lengths()


def test_an_empty_assistant_text_still_supervises_its_end_of_turn() -> None:
    enc = encoder().encode([("human", "hi"), ("gpt", "")], record_id="r")
    assert enc.input_ids == [BOS, *ids("hi\n"), EOS] and enc.labels == [X, X, X, X, EOS]


# ---------------------------------------------------------------------------- images: N + 2 positions


@pytest.mark.parametrize("n", [1, 2, 3])
def test_an_image_expands_to_n_plus_2_positions_with_markers_supervised_only_when_a_target(n: int) -> None:
    enc = encoder(n=n)
    inp = enc.encode([("human", "<image>x"), ("gpt", "y")], record_id="r")
    assert inp.input_ids == [BOS, START, *[IMG] * n, END, *ids("x\ny"), EOS]
    assert inp.labels == [X, X, *[X] * n, X, X, X, 100 + ord("y"), EOS]
    assert len(inp) == 5 + (n + 2) and inp.image_is_target == [False]
    out = enc.encode([("human", "d"), ("gpt", "<image>")], record_id="r")
    assert out.input_ids == [BOS, *ids("d\n"), START, *[IMG] * n, END, EOS]
    assert out.labels == [X, X, X, START, *[X] * n, END, EOS] and out.image_is_target == [True]


# ---------------------------------------------------------------------------- max_length


TWO = [("human", "a"), ("gpt", "b"), ("human", "<image>c"), ("gpt", "d")]  # <s> a \n b </s> + image(4) c \n d </s>


def test_max_length_equal_to_the_expanded_length_keeps_the_record_whole() -> None:
    full = encoder().encode(TWO, record_id="r")
    assert len(full) == 13
    kept = encoder().encode(TWO, record_id="r", max_length=13)
    assert kept.input_ids == full.input_ids and kept.labels == full.labels
    assert kept.dropped_turns == 0 and kept.image_is_target == [False]


def test_one_token_less_drops_the_last_exchange_with_its_image() -> None:
    cut = encoder().encode(TWO, record_id="r", max_length=12)
    assert cut.input_ids == [BOS, *ids("a\nb"), EOS] and cut.labels == [X, X, X, 100 + ord("b"), EOS]
    assert cut.dropped_turns == 2 and cut.image_is_target == []
    assert encoder().encode(TWO, record_id="r", max_length=5).input_ids == cut.input_ids
    with pytest.raises(LabelError, match=r"^record 'r': needs 5 tokens after image expansion but max_length is 4, "):
        encoder().encode(TWO, record_id="r", max_length=4)


def test_three_exchanges_drop_one_or_two_and_count_every_dropped_turn() -> None:
    three = [("human", "a"), ("gpt", "b"), ("human", "c"), ("gpt", "d"), ("human", "e"), ("gpt", "f")]
    assert len(encoder().encode(three, record_id="r")) == 13  # <s> + 3 × (x \n y </s>)
    two = encoder().encode(three, record_id="r", max_length=12)
    assert len(two) == 9 and two.dropped_turns == 2
    one = encoder().encode(three, record_id="r", max_length=8)
    assert len(one) == 5 and one.dropped_turns == 4 and one.input_ids == [BOS, *ids("a\nb"), EOS]


def test_a_single_exchange_whose_image_would_be_cut_is_an_error_and_a_skip() -> None:
    turns = [("human", "<image>x"), ("gpt", "y")]
    assert len(encoder().encode(turns, record_id="v1", max_length=9)) == 9
    msg = ("record 'v1': needs 9 tokens after image expansion but max_length is 8, even with a single exchange; "
           "raise max_length or lower num_image_tokens")
    with pytest.raises(LabelError, match=f"^{re.escape(msg)}$"):
        encoder().encode(turns, record_id="v1", max_length=8)
    loaded: list[tuple[str, int]] = []
    ds = dataset([record("v1", *turns)], 8, loaded=loaded)
    assert ds[0] == Skipped(0, "v1", f"labels: {msg}") and loaded == [] and ds.lengths() == [0]
    whole = dataset([record("v1", *turns)], 9, loaded=loaded)[0]
    assert isinstance(whole, Sample) and loaded == [("v1", 0)] and whole.pixel_values.shape == (1, 3, 2, 2)


def test_the_dataset_loads_only_the_images_of_kept_turns() -> None:
    loaded: list[tuple[str, int]] = []
    r = record("t1", ("human", "<image>a"), ("gpt", "b"), ("human", "<image>c"), ("gpt", "d"))
    full = dataset([r], 64).length(0)
    assert full == 17  # 2 × (N + 2) + <s> a \n b </s> c \n d </s>
    whole = dataset([r], full, loaded=loaded)[0]
    assert isinstance(whole, Sample) and loaded == [("t1", 0), ("t1", 1)] and whole.dropped_turns == 0
    assert whole.pixel_values[:, 0, 0, 0].tolist() == [0.0, 10.0]  # placeholder order
    loaded.clear()
    cut = dataset([r], full - 1, loaded=loaded)[0]
    assert isinstance(cut, Sample) and loaded == [("t1", 0)] and cut.dropped_turns == 2
    assert len(cut) == 9 and cut.pixel_values.shape == (1, 3, 2, 2) and cut.image_is_target == [False]
    assert dataset([r], full - 1).lengths() == [9]
