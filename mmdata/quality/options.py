"""The typed options of `mmdata dedup` (`DedupOptions`) and `mmdata decontaminate` (`DecontaminateOptions`): their
keys, defaults, docs and value rules, declared once; the commands' flags are generated from them
(`mmdata.core.flags`). Kept apart from the algorithms so the command line loads without numpy and the hashing stack."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.core.options import ConfigError, opt

_SPEC = re.compile(r"^(none|exact|phash|minhash)(?::([0-9.]+))?$")


def _workers() -> Any:
    """The `workers` key both commands share (its default and help written once)."""
    return opt(2, short="-w", help="Processes hashing shards in parallel")


def _cache() -> Any:
    return opt(None, help="Signature cache (default: $MMDATA_CACHE/signatures or ~/.cache/mmdata/signatures)")


@dataclass(frozen=True)
class DedupOptions:
    images: str = "phash:4"  # none | exact | phash:D (Hamming distance, 0..16)
    text: str = "minhash:0.8"  # none | exact | minhash:J (Jaccard, 0.5..1)
    workers: int = _workers()
    cache: Path | None = _cache()

    def __post_init__(self) -> None:
        self.distance, self.jaccard  # noqa: B018 (parses both specs: a bad one fails here, at the edge)
        if self.image_mode == "none" and self.text_mode == "none":
            raise ConfigError("both criteria are `none`: nothing would ever be a duplicate", key="images")
        if self.workers < 1:
            raise ConfigError(f"must be >= 1, got {self.workers}", key="workers")

    @property
    def image_mode(self) -> str:
        return _parse(self.images, "images", ("none", "exact", "phash"), 4, (0, 16))[0]

    @property
    def distance(self) -> int:
        return int(_parse(self.images, "images", ("none", "exact", "phash"), 4, (0, 16))[1])

    @property
    def text_mode(self) -> str:
        return _parse(self.text, "text", ("none", "exact", "minhash"), 0.8, (0.5, 1.0))[0]

    @property
    def jaccard(self) -> float:
        return float(_parse(self.text, "text", ("none", "exact", "minhash"), 0.8, (0.5, 1.0))[1])


def _parse(spec: str, key: str, modes: tuple[str, ...], default: float, bounds: tuple[float, float]) -> tuple[str, float]:
    m = _SPEC.match(spec.strip())
    if m is None or m.group(1) not in modes or (m.group(2) is not None and m.group(1) in ("none", "exact")):
        raise ConfigError(f"{spec!r} is not one of {', '.join(modes)}" + (f" (`{modes[-1]}:{default}`)"), key=key)
    value = float(m.group(2)) if m.group(2) is not None else default
    if not bounds[0] <= value <= bounds[1] or (m.group(1) == "phash" and value != int(value)):
        raise ConfigError(f"{spec!r}: {m.group(1)} takes a value in [{bounds[0]:g}, {bounds[1]:g}]", key=key)
    return m.group(1), value


@dataclass(frozen=True)
class DecontaminateOptions:
    distance: int = 4  # pHash Hamming distance at which a training image matches an eval image
    ngram: int = 13  # Words in a shared n-gram
    min_words: int = 8  # Shorter eval questions are ignored
    workers: int = _workers()
    cache: Path | None = _cache()

    def __post_init__(self) -> None:
        for key, lo, hi in (("distance", 0, 16), ("ngram", 3, 64), ("min_words", 1, 64), ("workers", 1, 1024)):
            if not lo <= getattr(self, key) <= hi:
                raise ConfigError(f"must be in [{lo}, {hi}], got {getattr(self, key)}", key=key)
