from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import mmdata.build.sources as sources
from mmdata.build.sources import iter_file, iter_span, plan


@pytest.fixture
def items() -> list[dict[str, object]]:
    rng = random.Random(0)
    return [{"id": i, "v": "é✓" * rng.randint(0, 4) + "x" * rng.randint(0, 40)} for i in range(257)]


@pytest.mark.parametrize("layout", ["jsonl", "jsonl_blank_lines", "json_indent", "json_compact"])
@pytest.mark.parametrize("per_span", [1, 10, 1000])
@pytest.mark.parametrize("limit", [None, 0, 33, 500])
def test_spans_cover_every_item_once_in_order(tmp_path: Path, items: list[dict[str, object]], layout: str,
                                               per_span: int, limit: int | None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_BLOCK", 97)  # tiny blocks exercise every boundary case
    path = tmp_path / ("a.jsonl" if layout.startswith("jsonl") else "a.json")
    if layout == "jsonl":
        path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in items), encoding="utf-8")
    elif layout == "jsonl_blank_lines":
        path.write_text("\n\n".join(json.dumps(x, ensure_ascii=False) for x in items) + "\n\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(items, ensure_ascii=False, indent=2 if layout == "json_indent" else None),
                        encoding="utf-8")
    spans = plan(path, per_span, limit)
    got = [item.value for span in spans for item in iter_span(span)]
    assert got == (items[:limit] if limit is not None else items)
    assert all(0 < s.count <= per_span for s in spans)


def test_refs_point_at_lines_and_indices(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n')
    got = [(i.ref, i.value, i.error is not None) for i in iter_file(p)]
    assert got == [("x.jsonl:1", {"a": 1}, False), ("x.jsonl:3", None, True), ("x.jsonl:4", {"a": 3}, False)]
    q = tmp_path / "y.json"
    q.write_text('[{"a": 1}, {"a": 2}]')
    assert [i.ref for i in iter_file(q)] == ["y.json[0]", "y.json[1]"]


def test_broken_json_array_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('[{"a": 1}, {"a": ]')
    with pytest.raises(ValueError, match=r"bad.json: invalid JSON array at item 1"):
        plan(p, 10)
    p.write_text('[{"a": 1}, {"a": 2}')
    with pytest.raises(ValueError, match="not terminated"):
        plan(p, 10)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl: input file not found"):
        plan(tmp_path / "nope.jsonl", 10)


def _reference_plan(data: bytes, path: str, per_span: int, limit: int | None) -> list[tuple[int, int, int, int]]:
    """JSONL spans as (start, end, first, count), line by line in Python: what the vectorised planner must give."""
    spans, offset, count, total, first, start = [], 0, 0, 0, 0, 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        line_start, offset = offset, offset + len(raw) + 1
        if not (raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw).strip():
            continue
        if count == 0:
            first, start = number, line_start
        count, total = count + 1, total + 1
        if count == per_span or total == limit:
            spans.append((start, min(offset, len(data)), first, count))
            count = 0
            if total == limit:
                return spans
    return spans + [(start, len(data), first, count)] if count else spans


def test_jsonl_planning_matches_a_line_by_line_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(0)
    pieces = [b'{"a":1}', b"", b"  ", b"\t\r", b"\x0b", b'{"b":"x y"}', b"x" * 50, b"\r", b' {"c":3} ', b"\xef\xbb\xbf"]
    for trial in range(300):
        data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) + rng.choice((b"", b"\n"))
        data = rng.choice((b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n")) + data
        path = tmp_path / f"{trial}.jsonl"
        path.write_bytes(data)
        for per_span, limit in ((1, None), (3, None), (7, 5), (100, 13), (2, 1)):
            monkeypatch.setattr(sources, "_PLAN_BLOCK", rng.choice((1, 2, 5, 16, 1 << 22)))  # lines across blocks
            got = [(s.start, s.end, s.first, s.count) for s in sources._plan_jsonl(path, per_span, limit)]
            assert got == _reference_plan(data, str(path), per_span, limit), (data, per_span, limit)


def test_the_typed_llava_decoder_accepts_only_what_plain_json_reads_the_same() -> None:
    """Mutated lines: whatever `LLAVA_DECODER` takes, orjson reads too, as the same values and no other key (the
    typed path must never let through a line the plain path would reject, nor read it differently)."""
    import msgspec
    import orjson

    from mmdata.core.schema import LLAVA_DECODER

    rng = random.Random(1)
    lines = [b'{"id":"a1","image":"x/y.jpg","conversations":[{"from":"human","value":"<image>\\nq \\u00e9 '
             b'\\ud83d\\ude00"},{"from":"gpt","value":"a"}]}',
             b'{"id":12,"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]}']
    alphabet = b'{}[]",:\\u0123456789abcdefnrtlse -+.E\x00\x1f\x7f\xc3\xa9\xff\xed\xa0\x80 \t\r'
    accepted = 0
    for _ in range(30_000):
        b = bytearray(rng.choice(lines))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                del b[pos]
            elif op < 0.8:
                b.insert(pos, rng.choice(alphabet))
            else:
                b[pos] = rng.choice(alphabet)
        try:
            typed = LLAVA_DECODER.decode(bytes(b))
        except msgspec.DecodeError:
            continue
        accepted += 1
        plain = orjson.loads(bytes(b))
        assert set(plain) <= {"id", "image", "video", "conversations"}, b
        assert (plain.get("id"), plain.get("image"), plain.get("video")) == (typed.id, typed.image, typed.video), b
        assert [(t["from"], t["value"]) for t in plain["conversations"]] == \
               [(t.role, t.value) for t in typed.conversations], b
    assert accepted > 500


def test_typed_batches_read_every_line_as_the_line_by_line_path_does(tmp_path: Path) -> None:
    """A batch of lines is decoded in one call when every line starts with `{` and ends with `}`: lines holding two
    objects, an object spread over lines that each look whole, blank and CRLF lines must still give each line's
    own item (same refs, values and errors) as reading line by line."""
    import msgspec

    from mmdata.core.schema import LLAVA_DECODER

    def rec(i: int) -> str:
        return f'{{"id":{i},"conversations":[{{"from":"human","value":"q{i}"}},{{"from":"gpt","value":"a"}}]}}'

    rng = random.Random(2)
    odd = ['{"id":1,"conversations":[{"from":"human","value":"a"}]} {"id":2,"conversations":[]}',  # two on a line
           '{"id":"x","conversations":[{"from":"human","value":"a"}', '{"from":"gpt","value":"b"}]}',  # one over two
           '{"conversations":[{"from":"human","value":"a"}],"image":5}', "", " ", rec(7) + "\r", "{}", "{"]
    for trial in range(200):
        lines = [rng.choice(odd) if rng.random() < 0.05 else rec(i) for i in range(rng.randint(1, 3000))]
        path = tmp_path / f"{trial}.jsonl"
        newline = "\r\n" if trial % 4 == 0 else "\n"  # files written on Windows too
        path.write_bytes((newline.join(lines) + rng.choice(("", newline))).encode())
        for span in plan(path, rng.choice((10, 1000, 5000))):
            typed = list(iter_span(span, LLAVA_DECODER))
            plain = list(iter_span(span))
            assert [(i.ref, i.error is None) for i in typed] == [(i.ref, i.error is None) for i in plain]
            for t, p in zip(typed, plain):
                if t.error is None:
                    value = msgspec.to_builtins(t.value) if not isinstance(t.value, dict) else t.value
                    assert value.get("conversations") == p.value.get("conversations"), t.ref
