"""Tiny random models for tests, benchmarks and `make demo`: built from config, saved, loaded the real way.

`make_tiny(out_dir)` writes three directories a user would otherwise download:

- `lm/`: a 2-layer causal LM (Llama- or Qwen2-style, hidden 64) with a byte-level BPE tokenizer trained on the spot.
  The tokenizer already knows `<image>`, `<image_start>`, `<image_end>` (appended last) but the LM's embedding
  matrix stops before them, so building the unified model exercises the "new token rows" path as a real LM would.
- `vision/`: a 2-layer SigLIP- or CLIP-style vision model (image 64 px, patch 16 → 4 × 4 = 16 patches) plus its
  `preprocessor_config.json`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from trainer.tokens import IMAGE_END, IMAGE_START, IMAGE_TOKEN, MM_TOKENS

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = ["a", "the", "cat", "dog", "red", "blue", "green", "image", "picture", "photo", "of", "on", "in", "with", "and", "is", "are", "what", "where", "which", "how", "many", "describe", "generate", "draw", "edit", "make", "it", "change", "color", "sky", "tree", "house", "car", "person", "man", "woman", "child", "yes", "no", "left", "right", "top", "bottom", "first", "then", "next", "frame", "video", "happens", "scene", "question", "answer", "because", "look", "region", "zoom", "small", "large", "two", "three"]  # noqa: E501


@dataclass(frozen=True)
class TinyPaths:
    lm: Path
    vision: Path


def _corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ""])
        lines.append(sentence + rng.choice(["", "\n", "\n\n"]))
    return lines


def make_tokenizer(out_dir: Path, *, llm: Literal["llama", "qwen2"], vocab_size: int = 400):
    """Train a byte-level BPE on a generated corpus; wrap it as a fast tokenizer. Returns (tokenizer, base_vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = LLAMA3_SPECIALS + CHATML_SPECIALS
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(2000, seed=0), trainer=trainer)
    base_vocab = tok.get_vocab_size()
    if llm == "llama":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
        )  # no pad token on purpose: Llama-3 ships without one
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_tokens(list(MM_TOKENS), special_tokens=True)
    assert fast.convert_tokens_to_ids(IMAGE_END) == base_vocab + 2, "MM tokens must come last"
    fast.save_pretrained(out_dir)
    return fast, base_vocab


def make_tiny(
    out_dir: str | Path,
    *,
    llm: Literal["llama", "qwen2"] = "llama",
    vision: Literal["siglip", "clip"] = "siglip",
    seed: int = 0,
    llm_shape: dict[str, int] | None = None,
    vision_shape: dict[str, int] | None = None,
) -> TinyPaths:
    """Build and save a tiny random LM (+ tokenizer) and vision tower under `out_dir`; return their directories.

    `llm_shape` / `vision_shape` override the config sizes (e.g. `{"hidden_size": 768, "num_hidden_layers": 12}`,
    or SigLIP-so400m's `{"hidden_size": 1152, "image_size": 384, "patch_size": 14, ...}`) for benchmarks at
    realistic sizes with random weights; the tokenizer stays the tiny one.
    """
    from transformers import (
        AutoModelForCausalLM,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        Qwen2Config,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    out = Path(out_dir)
    lm_dir, vision_dir = out / "lm", out / "vision"
    torch.manual_seed(seed)
    tokenizer, base_vocab = make_tokenizer(lm_dir, llm=llm)
    common = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": base_vocab, "max_position_embeddings": 2048} | (llm_shape or {})
    if llm == "llama":
        cfg = LlamaConfig(**common, tie_word_embeddings=False,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    elif llm == "qwen2":
        # Tied like the small Qwen2 checkpoints, so the tied-embedding path is tested too.
        cfg = Qwen2Config(**common, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    else:
        raise ValueError(f"make_tiny: llm={llm!r}; expected 'llama' or 'qwen2'")
    AutoModelForCausalLM.from_config(cfg).save_pretrained(lm_dir)

    vcommon = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
               "image_size": 64, "patch_size": 16} | (vision_shape or {})
    if vision == "siglip":
        SiglipVisionModel(SiglipVisionConfig(**vcommon)).save_pretrained(vision_dir)
        side = vcommon["image_size"]
        proc = {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                "size": {"height": side, "width": side},
                "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    elif vision == "clip":
        CLIPVisionModel(CLIPVisionConfig(**vcommon, projection_dim=48)).save_pretrained(vision_dir)
        proc = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 64},
                "resample": 3, "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711]}
    else:
        raise ValueError(f"make_tiny: vision={vision!r}; expected 'siglip' or 'clip'")
    (vision_dir / "preprocessor_config.json").write_text(json.dumps(proc, indent=2))
    return TinyPaths(lm=lm_dir, vision=vision_dir)


__all__ = ["IMAGE_END", "IMAGE_START", "IMAGE_TOKEN", "TinyPaths", "make_tiny", "make_tokenizer"]
