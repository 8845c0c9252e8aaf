"""Chat templates: a conversation → `input_ids` + `labels`, with only assistant content supervised.

How labels are built, and why no sample is ever silently masked: the template renders the whole conversation to
one string made of pieces, each marked supervised or not; that string is tokenized ONCE (exactly what inference
does with the same rendered prompt), and each token takes the supervision of the characters it covers. A token
that straddles a supervised/unsupervised boundary, user text that contains a special token, or a conversation with
nothing to learn raises `LabelError` naming the record and the reason. Images are expanded in the text itself
(`<image_start>` + N × `<image>` + `<image_end>`), so the token count is the exact expanded length.

Supervised: assistant text, the end-of-turn token closing each assistant turn, `<image_start>`/`<image_end>` of
images inside assistant turns. Never supervised: the N image slots (the vision head learns those), headers, BOS,
human and system turns, separators after the end-of-turn token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mmdata.core.errors import InputError
from mmdata.core.schema import IMAGE
from trainer.tokens import IMAGE_END, IMAGE_START, IMAGE_TOKEN

IGNORE_INDEX = -100


class LabelError(InputError):
    """The labels of a sample cannot be built faithfully. The message names the record and the reason."""


@dataclass(frozen=True)
class ChatTemplate:
    """One chat format. `{bos}` / `{eos}` in any string are replaced by the tokenizer's own BOS / EOS tokens."""

    name: str
    begin: str  # once at the start, unsupervised
    headers: dict[str, str]  # role → text opening the turn, unsupervised
    end_of_turn: dict[str, str]  # role → text closing the turn; supervised after an assistant turn
    separator: str = ""  # after end_of_turn, unsupervised
    default_system: str | None = None
    required: tuple[str, ...] = ()  # special tokens the tokenizer must know as single tokens
    stop: tuple[str, ...] = ("{eos}",)  # tokens that end a generated assistant turn
    # Strip each message's text, as the official Llama-3 chat format does (`content | trim`): an answer that starts
    # with "\n" would otherwise merge with the header's "\n\n" into one token straddling the label boundary.
    strip: bool = False


TEMPLATES: dict[str, ChatTemplate] = {
    # Official Llama-3 layout: header, then TWO newlines. One BOS, written here, never by the tokenizer.
    "llama3": ChatTemplate(
        name="llama3",
        begin="<|begin_of_text|>",
        headers={r: f"<|start_header_id|>{n}<|end_header_id|>\n\n"
                 for r, n in (("system", "system"), ("human", "user"), ("gpt", "assistant"))},
        end_of_turn={"system": "<|eot_id|>", "human": "<|eot_id|>", "gpt": "<|eot_id|>"},
        required=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        stop=("<|eot_id|>", "{eos}"),
        strip=True,
    ),
    # ChatML as Qwen2 writes it, including its default system prompt.
    "qwen2": ChatTemplate(
        name="qwen2",
        begin="",
        headers={r: f"<|im_start|>{n}\n" for r, n in (("system", "system"), ("human", "user"), ("gpt", "assistant"))},
        end_of_turn={"system": "<|im_end|>", "human": "<|im_end|>", "gpt": "<|im_end|>"},
        separator="\n",
        default_system="You are a helpful assistant.",
        required=("<|im_start|>", "<|im_end|>"),
        stop=("<|im_end|>", "{eos}"),
    ),
    # Stage-1 captioning (LLaVA "plain"): no roles; human text then "\n", assistant text then EOS.
    # Unlike LLaVA we keep the human text, so t2i prompts ("draw a cat") survive.
    "plain": ChatTemplate(
        name="plain",
        begin="{bos}",
        headers={"human": "", "gpt": ""},
        end_of_turn={"human": "\n", "gpt": "{eos}"},
    ),
}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image_is_target: list[bool]  # one per image kept, in placeholder order
    dropped_turns: int = 0  # trailing turns removed to fit max_length
    text: str = field(default="", repr=False)

    def __len__(self) -> int:
        return len(self.input_ids)


class ConversationEncoder:
    """Binds a template to a tokenizer once (token checks, special-token scan); `encode` is then per sample."""

    def __init__(self, template: str | ChatTemplate, tokenizer, num_image_tokens: int) -> None:
        if isinstance(template, str):
            if template not in TEMPLATES:
                raise InputError(f"template {template!r} is unknown; expected one of {sorted(TEMPLATES)}")
            template = TEMPLATES[template]
        self.template = template
        self.tokenizer = tokenizer
        self.n = num_image_tokens
        self._subst = {"{bos}": tokenizer.bos_token or "", "{eos}": tokenizer.eos_token or ""}
        if "{eos}" in str(template.end_of_turn) and not tokenizer.eos_token:
            raise InputError(f"template {template.name!r} needs an EOS token; the tokenizer has none")
        stops = [s for s in map(self._sub, template.stop) if s]  # "{eos}" of a tokenizer without one: none
        for tok in (*template.required, *stops, IMAGE_TOKEN, IMAGE_START, IMAGE_END):
            ids = tokenizer.encode(tok, add_special_tokens=False)
            if len(ids) != 1:
                raise InputError(
                    f"template {template.name!r}: the tokenizer splits {tok!r} into {len(ids)} tokens; it must be "
                    "one special token (build the model with trainer.build_model, which adds the image tokens, "
                    "or pick the template that matches this tokenizer)"
                )
        self.image_id, self.start_id, self.end_id = (tokenizer.convert_tokens_to_ids(t)
                                                     for t in (IMAGE_TOKEN, IMAGE_START, IMAGE_END))
        self.stop_ids = frozenset(tokenizer.convert_tokens_to_ids(s) for s in stops)  # generation ends at these
        specials = sorted({*tokenizer.all_special_tokens, *_added_token_strings(tokenizer)}, key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(s) for s in specials if s)) if specials else None

    # ------------------------------------------------------------------ rendering
    def _sub(self, s: str) -> str:
        for k, v in self._subst.items():
            s = s.replace(k, v)
        return s

    def render(self, turns: Sequence[tuple[str, str]], *, record_id: str = "?",
               add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """(role, text) turns → pieces (text, supervised). `<image>` placeholders become the expanded image run."""
        t = self.template
        pieces: list[tuple[str, bool]] = [(self._sub(t.begin), False)]
        if t.default_system is not None and (not turns or turns[0][0] != "system"):
            turns = [("system", t.default_system), *turns]
        image = IMAGE_TOKEN * self.n
        for i, (role, text) in enumerate(turns):
            if role not in t.headers:
                raise LabelError(f"record {record_id!r}: turn {i} has role {role!r}, which template {t.name!r} "
                                 f"cannot express (roles: {sorted(t.headers)})")
            sup = role == "gpt"
            if t.strip:
                text = text.strip()
            pieces.append((self._sub(t.headers[role]), False))
            for j, chunk in enumerate(text.split(IMAGE)):
                if j:
                    pieces += [(IMAGE_START, sup), (image, False), (IMAGE_END, sup)]
                if self._special_re is not None and (m := self._special_re.search(chunk)):
                    raise LabelError(f"record {record_id!r}: turn {i} ({role}) contains the special token "
                                     f"{m.group(0)!r} as text; remove it from the data")
                pieces.append((chunk, sup))
            pieces += [(self._sub(t.end_of_turn[role]), sup), (self._sub(t.separator), False)]
        if add_generation_prompt:
            pieces.append((self._sub(t.headers["gpt"]), False))
        return [(s, sup) for s, sup in pieces if s]

    def prompt(self, turns: Sequence[tuple[str, str]]) -> str:
        """The inference prompt for `turns` (ending with the assistant header): the same string training sees."""
        return "".join(s for s, _ in self.render(turns, add_generation_prompt=True))

    # ------------------------------------------------------------------ encoding
    def encode(self, turns: Sequence[tuple[str, str]], *, record_id: str = "?",
               max_length: int | None = None) -> Encoded:
        """Tokenize and label; if too long, drop whole trailing exchanges (never part of an image) and count them."""
        turns = list(turns)
        dropped = 0
        while True:
            enc = self._encode_once(turns, record_id)
            if max_length is None or len(enc) <= max_length:
                enc.dropped_turns = dropped
                return enc
            keep = _last_exchange_start(turns)
            if keep is None:
                raise LabelError(f"record {record_id!r}: needs {len(enc)} tokens after image expansion but "
                                 f"max_length is {max_length}, even with a single exchange; raise max_length or "
                                 "lower num_image_tokens")
            dropped += len(turns) - keep
            turns = turns[:keep]

    def _encode_once(self, turns: Sequence[tuple[str, str]], record_id: str) -> Encoded:
        pieces = self.render(turns, record_id=record_id)
        text = "".join(s for s, _ in pieces)
        sup = np.zeros(len(text) + 1, dtype=np.int64)
        pos = 0
        for s, is_sup in pieces:
            if is_sup:
                sup[pos + 1: pos + len(s) + 1] = 1
            pos += len(s)
        csum = np.cumsum(sup)  # csum[e] - csum[s] = supervised characters in text[s:e]
        out = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = out["input_ids"]
        labels = []
        for tid, (s, e) in zip(ids, out["offset_mapping"]):
            n_sup = int(csum[e] - csum[s]) if e > s else 0
            if 0 < n_sup < e - s:
                raise LabelError(f"record {record_id!r}: token {self.tokenizer.convert_ids_to_tokens(tid)!r} "
                                 f"spans text {text[s:e]!r} that is partly assistant, partly not; the template and "
                                 "tokenizer disagree on this boundary")
            labels.append(tid if n_sup else IGNORE_INDEX)
        image_is_target = self._check_images(ids, labels, turns, record_id)
        if all(lab == IGNORE_INDEX for lab in labels):
            raise LabelError(f"record {record_id!r}: no supervised token (no assistant content)")
        return Encoded(ids, labels, image_is_target, text=text)

    def _check_images(self, ids: list[int], labels: list[int], turns: Sequence[tuple[str, str]],
                      record_id: str) -> list[bool]:
        """Each image must be start + N slots + end in the ids; returns which images are generation targets."""
        arr = np.asarray(ids)
        starts = np.flatnonzero(arr == self.start_id)
        expected = [role == "gpt" for role, text in turns for _ in range(text.count(IMAGE))]
        ok = len(starts) == len(expected) and int((arr == self.image_id).sum()) == len(expected) * self.n
        for p in starts if ok else ():
            ok = ok and p + self.n + 1 < len(arr) and arr[p + self.n + 1] == self.end_id \
                and bool((arr[p + 1: p + self.n + 1] == self.image_id).all())
        if not ok:
            raise LabelError(f"record {record_id!r}: tokenized image runs do not match the {len(expected)} "
                             f"placeholder(s) × {self.n} slots; the tokenizer does not keep the image tokens intact")
        for p, target in zip(starts, expected):
            assert (labels[p] != IGNORE_INDEX) == target, "image_start supervision must follow the turn's role"
        return expected


def _last_exchange_start(turns: Sequence[tuple[str, str]]) -> int | None:
    """Index where the last human→gpt exchange starts, if at least one exchange remains before it."""
    human = [i for i, (role, _) in enumerate(turns) if role == "human"]
    if len(human) < 2:
        return None
    return human[-1]


def _added_token_strings(tokenizer) -> list[str]:
    try:
        return [str(t) for t in tokenizer.added_tokens_decoder.values() if getattr(t, "special", True)]
    except AttributeError:
        return []
