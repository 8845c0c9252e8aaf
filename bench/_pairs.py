"""Interleaved repeated runs: every contender runs once per round, in an order that rotates from round to round,
so all of them see the same machine state; figures are medians with their spread (min–max over the rounds), and
a ratio is the median of the per-round ratios (each pair ran back to back)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def rounds(contenders: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Wall seconds of each contender in each of `n` rounds."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t)
    print(f"({n} interleaved rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return times


def rate(label: str, items: int, seconds: list[float], unit: str = "rec/s") -> None:
    rates = sorted(items / s for s in seconds)
    print(f"    {label:<34}{statistics.median(rates):12,.0f} {unit}   (spread {rates[0]:,.0f}–{rates[-1]:,.0f})")


def ratio(label: str, ours: list[float], base: list[float], target: str) -> None:
    """Rate of `ours` over rate of `base`, per round (base seconds / our seconds)."""
    per_round = sorted(b / o for o, b in zip(ours, base, strict=True))
    print(f"    {label:<34}{statistics.median(per_round):12.2f} ×       (spread {per_round[0]:.2f}–{per_round[-1]:.2f})"
          f"   target {target}")
