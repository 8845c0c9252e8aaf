"""Split large JSONL files and JSON arrays into independent spans, and stream the items of one span.

A span is a byte range holding a fixed number of items, so the same input always splits the same way whatever the
number of workers: that is what makes builds parallel, resumable and byte-identical. Nothing here ever holds a whole
file in memory: planning reads in blocks, iteration reads one span.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mmdata.errors import InputError, NotFound

_BLOCK = 1 << 24  # 16 MiB
_WS = " \t\r\n"


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
    # Items are non-blank lines; splitting block by block runs near disk speed.
    spans: list[Span] = []
    start = first = count = total = line = 0
    offset = 0  # byte offset of the next unread line
    with open(path, "rb") as f:
        carry = b""
        while True:
            block = f.read(_BLOCK)
            lines = (carry + block).split(b"\n")
            carry = lines.pop() if block else b""
            for raw in lines:
                line += 1
                line_start = offset
                offset += len(raw) + 1
                if not raw.strip():
                    continue
                if count == 0:
                    first, start = line, line_start
                count += 1
                total += 1
                if count == per_span or total == limit:
                    spans.append(Span(str(path), "jsonl", start, min(offset, _size(path)), first, count))
                    count = 0
                    if total == limit:
                        return spans
            if not block:
                break
    if count:
        spans.append(Span(str(path), "jsonl", start, _size(path), first, count))
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
    if count:
        spans.append(Span(str(path), "json", span_start, base + i, index - count, count))
    return spans


def _skip_ws(buf: str, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


def iter_span(span: Span) -> Iterator[Item]:
    """Yield the span's items in order; a line that is not valid JSON comes out as an `Item` with an error."""
    with open(span.path, "rb") as f:
        f.seek(span.start)
        data = f.read(span.end - span.start)
    name = Path(span.path).name
    if span.kind == "jsonl":
        loads = orjson.loads
        for number, raw in enumerate(data.split(b"\n"), span.first):
            if not raw or raw.isspace():
                continue
            try:
                yield Item(f"{name}:{number}", number, loads(raw))
            except orjson.JSONDecodeError as e:
                yield Item(f"{name}:{number}", number, error=f"invalid JSON: {e}")
        return
    text = data.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    i, number = 0, span.first
    for _ in range(span.count):
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
        value, i = decoder.raw_decode(text, i)
        yield Item(f"{name}[{number}]", number, value)
        number += 1


def iter_file(path: Path, limit: int | None = None) -> Iterator[Item]:
    """Every item of a JSONL file or JSON array, streamed."""
    for span in plan(path, 1 << 62, limit):
        yield from iter_span(span)

