"""JSON inputs are read as what they are or refused by file and byte; no value is changed on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdata.build.sources import MAX_DEPTH, iter_file, plan
from tests.reliability.conftest import run_build, turns, write_jsonl

TEXT = {"conversations": turns("Hi?", "Hello.")}


@pytest.mark.parametrize("content, where", [
    (b'[{"a": 1}]\n[{"b": 2}]\n', 11),  # two concatenated arrays
    (b'[{"a": 1}]\n{"b": 2}\n{"c": 3}\n', 11),  # an array followed by JSON Lines
    (b'[1, 2]\n{"b": 2}\n', 7),  # JSON Lines whose first line is an array
])
def test_data_after_the_closing_bracket_is_an_error_naming_file_and_byte(tmp_path: Path, content: bytes,
                                                                         where: int) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"in\.json: unexpected data after the JSON array's closing '\]' at byte "
                                         rf"{where}"):
        plan(path, 10)
    path.write_bytes(content[: content.index(b"]") + 1] + b"  \n\n")  # trailing whitespace is fine
    assert [it.value for it in iter_file(path)] in ([{"a": 1}], [1, 2])


def test_non_utf8_nan_and_wide_ints_are_rejects_not_changed_values(tmp_path: Path) -> None:
    items = [b'{"id": "ok", "v": "caf\xc3\xa9"}', b'{"id": "latin1", "v": "caf\xe9"}', b'{"id": "nan", "v": NaN}',
             b'{"id": "inf", "v": -Infinity}', b'{"id": 18446744073709551616}', b'{"id": 18446744073709551615}',
             b'{"id": -9223372036854775809}', b'{"id": "digits", "v": "123456789012345678901234"}']
    array, lines = tmp_path / "a.json", tmp_path / "l.jsonl"
    array.write_bytes(b"[\n" + b",\n".join(items) + b"\n]")
    lines.write_bytes(b"\n".join(items) + b"\n")
    for path in (array, lines):
        got = list(iter_file(path))
        assert [it.value for it in got if it.error is None] == [
            {"id": "ok", "v": "café"}, {"id": 18446744073709551615}, {"id": "digits", "v": "123456789012345678901234"}]
        errors = [it.error for it in got if it.error is not None]
        assert len(errors) == 5, errors
        if path == array:  # the JSONL path's own parser names the problem in its words
            assert "not valid UTF-8 (byte" in errors[0]
            assert "NaN is not valid JSON" in errors[1] and "-Infinity is not valid JSON" in errors[2]
        assert "integer 18446744073709551616 is outside the 64-bit range" in errors[3]
        assert "integer -9223372036854775809 is outside" in errors[4]
        assert not any(isinstance(it.value, float) for it in got)


def test_too_deep_items_are_rejects_in_a_build(tmp_path: Path) -> None:
    deep = {"id": "deep", "conversations": turns("Hi?", "Hello."), "x": json.loads("[" * 400 + "]" * 400)}
    deeper = "[" * 5000 + "]" * 5000  # past Python's recursion limit: found by bracket matching
    array = tmp_path / "a.json"
    array.write_text("[" + json.dumps({"id": "a", **TEXT}) + "," + json.dumps(deep) + "," + deeper + ","
                     + json.dumps({"id": "b", **TEXT}) + "]")
    lines = tmp_path / "l.jsonl"
    lines.write_text(json.dumps({"id": "a", **TEXT}) + "\n" + json.dumps(deep) + "\n"
                     + json.dumps({"id": "b", **TEXT, "y": json.loads("[" * (MAX_DEPTH - 5) + "]" * (MAX_DEPTH - 5))})
                     + "\n")
    ds, rejects = run_build("cambrian", tmp_path / "out", input=[array, lines])
    assert [r.meta["orig_id"] for r in ds] == ["a", "b", "a", "b"]
    assert set(rejects) == {"a.json[1]", "a.json[2]", "l.jsonl:2"}
    assert all("nested" in reason for reason in rejects.values())


def test_first_jsonl_record_after_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "first", **TEXT}).encode() + b"\n"
                     + json.dumps({"id": "second", **TEXT}).encode() + b"\n")
    ds, rejects = run_build("cambrian", tmp_path / "out", input=[path])
    assert rejects == {} and [r.meta["orig_id"] for r in ds] == ["first", "second"]
    only_bom = tmp_path / "only_bom.jsonl"
    only_bom.write_bytes(b"\xef\xbb\xbf\n" + json.dumps({"id": "x", **TEXT}).encode() + b"\n")
    assert [it.value["id"] for it in iter_file(only_bom)] == ["x"]


def test_wide_int_in_a_json_array_is_a_counted_reject(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    convs = json.dumps(turns("Hi?", "Yo."))
    path.write_text(f'[{{"id": 123456789012345678901234567890, "conversations": {convs}}}, '
                    f'{{"id": 7, "conversations": {convs}}}]')
    ds, rejects = run_build("cambrian", tmp_path / "out", input=[path])
    assert [r.meta["orig_id"] for r in ds] == [7]
    assert "outside the 64-bit range" in rejects["ids.json[0]"]
    write_jsonl(tmp_path / "ok.jsonl", [{"id": 2**64 - 1, **TEXT}])
    ds, _ = run_build("cambrian", tmp_path / "out2", input=[tmp_path / "ok.jsonl"])
    assert ds[0].meta["orig_id"] == 2**64 - 1 and ds[0].id.startswith("18446744073709551615@")
