"""Split large JSONL files and JSON arrays into independent spans, and stream the items of one span.

A span is a byte range holding a fixed number of items, so the same input always splits the same way whatever the
number of workers: that is what makes builds parallel, resumable and byte-identical. Nothing here ever holds a whole
file in memory: planning reads in blocks, iteration reads one span.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, groupby, islice
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from mmdata.core.errors import InputError, NotFound
from mmdata.core.lines import newlines

_BLOCK = 1 << 24  # 16 MiB


_PLAN_BLOCK = 1 << 22  # JSONL planning: 4 MiB


_WHITESPACE = np.zeros(256, dtype=bool)


_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() strips


_WS = " \t\r\n"


_BOM = b"\xef\xbb\xbf"


# orjson reads integers outside [-2**63, 2**64) as floats, and writes none of them: such an item is rejected, never
# silently rounded. Only data holding a run of 19+ digits can hold one: found by mapping every digit to "0" and
# searching for 19 of them (two C passes at memory speed; a regex is 30x slower here).
_DIGITS_TO_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))


_LONG_RUN = b"0" * 19


_INT_MIN, _INT_END = -(2**63), 2**64


# Deeper items are rejected when read: builders recurse into values and orjson writes at most 254 levels (a record
# wraps a source value in 2-3 levels of its own).
MAX_DEPTH = 200


@dataclass(frozen=True)
class Span:
    """`count` items of `path` starting at byte `start` (ending before `end`); `first` is the first item's number
    (1-based line for JSONL, 0-based index for a JSON array), so rejects can point at the exact place."""

    path: str
    kind: str  # "jsonl" | "json"
    start: int
    end: int
    first: int
    count: int


@dataclass(slots=True)  # not frozen: frozen dataclasses cost ~1 µs per instance, and there is one per input item
class Item:
    """One raw input item: `ref` says where it came from, `value` is the parsed JSON or None, `error` why not."""

    ref: str
    number: int
    value: Any = None
    error: str | None = None


def detect_kind(path: Path) -> str:
    """A JSON array starts with `[` (after whitespace); anything else is treated as JSONL."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    return "json" if head.startswith(b"[") else "jsonl"


def plan(path: Path, per_span: int, limit: int | None = None) -> list[Span]:
    """Split `path` into spans of `per_span` items (the last may be shorter), at most `limit` items in all."""
    if not path.is_file():
        raise NotFound(f"{path}: input file not found")
    if limit == 0:
        return []
    kind = detect_kind(path)
    spans = _plan_jsonl(path, per_span, limit) if kind == "jsonl" else _plan_json(path, per_span, limit)
    return spans


def _plan_jsonl(path: Path, per_span: int, limit: int | None) -> list[Span]:
    # Items are non-blank lines. The file is mapped, not read, and each block's newlines are found with numpy, so
    # planning runs near memory speed: Python only steps from span to span (and looks at lines that start with
    # whitespace).
    size = _size(path)
    if size == 0:
        return []
    spans: list[Span] = []
    count = total = first = start = 0  # items in the open span, items in all; the open span's first item
    line = 0  # lines before the block
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data = np.frombuffer(mm, np.uint8)
        try:
            begin = 0  # where the block's first line starts
            while begin < size:
                stop = min(begin + _PLAN_BLOCK, size)
                ends = newlines(data[begin:stop]) + begin  # each line's newline
                if stop == size and data[size - 1] != 10:
                    ends = np.append(ends, size)  # the last line, without a newline
                if not len(ends):  # a line longer than the block: look further
                    stop = mm.find(b"\n", stop)
                    ends = np.array([size if stop < 0 else stop])
                starts = np.concatenate(([begin], ends[:-1] + 1))
                # A line is an item if its first byte is not whitespace; only the others (empty lines, indented
                # ones, a BOM) are looked at one by one.
                doubt = np.flatnonzero((starts == ends) | _WHITESPACE[data[np.minimum(starts, size - 1)]])
                if begin == 0 and mm[:3] == _BOM and (not len(doubt) or doubt[0] != 0):
                    doubt = np.concatenate(([0], doubt))
                items = None  # every line is an item
                if len(doubt):
                    keep = np.ones(len(ends), dtype=bool)
                    for j in doubt.tolist():
                        raw = mm[int(starts[j]):int(ends[j])]
                        keep[j] = bool((raw[3:] if starts[j] == 0 and raw.startswith(_BOM) else raw).strip())
                    items = np.flatnonzero(keep)
                k, n = 0, len(ends) if items is None else len(items)
                while k < n:  # one step per span boundary, not per line
                    if count == 0:
                        j = k if items is None else int(items[k])
                        first, start = line + 1 + j, int(starts[j])
                    take = min(per_span - count, n - k, n if limit is None else limit - total)
                    count, total, k = count + take, total + take, k + take
                    if count == per_span or total == limit:
                        j = k - 1 if items is None else int(items[k - 1])
                        spans.append(Span(str(path), "jsonl", start, min(int(ends[j]) + 1, size), first, count))
                        count = 0
                        if total == limit:
                            return spans
                line += len(ends)
                begin = int(ends[-1]) + 1
        finally:
            del data  # the map closes only once no array views it
    if count:
        spans.append(Span(str(path), "jsonl", start, size, first, count))
    return spans


def _size(path: Path) -> int:
    return path.stat().st_size


def _plan_json(path: Path, per_span: int, limit: int | None) -> list[Span]:
    # Decoded as latin-1 so that character offsets are byte offsets; JSON's structural characters are ASCII, so
    # the structure parses correctly even though non-ASCII strings come out garbled (they are thrown away here).
    decoder = json.JSONDecoder()
    spans: list[Span] = []
    with open(path, "rb") as f:
        buf, base, eof = "", 0, False

        def fill(i: int) -> int:
            nonlocal buf, base, eof
            more = f.read(_BLOCK).decode("latin-1")
            eof = not more
            buf, base = buf[i:] + more, base + i
            return 0

        i = _skip_ws(buf, fill(0))
        if buf.startswith("\xef\xbb\xbf", i):
            i = _skip_ws(buf, i + 3)
        if i >= len(buf) or buf[i] != "[":
            raise InputError(f"{path}: expected a JSON array starting with '['")
        i += 1
        index = count = 0
        span_start = 0
        while True:
            i = _skip_ws(buf, i)
            if i >= len(buf):
                if eof:
                    raise InputError(f"{path}: JSON array is not terminated (after item {index - 1})")
                i = fill(i)
                continue
            if buf[i] == "]":
                closing = base + i
                break
            if buf[i] == ",":
                i += 1
                continue
            try:
                _, end = decoder.raw_decode(buf, i)
            except json.JSONDecodeError as e:
                if eof:
                    raise InputError(
                        f"{path}: invalid JSON array at item {index} (byte {base + e.pos}): {e.msg}"
                    ) from None
                i = fill(i)
                continue
            except RecursionError:  # nested too deep to decode: find its end; reading it yields a reject
                found = _value_end(buf, i)
                if found is None:
                    if eof:
                        raise InputError(f"{path}: JSON array is not terminated (in item {index})") from None
                    i = fill(i)
                    continue
                end = found
            if end >= len(buf) and not eof:  # a scalar cut by the block boundary would parse short
                i = fill(i)
                continue
            if count == 0:
                span_start = base + i
            count += 1
            index += 1
            i = end
            if count == per_span or index == limit:
                spans.append(Span(str(path), "json", span_start, base + end, index - count, count))
                count = 0
                if index == limit:
                    return spans
        i = _skip_ws(buf, i + 1)
        while i >= len(buf) and not eof:
            i = _skip_ws(buf, fill(i))
        if i < len(buf):
            raise InputError(f"{path}: unexpected data after the JSON array's closing ']' at byte {base + i} "
                             f"({buf[i:i + 40]!r}); a file holds one JSON array, or JSON Lines (one value per line)")
    if count:
        spans.append(Span(str(path), "json", span_start, base + closing, index - count, count))
    return spans


def _value_end(text: str, i: int) -> int | None:
    """End of the JSON value starting at `text[i]` by bracket matching (no decoding), or None if `text` ends first.

    For the values the decoder cannot take (nested too deep, NaN): their extent is still needed to read on.
    """
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                return None
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth < 0:
                return i  # the end of a scalar: the enclosing array closes here
        elif depth == 0 and (c == "," or c in _WS):
            return i
        i += 1
        if depth == 0 and c in '"]}':
            return i
    return None


def _skip_ws(buf: str, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


_BATCH = 1024  # items per batch: enough to make per-batch work vanish, small enough to stay in cache


_RUN = 32  # lines per typed decode inside a batch that holds a line the batch's decode did not take


@dataclass(slots=True)
class Batch:
    """Consecutive items of one span. Either `values`: the typed decodes of items `first`, `first + 1`, … (the
    common case: every line of the batch took the type); or `items`, one by one (errors and untyped items)."""

    name: str  # the input file's name, for refs
    first: int
    values: list[Any]
    items: list[Item] | None = None

    def refs(self) -> list[str]:
        """`Item.ref` of each of `values`."""
        name = self.name
        return [f"{name}:{k}" for k in range(self.first, self.first + len(self.values))]

    def __iter__(self) -> Iterator[Item]:
        if self.items is not None:
            return iter(self.items)
        return (Item(f"{self.name}:{k}", k, v) for k, v in enumerate(self.values, self.first))


def iter_span(span: Span, typed: msgspec.json.Decoder | None = None) -> Iterator[Item]:
    """Yield the span's items in order; an item that is not valid JSON (or not exactly representable: non-UTF-8
    bytes, NaN, an integer beyond 64 bits, nesting too deep) comes out as an `Item` with an error.

    With `typed`, a JSONL line is first decoded as that decoder's type (types checked while parsing, in C): the
    common case. A line the type does not take is read as plain JSON, with every check above, so `typed` never
    changes what is accepted; its type must hold no integer beyond 64 bits and be at most a few levels deep."""
    for batch in iter_batches(span, typed):
        yield from batch


def iter_batches(span: Span, typed: msgspec.json.Decoder | None = None) -> Iterator[Batch]:
    """`iter_span` in batches of up to `_BATCH` items: a run of JSONL lines that all take `typed` is decoded in one
    C call and comes as `values`."""
    with open(span.path, "rb") as f:
        f.seek(span.start)
        data = f.read(span.end - span.start)
    name = Path(span.path).name
    if span.kind != "jsonl":
        items = _array_items(span, data, name)
        while batch := list(islice(items, _BATCH)):
            yield Batch(name, batch[0].number, [], batch)
        return
    if span.start == 0 and data.startswith(_BOM):
        data = data[3:]
    if not data:
        return
    raw = np.frombuffer(data, np.uint8)
    ends = newlines(raw)  # each line's newline
    if data[-1] != 10:
        ends = np.append(ends, len(data))  # the last line, without one
    starts = np.concatenate(([0], ends[:-1] + 1))
    # A run of lines that each start with `{` and end with `}` (or `}\r`) holds one value per line when decoding the
    # run gives as many values as lines: no value can go on past a `}` at a line's end into a line starting with `{`.
    last = raw[ends - 1]
    closed = (last == 125) | ((last == 13) & (raw[np.maximum(ends - 2, 0)] == 125))
    simple = (starts < ends) & (raw[np.minimum(starts, len(data) - 1)] == 123) & closed
    view, plain = memoryview(data), _PlainLines(data, name)

    def typed_run(at: int, stop: int) -> list[Any] | None:
        """Lines [at, stop) decoded by `typed` in one call, or None if they are not all simple lines of its type."""
        if typed is None or not simple[at:stop].all():
            return None
        try:
            values = typed.decode_lines(view[starts[at]:ends[stop - 1]])
        except msgspec.DecodeError:  # (ValidationError included)
            return None
        return values if len(values) == stop - at else None

    def pieces(at: int, stop: int) -> Iterator[tuple[int, int, list[Any]]]:
        """(kind, first number, what) for lines [at, stop) in order: typed values (a run of them), or one line's
        `Item` (an error or an untyped value), or a blank line."""
        for run in range(at, stop, _RUN):
            end = min(run + _RUN, stop)
            values = typed_run(run, end)
            if values is not None:
                yield _TYPED, span.first + run, values
                continue
            for number, a, b in zip(range(span.first + run, span.first + end), starts[run:end].tolist(),
                                    ends[run:end].tolist()):
                item = plain.item(number, data[a:b], typed)
                if item is None:
                    yield _BLANK, number, []
                elif item.error is None and typed is not None and type(item.value) is typed.type:
                    yield _TYPED, number, [item.value]
                else:
                    yield _ITEM, number, [item]

    for at in range(0, len(ends), _BATCH):
        stop = min(at + _BATCH, len(ends))
        values = typed_run(at, stop)
        if values is not None:
            yield Batch(name, span.first + at, values)
            continue
        # Some line of the batch is not a simple typed line: runs of `_RUN` lines are decoded again, then the lines of
        # a run that fails one by one, so that a bad line costs only itself. Typed values of consecutive lines come
        # as one batch, the other items in a row as another.
        for kind, group in groupby(pieces(at, stop), itemgetter(0)):
            if kind != _BLANK:
                parts = list(group)
                joined = list(chain.from_iterable(what for _, _, what in parts))
                yield Batch(name, parts[0][1], joined) if kind == _TYPED else Batch(name, parts[0][1], [], joined)


_TYPED, _ITEM, _BLANK = range(3)


class _PlainLines:
    """JSONL lines one at a time: typed if they take the type, else plain JSON with every check."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name = data, name
        self.long_digits: bool | None = None  # whether the span holds a run of 19+ digits: found when first needed

    def item(self, number: int, raw: bytes, typed: msgspec.json.Decoder | None) -> Item | None:
        """The item on line `number`, or None for a blank line."""
        if not raw or raw.isspace():
            return None
        ref = f"{self.name}:{number}"
        if typed is not None:
            try:
                return Item(ref, number, typed.decode(raw))
            except msgspec.DecodeError:  # (ValidationError included): read as plain JSON below
                pass
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return Item(ref, number, error=f"invalid JSON: {e}")
        if self.long_digits is None:
            self.long_digits = _long_digits(self.data)
        long_digits = self.long_digits and _long_digits(raw)
        if long_digits or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
            error = (_wide_int_line(raw) if long_digits else None) or _too_deep(value)
            if error is not None:
                return Item(ref, number, error=error)
        return Item(ref, number, value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (JSON has no NaN or Infinity; write null or a string)")


_STRICT = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(text: str | bytes) -> Any:
    """`json.loads` that refuses NaN/Infinity (a `ValueError`), which would otherwise be written out as null."""
    return _STRICT.decode(text.decode("utf-8") if isinstance(text, bytes) else text)


def _array_items(span: Span, data: bytes, name: str) -> Iterator[Item]:
    try:
        text, exact = data.decode("utf-8"), True
    except UnicodeDecodeError:  # find the bad items: walk the structure in latin-1 (offsets = bytes), as `plan`
        text, exact = data.decode("latin-1"), False
    long_digits = _long_digits(data)
    i = 0
    for number in range(span.first, span.first + span.count):
        ref = f"{name}[{number}]"
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
        start, error, value = i, None, None
        try:
            value, i = _STRICT.raw_decode(text, i)
        except (ValueError, RecursionError) as e:
            i = _value_end(text, start) or len(text)
            error = ("nested too deeply to read" if isinstance(e, RecursionError) else
                     str(e) if not isinstance(e, json.JSONDecodeError) else f"invalid JSON: {e}")
        if error is None and not exact:
            try:
                value = _STRICT.decode(data[start:i].decode("utf-8"))
            except UnicodeDecodeError as e:
                error = f"not valid UTF-8 (byte {span.start + start + e.start} of the file)"
        if error is None and long_digits:
            error = _wide_int(value)
        if error is None and text.count("[", start, i) + text.count("{", start, i) > MAX_DEPTH:
            error = _too_deep(value)
        yield Item(ref, number, value) if error is None else Item(ref, number, error=error)


def _long_digits(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_DIGITS_TO_ZERO)


def _too_deep(value: Any) -> str | None:
    """Why `value` is too deep to keep (more than `MAX_DEPTH` nested arrays/objects), or None."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep (arrays/objects); such an item is not kept"
        if type(v) is dict:
            stack.extend((x, depth + 1) for x in v.values() if type(x) in (dict, list))
        elif type(v) is list:
            stack.extend((x, depth + 1) for x in v if type(x) in (dict, list))
    return None


def _wide_int_line(raw: bytes) -> str | None:
    try:
        return _wide_int(json.loads(raw))  # exact integers, unlike orjson
    except RecursionError:
        return "nested too deeply to read"


def _wide_int(value: Any) -> str | None:
    """Why `value` cannot be kept exactly (an integer outside [-2**63, 2**64)), or None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is int and not _INT_MIN <= v < _INT_END:
            return (f"integer {v} is outside the 64-bit range that JSON tools keep exactly; write it as a string "
                    "(e.g. an id)")
        if type(v) is dict:
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return None


def iter_file(path: Path, limit: int | None = None) -> Iterator[Item]:
    """Every item of a JSONL file or JSON array, streamed."""
    for span in plan(path, 1 << 62, limit):
        yield from iter_span(span)
