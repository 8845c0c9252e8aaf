"""The contract's rules are stated once (`mmdata.core.rules.Rules`) and read by both ways of checking records: one at a
time (`Record.validate`, naming what is wrong) and a whole batch at once (the writer's `add_many` and the batch
verdicts behind it). For every rule: a record that breaks it is rejected by both paths with the same message, and
changing the rule in the table changes what both paths accept. The batch verdicts equal the per-record ones for the
contract and for changed tables."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mmdata.build import writer
from mmdata.build.writer import ShardConfig, ShardWriter
from mmdata.core import rules
from mmdata.core.rules import RULES, Rules
from mmdata.core.schema import RECORD_DECODER, Media, Record, RecordError, Reject, Turn
from mmdata.testing.images import png_bytes, random_image

PNG = png_bytes(random_image(4, 3))


def _rec(turns: list[tuple[Any, Any]], media: list[Media] | None = None, rid: Any = "bad", source: Any = "s",
         task: Any = "text") -> Record:
    return Record(rid, source, task, [Turn(r, v) for r, v in turns], media or [], {"ref": "bad:1"})


def _image(**kw: Any) -> Media:
    return Media(**{"path": "a/1.png", "data": PNG, **kw})


def _fine(i: int) -> Record:
    return Record(f"ok{i}", "s", "text", [Turn("human", f"q {i}"), Turn("gpt", "a")], [], {"ref": f"in:{i}"})


QA = [("human", "q"), ("gpt", "a")]


# (rule of the table, a record breaking it, the message after "record <id>: ")
BROKEN = [
    ("names", _rec(QA, rid=""), "field 'id' must be a non-empty string"),
    ("names", _rec(QA, source=""), "field 'source' must be a non-empty string, got ''"),
    ("names", _rec(QA, task=5), "field 'task' must be a non-empty string, got 5"),
    ("order", _rec([]), "field 'conversations' is empty"),
    ("order", _rec([("gpt", "a"), ("human", "q")]),
     "conversations[0].from is 'gpt', expected 'human' (turns alternate human/gpt after an optional system turn)"),
    ("order", _rec([("human", "q"), ("human", "q")]),
     "conversations[1].from is 'human', expected 'gpt' (turns alternate human/gpt after an optional system turn)"),
    ("roles", _rec([("human", "q"), ("bot", "a")]),
     "conversations[1].from is 'bot'; expected one of ('system', 'human', 'gpt')"),
    ("opening", _rec([*QA, ("system", "s")]), "conversations[2] is a system turn; only the first turn may be one"),
    ("opening", _rec([("system", "s")]), "field 'conversations' has no human turn"),
    ("text", _rec([("human", "q"), ("gpt", " \n\t")]), "conversations[1].value is empty"),
    ("text", _rec([("human", "q"), ("gpt", "")]), "conversations[1].value is empty"),
    ("text", _rec([("human", 5), ("gpt", "a")]), "conversations[0].value is empty"),
    ("placeholder", _rec([("human", "<image> q"), ("gpt", "a")]),
     "1 <image> placeholder(s) in conversations but 0 media"),
    ("placeholder", _rec(QA, [_image()]), "0 <image> placeholder(s) in conversations but 1 media"),
    ("placeholder", _rec([("system", "<image>"), *QA], [_image()]),
     "conversations[0] (system) contains <image>; media belong in human/gpt turns"),
    ("media_kinds", _rec([("human", "<image>"), ("gpt", "a")], [_image(kind="video")]),
     "media[0].kind is 'video'; expected one of ('image', 'frame')"),
    ("time", _rec([("human", "<image>"), ("gpt", "a")], [_image(t=-0.5)]),
     "media[0].t must be a finite number of seconds >= 0, got -0.5"),
    ("time", _rec([("human", "<image>"), ("gpt", "a")], [_image(t=True)]),
     "media[0].t must be a finite number of seconds >= 0, got True"),
    ("path", _rec([("human", "<image>"), ("gpt", "a")], [_image(path="a/../../x.png")]),
     "media[0].path 'a/../../x.png' escapes the media root ('..' is not allowed)"),
    ("path", _rec([("human", "<image>"), ("gpt", "a")], [_image(path="C:x.png")]),
     "media[0].path 'C:x.png' is absolute; media paths are relative to the media root"),
    ("path", _rec([("human", "<image>"), ("gpt", "a")], [_image(path="")]), "media[0].path must be a non-empty string"),
]


def test_every_rule_of_the_table_is_broken_above() -> None:
    fields = {f.name for f in dataclasses.fields(Rules) if f.init}
    assert {rule for rule, _, _ in BROKEN} | {"roles"} == fields | {"roles"}


def _validate(record: Record) -> str | None:
    try:
        record.validate()
    except RecordError as e:
        return str(e)
    return None


def _written(tmp_path: Path, items: list[Record | Reject], batched: bool) -> tuple[list[dict[str, str]], bytes]:
    out = tmp_path / ("batched" if batched else "alone")
    (out / "shards").mkdir(parents=True)
    with ShardWriter(ShardConfig(out, ("jsonl",), None, False), 0) as w:
        if batched:
            w.add_many(items)
        else:
            for item in items:
                w.add(item)
    return w.result.rejects, (out / "shards" / "000000.jsonl").read_bytes()


def _batch_rejects(tmp_path: Path, record: Record) -> list[dict[str, str]]:
    """The writer's batch path on `record` among text records valid by the contract (which it writes in its fast
    pass): its rejects for `record`. The record-by-record path must write the same."""
    items: list[Record | Reject] = [*map(_fine, range(40)), record, *map(_fine, range(40, 80))]
    batched = _written(tmp_path, items, batched=True)
    assert batched == _written(tmp_path, items, batched=False)
    return [r for r in batched[0] if r["ref"] == "bad:1"]


@pytest.mark.parametrize(("rule", "record", "message"), BROKEN, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BROKEN)])
def test_a_record_breaking_a_rule_is_rejected_by_both_paths_with_one_message(
        tmp_path: Path, rule: str, record: Record, message: str) -> None:
    expected = f"record {record.id!r}: {message}"
    assert _validate(record) == expected
    strings = all(type(t.value) is str for t in record.conversations)  # else the batch is checked one by one
    assert RULES.plain_mask([_fine(0), record, _fine(1)]) == [strings, False, strings]
    assert _batch_rejects(tmp_path, record) == [{"ref": "bad:1", "reason": expected}]


# (a change of one rule of the table, a record whose verdict it flips)
CHANGES: list[tuple[dict[str, Any], Record]] = [
    ({"names": ("id", "source")}, _rec(QA, task="")),
    ({"opening": "developer"}, _rec([("developer", "Be brief."), *QA])),
    ({"opening": "developer"}, _rec([("system", "Be brief."), *QA])),
    ({"order": ("gpt", "human")}, _rec([("gpt", "a"), ("human", "q")])),
    ({"order": ("gpt", "human")}, _rec(QA)),
    ({"order": ("human", "gpt", "tool")}, _rec([*QA, ("tool", "t")])),
    ({"text": bool}, _rec([("human", "q"), ("gpt", " ")])),
    ({"text": str.isalpha}, _rec([("human", "q?"), ("gpt", "a")])),
    ({"placeholder": "<img>"}, _rec([("human", "<image> q"), ("gpt", "a")])),
    ({"placeholder": "<img>"}, _rec([("human", "<img> q"), ("gpt", "a")])),
    ({"media_kinds": ("image", "frame", "video")}, _rec([("human", "<image>"), ("gpt", "a")], [_image(kind="video")])),
    ({"media_kinds": ("frame",)}, _rec([("human", "<image>"), ("gpt", "a")], [_image()])),
    ({"time": lambda t: None}, _rec([("human", "<image>"), ("gpt", "a")], [_image(t=-1)])),
    ({"path": lambda p: None if p.endswith(".png") else "must end in .png"},
     _rec([("human", "<image>"), ("gpt", "a")], [_image(path="/abs.png")])),
    ({"path": lambda p: None if p.endswith(".jpg") else "must end in .jpg"},
     _rec([("human", "<image>"), ("gpt", "a")], [_image()])),
]


@pytest.mark.parametrize(("change", "record"), CHANGES, ids=[",".join(c) + f"-{i}" for i, (c, _) in enumerate(CHANGES)])
def test_changing_one_rule_in_the_table_changes_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          change: dict[str, Any], record: Record) -> None:
    verdicts = []
    for table in (RULES, dataclasses.replace(RULES, **change)):
        monkeypatch.setattr(rules, "RULES", table)
        message = _validate(record)
        rejects = _batch_rejects(tmp_path / str(len(verdicts)), record)
        assert rejects == ([] if message is None else [{"ref": "bad:1", "reason": message}])
        verdicts.append(message)
    assert (verdicts[0] is None) != (verdicts[1] is None), verdicts  # the change flipped the verdict


def test_the_batch_fast_path_reads_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a changed order, the usual records of the new order are proven valid by the whole-batch passes (not
    sent one by one), and those of the old order are not."""
    monkeypatch.setattr(rules, "RULES", dataclasses.replace(RULES, order=("gpt", "human")))
    flipped = [_rec([("gpt", "a"), ("human", "q")] * k) for k in (1, 2, 3)]
    assert rules.RULES.whole_exchanges(list(map(rules._TURNS_OF, flipped)))
    assert rules.RULES.plain_mask([*flipped, _fine(0)]) == [True, True, True, False]
    assert not rules.RULES.whole_exchanges([_fine(0).conversations])


# ---------------------------------------------------------------- the batch verdicts equal the per-record ones
TABLES = [RULES, Rules(opening="sys", order=("user", "model", "tool"), text=bool, placeholder="[img]",
                       names=("id", "task"))]


def _random_record(rng: random.Random, n: int, table: Rules) -> Record:
    roles = [*table.roles, "system", "human", "gpt", "Human", 3, None]
    mark = table.placeholder
    values = ["a", " b ", mark, mark[:-1], f"x{mark}y{mark}", "<image>", "", " ", "\x1c", "\u2003", "\n\t"]
    if rng.random() < 0.01:  # a value that is not a string: its whole batch is checked one record at a time
        values = [5, None]
    cycle = len(table.roles)
    if rng.random() < 0.5:  # well-formed turns, as most records are
        k = rng.randint(0, 1)
        turns = [Turn(table.roles[0], rng.choice(values[:5]))] * k + [
            Turn(table.order[i % len(table.order)], rng.choice(values[:5])) for i in range(rng.randint(1, 2 * cycle))]
    else:
        turns = [Turn(rng.choice(roles[:cycle] if rng.random() < 0.8 else roles),
                      rng.choice(values[:5] if rng.random() < 0.7 else values)) for _ in range(rng.randint(0, 6))]
    media = [Media(f"{n}.jpg")] * rng.choice((0, 0, 0, 1, 2))
    pick = rng.random()
    return Record(id=f"r{n}" if pick > 0.05 else rng.choice(["", 5]), source="s" if pick < 0.95 else "",
                  task="t" if rng.random() > 0.03 else "", conversations=turns, media=media)


def _checked(table: Rules, record: Record) -> bool:
    try:
        table.check(record)
    except RecordError:
        return False
    return True


def _walked(table: Rules, record: Record) -> int | None:
    turns = record.conversations
    if not turns:
        return None
    try:
        return table.walk_turns(record, 1 if turns[0].role == table.opening else 0)
    except RecordError:
        return None


@pytest.mark.parametrize("table", TABLES, ids=["contract", "changed"])
def test_the_batch_verdicts_equal_the_per_record_check(table: Rules) -> None:
    rng = random.Random(5)
    proven = walked = exchanges = 0
    for _ in range(2000):
        size = rng.choice((rng.randint(1, 5), rng.randint(33, 70)))
        if rng.random() < 0.3:  # the usual batch: whole exchanges, now and then one record that is not
            batch = [Record(f"r{i}", "s", "t", [Turn(role, rng.choice(("a", " b", "c\n"))) for role in
                                                 table.order * rng.randint(1, 3)]) for i in range(size)]
            if rng.random() < 0.5:
                batch[rng.randrange(size)] = _random_record(rng, size, table)
        else:
            batch = [_random_record(rng, i, table) for i in range(size)]
        strings = all(type(t.value) is str for r in batch for t in r.conversations)
        verdicts = table.turn_verdicts(batch)
        if verdicts is None:  # only a batch holding a value that is not a string is sent one by one
            assert not strings
        else:
            assert verdicts[0] == [table.placeholders_if_valid(r.conversations) for r in batch]
            assert verdicts[0] == [_walked(table, r) for r in batch]
            assert verdicts[1] == [bool(r.conversations) and r.conversations[0].role == table.opening for r in batch]
            walked += verdicts[0].count(None)
        mask = table.plain_mask(batch)
        for record, plain in zip(batch, mask):
            valid = _checked(table, record)
            # proven valid => valid; and every valid media-free record without an opening turn is proven so
            assert plain == (strings and valid and not record.media and record.conversations[0].role != table.opening)
            proven += plain
        cycle = len(table.order)
        assert table.whole_exchanges([r.conversations for r in batch]) == all(
            r.conversations and [t.role for t in r.conversations] == list(table.order) * (len(r.conversations) // cycle)
            for r in batch)
        exchanges += table.whole_exchanges([r.conversations for r in batch])
    assert proven > 10_000 and walked > 5000 and exchanges > 200


def test_a_changed_table_takes_the_usual_batch_through_the_fast_pass() -> None:
    table = TABLES[1]
    batch = [Record(f"r{i}", "", "t", [Turn(role, f"{role} {i}") for role in table.order * 2]) for i in range(50)]
    assert table.plain_mask(batch) == [True] * 50  # "source" is not among its names
    assert table.whole_exchanges([r.conversations for r in batch])
    batch[7].conversations[4].value = "[img]"
    assert table.turn_verdicts(batch) == ([0] * 7 + [1] + [0] * 42, [False] * 50)


# ---------------------------------------------------------------- frame times: what validate passes reads back
@pytest.mark.parametrize("t", [True, False])
def test_a_bool_frame_time_is_rejected_as_it_would_not_read_back(t: bool) -> None:
    record = _rec([("human", "<image>"), ("gpt", "a")], [Media("v/0.jpg", kind="frame", t=t)], rid="clip")
    assert _validate(record) == f"record 'clip': media[0].t must be a finite number of seconds >= 0, got {t}"
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int \| float \| null`, got `bool`"):
        RECORD_DECODER.decode(writer.encode(record))


@pytest.mark.parametrize("t", [0, 0.0, 7, 2.5, 5e-324, 1e308, None])
def test_every_frame_time_validate_passes_reads_back(t: float | None) -> None:
    record = _rec([("human", "<image>"), ("gpt", "a")], [Media("v/0.jpg", kind="frame", t=t)], rid="clip")
    assert _validate(record) is None
    back = RECORD_DECODER.decode(writer.encode(record))
    assert back.media[0].t == t and type(back.media[0].t) is type(t)


# ---------------------------------------------------------------- the writer's plain-meta rule, one meta and a batch
def test_the_batch_plain_meta_check_equals_the_per_meta_check() -> None:
    rng = random.Random(2)
    values = ["s", None, True, False, 0, -(2**63), 2**64 - 1, -(2**63) - 1, 2**64, 1.5, [1], {"a": 1}, b"x"]

    class Sub(dict):  # type: ignore[type-arg]
        pass

    agreed = [0, 0]
    for _ in range(5000):
        metas = []
        for _ in range(rng.randint(1, 5)):
            meta = {(k if rng.random() < 0.97 else 3): rng.choice(values[:5] if rng.random() < 0.8 else values)
                    for k in rng.sample("abcdef", rng.randint(0, 3))}
            metas.append(meta if rng.random() < 0.97 else Sub(meta))
        plain = writer._plain_metas(metas)
        assert plain == all(map(writer._plain, metas)), metas
        agreed[plain] += 1
    assert min(agreed) > 1000
    for size in (1, 31, 32, 33, 100):  # in runs: each meta's own verdict
        metas = [{"a": rng.choice(values[:5] if rng.random() < 0.98 else values)} for _ in range(size)]
        assert writer._plain_each(metas) == list(map(writer._plain, metas))
