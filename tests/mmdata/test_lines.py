"""`newlines` finds every newline, at chunk edges too, in buffers of every shape."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from mmdata.core import lines
from mmdata.core.lines import newlines


def _want(raw: np.ndarray) -> np.ndarray:
    return np.flatnonzero(raw == 10)


@pytest.mark.parametrize("size", [0, 1, 2, 1000, lines._CHUNK - 1, lines._CHUNK, lines._CHUNK + 1,
                                  3 * lines._CHUNK + 7])
@pytest.mark.parametrize("density", [0.0, 0.002, 0.5, 1.0])
def test_same_positions_as_a_whole_buffer_comparison(size: int, density: float) -> None:
    rng = np.random.default_rng(size + int(density * 1000))
    raw = np.where(rng.random(size) < density, 10, rng.integers(11, 256, size)).astype(np.uint8)
    got = newlines(raw)
    assert got.dtype == np.int64 and np.array_equal(got, _want(raw))


def test_newlines_on_both_sides_of_every_chunk_edge() -> None:
    raw = np.full(4 * lines._CHUNK, ord("x"), dtype=np.uint8)
    edges = [k * lines._CHUNK + d for k in range(1, 4) for d in (-1, 0)]
    raw[edges] = 10
    assert newlines(raw).tolist() == edges


def test_threads_do_not_share_a_scratch_mask() -> None:
    rng = random.Random(0)
    buffers = [np.frombuffer(bytes(rng.choice(b"ab\n") for _ in range(lines._CHUNK + 999)), np.uint8)
               for _ in range(4)]
    failures: list[int] = []

    def check(k: int) -> None:
        for _ in range(30):
            if not np.array_equal(newlines(buffers[k]), _want(buffers[k])):
                failures.append(k)

    threads = [threading.Thread(target=check, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
