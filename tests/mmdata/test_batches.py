"""Builds run in batches (typed decoding, whole-batch conversion, checks and encoding): whatever a batch holds, the
dataset must be the one built record by record, byte for byte."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from builders import cambrian
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.build.sources import Batch
from mmdata.build.writer import ShardWriter
from mmdata.core.schema import Record, Reject
from mmdata.testing.images import write_image


def _line(rng: random.Random, i: int) -> str:
    def pair(q: str = "Question?", a: str = "Answer.") -> list[dict[str, str]]:
        return [{"from": "human", "value": f"{q} {i}"}, {"from": "gpt", "value": f"{a} {i}"}]

    odd = [
        '{"id": 1, "conversations": [',  # invalid JSON
        json.dumps({"id": f"e{i}", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": " "}]}),
        json.dumps({"id": f"g{i}", "conversations": [{"from": "gpt", "value": "Hi"}, *pair()]}),  # leading gpt
        json.dumps({"id": f"u{i}", "conversations": [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "A"}]}),
        json.dumps({"id": f"s{i}", "conversations": [{"from": "system", "value": "Be brief."}, *pair()]}),
        json.dumps({"id": f"m{i}", "image": "a.jpg", "conversations": pair("<image>\nWhat is it?")}),
        json.dumps({"id": f"x{i}", "image": "missing.jpg", "conversations": pair()}),
        json.dumps({"id": i, "conversations": pair()}),  # int id
        json.dumps({"conversations": pair()}),  # no id
        json.dumps({"id": f"p{i}", "conversations": pair("Look: <image>")}),  # a placeholder without an image
        json.dumps({"id": f"t{i}", "conversations": [*pair(), {"from": "human", "value": "And?"}]}),  # trailing
        json.dumps({"id": f"k{i}", "conversations": pair(), "extra": {"n": 1.5}}),  # an unknown key
        "",
    ]
    if rng.random() < 0.03:
        return rng.choice(odd)
    return json.dumps({"id": f"r{i}", "conversations": pair() * rng.choice((1, 2))})


@pytest.mark.parametrize("fmt", ["jsonl", "both"])
def test_a_batched_build_equals_the_record_by_record_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           fmt: str) -> None:
    rng = random.Random(0)
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(_line(rng, i) for i in range(5000)) + "\n")
    write_image(tmp_path / "media" / "a.jpg")
    options = CambrianOptions(input=[src], media_root=tmp_path / "media")
    build("cambrian", options, BuildSettings(out=tmp_path / "batched", format=fmt, shard_size=1500))

    def one_by_one(batch: Batch, label: str) -> list[Record | Reject]:
        return [cambrian._convert(item.value, f"{label}:{item.number}", item.ref) for item in batch]

    monkeypatch.setattr(cambrian, "convert_batch", one_by_one)
    monkeypatch.setattr(ShardWriter, "add_many", lambda self, items: [self.add(x) for x in items])
    build("cambrian", options, BuildSettings(out=tmp_path / "alone", format=fmt, shard_size=1500))

    files = sorted(p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "batched") for p in (tmp_path / "batched").rglob("*")
                           if p.is_file())
    for name in files:
        a, b = (tmp_path / "alone" / name).read_bytes(), (tmp_path / "batched" / name).read_bytes()
        if name.name.endswith(".done.json"):  # the node (PID) that wrote it differs
            a, b = ({k: v for k, v in json.loads(x).items() if k != "node"} for x in (a, b))
        assert a == b, name
    counts = json.loads((tmp_path / "batched" / "dataset.json").read_text())["counts"]
    assert counts["rejected"] > 20 and counts["written"] > 4800


def test_records_msgspec_cannot_encode_keep_every_output_in_order(tmp_path: Path) -> None:
    """A record built in Python with a lone surrogate passes the rules but cannot be stored: in a batch it is
    rejected with orjson's reason, in its place among the other rejects."""
    from mmdata.build.writer import ShardConfig
    from mmdata.core.schema import Turn

    def rec(i: int, text: str = "fine") -> Record:
        return Record(f"r{i}", "mine", "text", [Turn("human", f"{text} {i}"), Turn("gpt", "ok")])

    items: list[Record | Reject] = [Reject("a:1", "first"), rec(1), rec(2, "bad \ud800"), Reject("a:4", "second"),
                                    rec(5), rec(6, "x\ud800"), rec(7)]
    outs = []
    for name, batched in (("alone", False), ("batched", True)):
        (tmp_path / name / "shards").mkdir(parents=True)
        with ShardWriter(ShardConfig(tmp_path / name, ("jsonl",), None, False), 0) as w:
            if batched:
                w.add_many(items)
            else:
                for item in items:
                    w.add(item)
        outs.append((w.result.rejects, (tmp_path / name / "shards" / "000000.jsonl").read_bytes()))
    assert outs[0] == outs[1]
    assert [r["ref"] for r in outs[0][0]] == ["a:1", "r2", "a:4", "r6"]
