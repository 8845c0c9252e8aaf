"""Record filters of mixture recipes (`filters:` at the top, for every source, or on one source, which overrides
the top key by key):

```yaml
filters:
  min_side: 64            # every image's shorter side, pixels
  max_side: 4096          # every image's longer side
  max_aspect: 4.0         # every image's longer / shorter side
  max_media: 8            # media per record
  text: {human: {max: 2000}, gpt: {min: 1, max: 8000}}   # characters per role (all its turns, placeholders out)
  tasks: [vqa, t2i]       # keep only these tasks
  exclude_tasks: [text]   # drop these tasks
```
A record is kept when it passes every filter; `mmdata mix --dry-run` shows how many records each one removes.
Filters read the records' own fields (media sizes are in the record), never the media files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from mmdata.core.options import ConfigError
from mmdata.core.schema import IMAGE, Record


@dataclass
class Bounds:
    min: int | None = None  # at least this many characters
    max: int | None = None  # at most this many characters

    def __post_init__(self) -> None:
        for key in ("min", "max"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, key)}", key=key)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"min {self.min} is above max {self.max}", key="")


@dataclass
class TextLength:
    human: Bounds | None = None  # characters of the human turns
    gpt: Bounds | None = None  # characters of the gpt turns
    system: Bounds | None = None  # characters of the system turn


@dataclass
class Filters:
    min_side: int | None = None  # every image's shorter side is at least this (pixels)
    max_side: int | None = None  # every image's longer side is at most this (pixels)
    max_aspect: float | None = None  # every image's longer / shorter side is at most this
    max_media: int | None = None  # at most this many media per record
    text: TextLength | None = None  # characters per role: {human: {min, max}, gpt: {...}, system: {...}}
    tasks: list[str] | None = None  # keep only records of these tasks
    exclude_tasks: list[str] | None = None  # drop records of these tasks

    def __post_init__(self) -> None:
        for key in ("min_side", "max_side", "max_media"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"must be >= 0, got {getattr(self, key)}", key=key)
        if self.max_aspect is not None and not (math.isfinite(self.max_aspect) and self.max_aspect >= 1):
            raise ConfigError(f"must be a number >= 1, got {self.max_aspect}", key="max_aspect")

    def over(self, base: Filters | None) -> Filters:
        """These filters on top of `base`: each key set here replaces base's."""
        if base is None:
            return self
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})

    def checks(self) -> list[tuple[str, Callable[[Record], bool]]]:
        """(name, passes) of each filter that is set, in a fixed order."""
        out: list[tuple[str, Callable[[Record], bool]]] = []
        sides = lambda r: [(min(m.width, m.height), max(m.width, m.height)) for m in r.media]  # noqa: E731
        if self.min_side is not None:
            out.append(("min_side", lambda r, v=self.min_side: all(lo >= v for lo, _ in sides(r))))
        if self.max_side is not None:
            out.append(("max_side", lambda r, v=self.max_side: all(hi <= v for _, hi in sides(r))))
        if self.max_aspect is not None:
            out.append(("max_aspect", lambda r, v=self.max_aspect: all(hi <= v * max(lo, 1) for lo, hi in sides(r))))
        if self.max_media is not None:
            out.append(("max_media", lambda r, v=self.max_media: len(r.media) <= v))
        for role in ("human", "gpt", "system"):
            b = getattr(self.text, role) if self.text is not None else None
            if b is not None:
                out.append((f"text.{role}", lambda r, role=role, b=b: _within(_chars(r, role), b)))
        if self.tasks is not None:
            out.append(("tasks", lambda r, v=frozenset(self.tasks): r.task in v))
        if self.exclude_tasks is not None:
            out.append(("exclude_tasks", lambda r, v=frozenset(self.exclude_tasks): r.task not in v))
        return out


def _chars(record: Record, role: str) -> int:
    return sum(len(t.value.replace(IMAGE, "").strip()) for t in record.conversations if t.role == role)


def _within(n: int, b: Bounds) -> bool:
    return (b.min is None or n >= b.min) and (b.max is None or n <= b.max)
