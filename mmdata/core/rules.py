"""The contract's rules, each stated once, and the two ways they are checked.

`Rules` is the table: one field per rule (the fields that must hold text, the roles and their order, what a turn's
value must hold, the `<image>` placeholder, the media kinds, frame times, media paths). `RULES` is the contract in
force; everything that checks records reads it when it checks, so changing a rule is one edit here.

- `Rules.check` takes one record and raises `RecordError` naming the first rule it breaks (`Record.validate`);
- the batch checks (`plain_mask`, `turn_verdicts`, `whole_exchanges`) judge a whole batch in a few C-level passes
  for the writer's and the builders' fast paths. They only ever *prove* records valid: what they cannot prove goes
  to `check`, so a record is rejected by one path only, with one message. Tests hold their verdicts to `check`'s,
  for this table and for changed ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import PurePosixPath
from typing import Any

from mmdata.core.errors import InputError


class RecordError(InputError):
    """A record breaks the contract. The message names the record id and the field."""


def frame_time_problem(t: Any) -> str | None:
    """A media entry's time `t`: None, or a finite number of seconds >= 0 (a bool is not a number: a stored
    record's `t` is read back as int | float | None)."""
    if t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t < math.inf):
        return None
    return f"must be a finite number of seconds >= 0, got {t!r}"


def media_path_problem(path: Any) -> str | None:
    """A media path is relative, POSIX, and stays inside the media root (no `..`, no absolute path). The common
    case costs a few string scans: a path object is built only when `..` occurs ("a..b.jpg" is fine)."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    if path[0] == "/" or "\\" in path or path[1:2] == ":":
        return f"{path!r} is absolute; media paths are relative to the media root"
    if ".." in path and ".." in PurePosixPath(path).parts:
        return f"{path!r} escapes the media root ('..' is not allowed)"
    return None


_ROLE_OF, _VALUE_OF, _MEDIA_OF, _TURNS_OF = map(attrgetter, ("role", "value", "media", "conversations"))


_CYCLES = 512  # cycles of the role order the one-pass check compares; longer conversations are walked turn by turn


_RUN = 32  # records judged together again when their batch is not all usual ones


@dataclass(frozen=True)
class Rules:
    """The contract's rules, one field each. `check` and the batch checks read only these fields."""

    names: tuple[str, ...] = ("id", "source", "task")  # fields that hold a non-empty string
    opening: str = "system"  # the role of an optional first turn, and of no other turn
    order: tuple[str, ...] = ("human", "gpt")  # the roles of the other turns, in this order, over and over
    # A turn's value is a string of which `text(value)` is truthy (`str.strip`: not empty, not only whitespace).
    # A C function: the batch checks map it over a whole batch's values.
    text: Callable[[str], Any] = str.strip
    placeholder: str = "<image>"  # one per media entry, in order, in the turns of `order` only
    media_kinds: tuple[str, ...] = ("image", "frame")
    time: Callable[[Any], str | None] = frame_time_problem  # a media entry's `t`: what is wrong, or None
    path: Callable[[Any], str | None] = media_path_problem  # a media entry's `path`: what is wrong, or None
    # Derived once from the fields above, for the checks that read them on every record or batch.
    roles: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _fields: tuple[Callable[[Any], Any], ...] = field(init=False, repr=False, compare=False)
    _named: Callable[[Any], tuple[Any, ...]] = field(init=False, repr=False, compare=False)  # all of `names`
    _sequence: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.order or not self.placeholder or "\0" in self.placeholder:
            raise ValueError("a turn order and a placeholder (without NUL) are needed")
        object.__setattr__(self, "roles", (self.opening, *self.order))
        object.__setattr__(self, "_fields", tuple(map(attrgetter, self.names)))
        # One C call for all of them (attrgetter of one name gives the value itself, of none is not allowed).
        object.__setattr__(self, "_named", attrgetter(*self.names) if len(self.names) > 1 else
                           lambda record: tuple(get(record) for get in self._fields))
        object.__setattr__(self, "_sequence", [self.opening, *self.order * _CYCLES])

    # ------------------------------------------------------------ one record
    def check(self, record: Any) -> None:
        """Raise `RecordError` naming the record id and the first rule `record` breaks. It runs on every record of
        every build, so the common case costs one pass over the turns."""
        for value in self._named(record):
            if not isinstance(value, str) or not value:
                self._name_problem(record)
        turns = record.conversations
        if not turns:
            raise _error(record, "field 'conversations' is empty")
        start = 1 if turns[0].role == self.opening else 0
        placeholders = self.placeholders_if_valid(turns)
        if placeholders is None:  # a turn breaks a rule: say which, turn by turn
            placeholders = self.walk_turns(record, start)
        if len(turns) == start:
            raise _error(record, f"field 'conversations' has no {self.order[0]} turn")
        if start and self.placeholder in turns[0].value:
            raise _error(record, f"conversations[0] ({self.opening}) contains {self.placeholder}; media belong in "
                                 f"{'/'.join(self.order)} turns")
        media = record.media
        if placeholders != len(media):
            raise _error(record, f"{placeholders} {self.placeholder} placeholder(s) in conversations but "
                                 f"{len(media)} media")
        for i, m in enumerate(media) if media else ():
            if (why := self.path(m.path)) is not None:
                raise _error(record, f"media[{i}].path {why}")
            if m.kind not in self.media_kinds:
                raise _error(record, f"media[{i}].kind is {m.kind!r}; expected one of {self.media_kinds}")
            if (why := self.time(m.t)) is not None:
                raise _error(record, f"media[{i}].t {why}")

    def _name_problem(self, record: Any) -> None:
        for name, get in zip(self.names, self._fields):
            value = get(record)
            if not isinstance(value, str) or not value:
                # The id heads every message already: the others also show the value.
                raise _error(record, f"field {name!r} must be a non-empty string"
                                     + ("" if name == "id" else f", got {value!r}"))

    def walk_turns(self, record: Any, start: int) -> int:
        """The turn rules, turn by turn, raising for the first turn that breaks one; else the placeholder count.
        `start`: 1 if the first turn takes the opening role."""
        placeholders = 0
        order, cycle = self.order, len(self.order)
        for i, turn in enumerate(record.conversations):
            role, value = turn.role, turn.value
            expected = order[(i - start) % cycle] if i >= start else self.opening
            if role != expected and role not in self.roles:
                raise _error(record, f"conversations[{i}].from is {role!r}; expected one of {self.roles}")
            if not isinstance(value, str) or not self.text(value):
                raise _error(record, f"conversations[{i}].value is empty")
            if role != expected:
                if role == self.opening:
                    raise _error(record, f"conversations[{i}] is a {self.opening} turn; only the first turn may be one")
                raise _error(record, f"conversations[{i}].from is {role!r}, expected {expected!r} (turns alternate "
                                     f"{'/'.join(order)} after an optional {self.opening} turn)")
            placeholders += value.count(self.placeholder)
        return placeholders

    def placeholders_if_valid(self, turns: list[Any]) -> int | None:
        """`walk_turns` for one record's turns that pass, as a few whole-list operations in C (a Python step per
        turn costs more than the rest of a text record): the placeholder count, or None if a turn may break a rule."""
        n = len(turns)
        start = 1 if n and turns[0].role == self.opening else 0
        if not n or list(map(_ROLE_OF, turns)) != self._sequence[1 - start:n + 1 - start]:
            return None
        values = list(map(_VALUE_OF, turns))
        try:
            if not all(map(self.text, values)):
                return None
            return "\0".join(values).count(self.placeholder)  # "\0": no placeholder spans two turns
        except (TypeError, AttributeError):  # a value is not a string
            return None

    # ------------------------------------------------------------ a batch
    def whole_exchanges(self, conversations: list[list[Any]]) -> bool:
        """Whether every conversation is whole cycles of `order` (not empty, from its first role to its last; no
        opening turn), judged on roles only, in a few whole-batch passes in C: what most records of a batch are."""
        cycle = len(self.order)
        lengths = list(map(len, conversations))
        if 0 in lengths or any(map(cycle.__rmod__, lengths)):  # (a length % cycle)
            return False
        roles = list(map(_ROLE_OF, chain.from_iterable(conversations)))
        per_role = len(roles) // cycle
        return all(roles[k::cycle].count(role) == per_role for k, role in enumerate(self.order))

    def turn_verdicts(self, records: Sequence[Any]) -> tuple[list[int | None], list[bool]] | None:
        """`walk_turns` for each record of a batch: its placeholder count if its turns pass, else None; and whether
        it opens with the opening role. None when a value is not a string: check the batch's records one by one."""
        try:
            return self._judged(list(map(_TURNS_OF, records)))
        except (TypeError, AttributeError):
            return None

    def _judged(self, turns: list[list[Any]]) -> tuple[list[int | None], list[bool]]:
        """`turn_verdicts` of these conversations. The usual ones (whole exchanges, no placeholder) are judged in a
        few whole-batch passes; runs of `_RUN` holding another, one record at a time by `placeholders_if_valid`."""
        n = len(turns)
        values = list(map(_VALUE_OF, chain.from_iterable(turns)))
        # (TypeError from join: a value is not a string.) The placeholder's first character is found by memchr.
        if n and self.placeholder[0] not in "\0".join(values) and self.whole_exchanges(turns) \
                and all(map(self.text, values)):
            return [0] * n, [False] * n
        if n > _RUN:
            parts = [self._judged(turns[at:at + _RUN]) for at in range(0, n, _RUN)]
            return [c for part in parts for c in part[0]], [s for part in parts for s in part[1]]
        opening = self.opening
        return (list(map(self.placeholders_if_valid, turns)),
                [bool(conversation) and conversation[0].role == opening for conversation in turns])

    def plain_mask(self, records: Sequence[Any]) -> list[bool]:
        """For each record, whether it is media-free and passes `check`, judged for the whole batch in a few C
        passes. False means "check it alone" (it may still be valid: one with media, an opening turn, ...).

        True needs: every field of `names` a non-empty string, no media, and turns that pass with no placeholder
        and no opening turn; the rules about media and the opening turn then hold by themselves."""
        n = len(records)
        checked = self.turn_verdicts(records)
        try:
            media = list(map(len, map(_MEDIA_OF, records)))  # (TypeError: not a list)
            fields = [list(map(get, records)) for get in self._fields]
        except (TypeError, AttributeError):
            return [False] * n
        if checked is None:
            return [False] * n
        counts, opened = checked
        # Columns whose every value is a non-empty string need no look per record.
        doubtful = [column for column in fields if set(map(type, column)) != {str} or "" in column]
        if counts.count(0) == n and not any(opened) and not any(media) and not doubtful:
            return [True] * n
        mask = [count == 0 and not opens and not m for count, opens, m in zip(counts, opened, media)]
        for column in doubtful:
            mask = [ok and type(x) is str and x != "" for ok, x in zip(mask, column)]
        return mask


def _error(record: Any, what: str) -> RecordError:
    return RecordError(f"record {record.id!r}: {what}")


RULES = Rules()  # the contract: read by every check when it runs (a test may put a changed table here)
