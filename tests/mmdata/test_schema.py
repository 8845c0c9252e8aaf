from __future__ import annotations

import random

import pytest

from mmdata.core.rules import RULES
from mmdata.core.schema import IMAGE, Media, Record, RecordError, Turn, llava_image_paths


def rec(turns: list[tuple[str, str]], media: int = 0, **kw: object) -> Record:
    return Record(id="r1", source="s", task="vqa", conversations=[Turn(r, v) for r, v in turns],
                  media=[Media(path=f"a/{i}.jpg") for i in range(media)], **kw)  # type: ignore[arg-type]


def test_valid_record_with_system_turn_and_target() -> None:
    r = rec([("system", "Be brief."), ("human", "<image>\nWhat?"), ("gpt", "This: <image>")], media=2).validate()
    assert r.media_roles() == ["input", "target"]
    assert r.targets() == [r.media[1]] and r.inputs() == [r.media[0]]


@pytest.mark.parametrize(
    ("turns", "media", "message"),
    [
        ([("human", "<image> q"), ("gpt", "a")], 0, "1 <image> placeholder(s) in conversations but 0 media"),
        ([("human", "q"), ("gpt", "a")], 1, "0 <image> placeholder(s) in conversations but 1 media"),
        ([("gpt", "a"), ("human", "q")], 0, "conversations[0].from is 'gpt', expected 'human'"),
        ([("human", "q"), ("human", "q")], 0, "conversations[1].from is 'human', expected 'gpt'"),
        ([("human", "q"), ("system", "s")], 0, "only the first turn may be one"),
        ([("human", "q"), ("bot", "a")], 0, "conversations[1].from is 'bot'"),
        ([("human", "q"), ("gpt", " ")], 0, "conversations[1].value is empty"),
        ([("system", "s")], 0, "no human turn"),
        ([], 0, "'conversations' is empty"),
        ([("system", "<image>"), ("human", "q")], 1, "system) contains <image>"),
    ],
)
def test_invariants_name_the_field(turns: list[tuple[str, str]], media: int, message: str) -> None:
    with pytest.raises(RecordError, match="record 'r1'") as e:
        rec(turns, media).validate()
    assert message in str(e.value)


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.jpg", "a/../../x.jpg", "C:/x.jpg", "a\\b.jpg", ""])
def test_media_paths_never_escape_the_root(path: str) -> None:
    r = rec([("human", "<image>"), ("gpt", "a")], 1)
    r.media[0].path = path
    with pytest.raises(RecordError, match=r"media\[0\]\.path"):
        r.validate()


def test_frame_time_must_be_finite() -> None:
    r = rec([("human", "<image>"), ("gpt", "a")], 1)
    r.media[0] = Media(path="v/0.jpg", kind="frame", t=float("nan"))
    with pytest.raises(RecordError, match=r"media\[0\]\.t"):
        r.validate()


@pytest.mark.parametrize("value", [None, "", "None", "none", "nan", "NaN", float("nan"), "  "])
def test_no_image_spellings(value: object) -> None:
    assert llava_image_paths(value) == []


def test_llava_round_trip_is_lossless() -> None:
    for d in [
        {"id": 7, "image": "coco/1.jpg", "model": "x", "conversations": [
            {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]},
        {"id": "m", "image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image><image> q"}, {"from": "gpt", "value": "a"}]},
        {"id": "one-in-list", "image": ["a.jpg"], "conversations": [
            {"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]},
        {"id": "t", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"id": "v", "video": "k700/x.mp4", "conversations": [
            {"from": "human", "value": "<video>\nq"}, {"from": "gpt", "value": "a"}]},
    ]:
        r = Record.from_llava(d, source="cambrian", id=f"{d['id']}@f:1")
        assert r.to_llava() == d
        assert Record.from_dict(r.to_dict()) == r


def test_from_llava_rejects_unusable_conversations() -> None:
    with pytest.raises(RecordError, match="'conversations' must be a non-empty list"):
        Record.from_llava({"id": 1, "conversations": "hi"}, source="s")
    with pytest.raises(RecordError, match=r"conversations\[0\] needs 'from' and 'value'"):
        Record.from_llava({"id": 1, "conversations": [{"value": "x"}]}, source="s")
    with pytest.raises(RecordError, match="field 'image' must be a string"):
        Record.from_llava({"id": 1, "image": 5, "conversations": [{"from": "human", "value": "x"}]}, source="s")


def _random_record(rng: random.Random, n: int) -> Record:
    roles = ["system", "human", "gpt", "user", "Human", 3, None]
    values = ["", " ", "\x1c", "\u2003", "\n\t", "a", " b ", IMAGE, "<ima", "ge>", f"x{IMAGE}y{IMAGE}", 5, None, b"a"]
    turns = [Turn(rng.choice(roles[:3] if rng.random() < 0.8 else roles),
                  rng.choice(values[:1] + values[5:11] if rng.random() < 0.8 else values))
             for _ in range(rng.randint(1, 6))]
    media = [Media(f"{n}.jpg")] * rng.choice((0, 0, 0, 1, 2))
    ids = ["r", "", 5, "x y"]
    return Record(id=rng.choice(ids) if rng.random() < 0.1 else f"r{n}", source="s" if rng.random() < 0.95 else "",
                  task="t", conversations=turns, media=media)


def _walk(record: Record) -> int | None:
    """The turn-by-turn rules: the `<image>` count, or None if a turn breaks one."""
    try:
        return RULES.walk_turns(record, 1 if record.conversations and record.conversations[0].role == "system" else 0)
    except RecordError:
        return None


def test_the_whole_batch_turn_check_agrees_with_the_turn_by_turn_rules() -> None:
    """`validate` and the writer check turns with a few C-level operations over a whole batch and only walk them
    to say what is wrong: both must give the same verdict (and placeholder count) for every record."""
    rng = random.Random(0)
    agreed = 0
    for _ in range(20_000):
        record = _random_record(rng, 0)
        checked = RULES.turn_verdicts([record])
        expected = _walk(record)
        assert (None if checked is None else checked[0][0]) == expected, record.conversations
        agreed += expected is not None
    assert agreed > 1000  # both verdicts were exercised
    judged = 0
    for _ in range(4000):  # batches: a verdict per record
        batch = [_random_record(rng, i) for i in range(rng.choice((rng.randint(1, 6), rng.randint(30, 80))))]
        if rng.random() < 0.3:
            batch.append(Record("e", "s", "t", []))  # no turns at all
        checked = RULES.turn_verdicts(batch)
        if checked is None:  # only a batch holding a value that is not a string may be sent one by one
            assert any(type(t.value) is not str for r in batch for t in r.conversations), batch
            continue
        judged += 1
        assert checked[0] == [_walk(r) if r.conversations else None for r in batch], batch
        assert checked[1] == [bool(r.conversations) and r.conversations[0].role == "system" for r in batch]
    assert judged > 1000


def test_the_batch_check_of_media_free_records_judges_each_record() -> None:
    """`plain_mask` (the writer's fast path) says True exactly for the media-free records that validate and open
    with a human turn, whatever else the batch holds."""
    rng = random.Random(1)
    passed = 0
    for _ in range(5000):
        batch = [_random_record(rng, i) if rng.random() < 0.2 else
                 Record(f"r{i}", "s", "text", [Turn(("human", "gpt")[k % 2], rng.choice(("a", " b", "c\n")))
                                               for k in range(rng.choice((2, 4)))]) for i in range(rng.randint(1, 6))]
        mask = RULES.plain_mask(batch)
        if any(type(t.value) is not str for r in batch for t in r.conversations):
            assert not any(mask)
            continue
        for r, plain in zip(batch, mask):
            try:
                r.validate()
                valid = True
            except RecordError:
                valid = False
            assert plain == (valid and not r.media and r.conversations[0].role != "system"), r
            passed += plain
    assert passed > 2000
