"""Shared builder helpers: the seeded per-record draws reproduce each builder's historical derivation exactly (the
datasets built before stay byte-identical), and input labels."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from builders._common import Draws, input_labels

KEYS = [f"{label}:{n}" for label in ("viscot_363k", "train", "cc12m", "a~1") for n in range(40)]


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_blake2b_draw_is_visual_cot_and_aurora_phrasing_pick(seed: int) -> None:
    for key in KEYS:
        digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
        for n in (1, 3, 4, 7):
            assert Draws(seed, key, "blake2b").index(n) == int.from_bytes(digest, "little") % n


@pytest.mark.parametrize("seed", [0, 3])
def test_sha256_draws_are_cc12m_words_in_order(seed: int) -> None:
    for key in KEYS:
        h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        words = [int.from_bytes(h[i: i + 8], "big") for i in (0, 8, 16)]
        d = Draws(seed, key, "sha256")
        assert (d.word(), d.index(7), d.share()) == (words[0], words[1] % 7, words[2] / 2**64)


def test_random_draws_are_the_video_builders_random_stream() -> None:
    choices = [(k, s) for k in range(1, 4) for s in range(1, 6)]
    for key in KEYS:
        rng, d = random.Random(f"7:{key}"), Draws(7, key, "random")
        assert d.choice(choices) == rng.choice(choices)
        assert d.index(11) == rng.randrange(11)
        assert d.choice("abcd") == rng.choice("abcd")


def test_hash_derivations_have_a_fixed_number_of_draws() -> None:
    d = Draws(0, "k", "blake2b")
    d.index(3)
    with pytest.raises(IndexError):
        d.index(3)


def test_input_labels_are_stems_made_unique_by_position(tmp_path: Path) -> None:
    (tmp_path / "frames.d").mkdir()
    paths = [tmp_path / "a" / "train.json", tmp_path / "b" / "train.jsonl", tmp_path / "val.json", tmp_path / "frames.d"]
    assert input_labels(paths) == ["train~0", "train~1", "val", "frames.d"]
