"""Sequence packing: whole samples placed into rows of `max_length` tokens, planned once from their exact lengths.

The plan is a pure function of (lengths, capacity): best-fit decreasing inside consecutive windows of the sample
order (so the mixture's interleaving survives at the window scale), each pack a fixed list of sample indices.
`PackedDataset` serves pack p as its samples; the loader then shards, shuffles and counts packs exactly as it
would samples, so its position (packs consumed in the epoch) is the packer's whole state, and the plan's
fingerprint, saved beside it, proves on resume that the same packs are meant.

Attention never crosses samples: the collator restarts `position_ids` per sample and the model turns them into a
block-diagonal causal mask (SDPA / eager) or hands them to flash-attention's varlen path (`UnifiedModel`).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

WINDOW = 2048  # samples planned together: larger packs tighter, smaller keeps the mixture's order more local


def plan_packs(lengths: Sequence[int], capacity: int, *, window: int = WINDOW) -> list[list[int]]:
    """Packs of sample indices whose lengths sum to at most `capacity`, every index exactly once.

    A length of 0 (a sample that will be skipped) costs nothing and still travels in a pack, so its skip is
    counted like any other.
    """
    too_long = [(i, n) for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        i, n = too_long[0]
        raise ValueError(f"sample {i} is {n} tokens, longer than the pack capacity {capacity} (data.max_length); "
                         "the dataset truncates to max_length, so lengths and capacity disagree")
    packs: list[list[int]] = []
    for lo in range(0, len(lengths), window):
        order = sorted(range(lo, min(lo + window, len(lengths))), key=lambda i: (-lengths[i], i))
        bins: list[list[int]] = []
        free: list[tuple[int, int]] = []  # (room left, bin) sorted: the tightest bin that fits is one bisect away
        for i in order:
            k = bisect.bisect_left(free, (lengths[i], -1))
            if k == len(free):
                bins.append([i])
                room, b = capacity - lengths[i], len(bins) - 1
            else:
                (room, b) = free.pop(k)
                bins[b].append(i)
                room -= lengths[i]
            bisect.insort(free, (room, b))
        packs.extend(sorted(b) for b in bins)
    return packs


def fingerprint(packs: list[list[int]]) -> str:
    """A short hash of the plan: saved with the loader position, checked on resume."""
    h = hashlib.sha256()
    for p in packs:
        h.update(np.asarray(p, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


def padding(lengths: Sequence[int], rows: list[list[int]], batch_size: int) -> tuple[int, int]:
    """(real tokens, padded tokens) when `rows` (one list of sample indices per row) are batched `batch_size` at a
    time and each batch pads to its longest row: what `bench/packing.py` compares packed against unpacked."""
    real = pad = 0
    for lo in range(0, len(rows), batch_size):
        widths = [sum(lengths[i] for i in r) for r in rows[lo:lo + batch_size]]
        real += sum(widths)
        pad += max(widths) * len(widths) - sum(widths)
    return real, pad


class PackedDataset(torch.utils.data.Dataset):
    """Item p = the samples of pack p (a list of `Sample` / `Skipped`), for `Collator(packed=True)`."""

    def __init__(self, data: Sequence[Any], packs: list[list[int]]) -> None:
        self.data, self.packs = data, packs

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, p: int) -> list[Any]:
        getitems = getattr(self.data, "__getitems__", None)  # one batched read of the pack's records
        return getitems(self.packs[p]) if getitems is not None else [self.data[i] for i in self.packs[p]]


def block_causal_mask(position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L, L) additive mask: token t sees token s iff s <= t and both lie in the same sample.

    A sample starts wherever `position_ids` is 0 (the padding tail is a segment too, so no row is fully masked).
    Additive (0 / dtype min) so eager attention and SDPA read it the same way.
    """
    seg = (position_ids == 0).cumsum(-1)
    n = position_ids.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)
