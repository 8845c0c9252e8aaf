"""Pins `Record.validate` on media before a refactoring moves `mmdata.schema`: a frame time must be a finite number
of seconds >= 0 (0 itself is valid; inf, -inf, nan, negatives and non-numbers are not), a media kind is one of
`MEDIA_KINDS`, and each error message is exact: it names the record id and the field, with the media's index.
"""

from __future__ import annotations

import sys

import pytest

from mmdata.core.schema import MEDIA_KINDS, Media, Record, RecordError, Turn


def _record(second: Media, rid: str = "clip-7") -> Record:
    # Two media: the one under test is media[1], so a message with the wrong index cannot pass.
    return Record(id=rid, source="s", task="video_qa",
                  conversations=[Turn("human", "<image> then <image>"), Turn("gpt", "a")],
                  media=[Media(path="v/0.jpg", kind="frame", t=0.5), second])


def _error(record: Record) -> str:
    with pytest.raises(RecordError) as e:
        record.validate()
    return str(e.value)


def test_media_kinds_are_pinned() -> None:
    assert MEDIA_KINDS == ("image", "frame")


@pytest.mark.parametrize("t", [0, 0.0, 5e-324, 1, 2.5, sys.float_info.max, None])
def test_valid_frame_times(t: float | None) -> None:
    record = _record(Media(path="v/1.jpg", kind="frame", t=t))
    assert record.validate() is record


@pytest.mark.parametrize(("t", "shown"), [
    (float("inf"), "inf"),
    (float("-inf"), "-inf"),
    (float("nan"), "nan"),
    (-0.5, "-0.5"),
    (-1, "-1"),
    (-5e-324, "-5e-324"),
    ("3", "'3'"),
])
def test_invalid_frame_times_name_the_record_and_the_field(t: object, shown: str) -> None:
    record = _record(Media(path="v/1.jpg", kind="frame", t=t))  # type: ignore[arg-type]
    assert _error(record) == f"record 'clip-7': media[1].t must be a finite number of seconds >= 0, got {shown}"


def test_the_time_rule_holds_for_images_too() -> None:
    record = _record(Media(path="v/1.jpg", kind="image", t=float("inf")))
    assert _error(record) == "record 'clip-7': media[1].t must be a finite number of seconds >= 0, got inf"


@pytest.mark.parametrize("kind", ["image", "frame"])
def test_known_media_kinds_are_valid(kind: str) -> None:
    record = _record(Media(path="v/1.jpg", kind=kind))
    assert record.validate() is record


@pytest.mark.parametrize("kind", ["video", "Image", "frames", "", "audio"])
def test_an_unknown_media_kind_names_the_record_and_the_field(kind: str) -> None:
    record = _record(Media(path="v/1.jpg", kind=kind), rid="r 9")
    assert _error(record) == f"record 'r 9': media[1].kind is {kind!r}; expected one of ('image', 'frame')"


def test_the_kind_is_checked_before_the_time() -> None:
    record = _record(Media(path="v/1.jpg", kind="video", t=-1))
    assert _error(record) == "record 'clip-7': media[1].kind is 'video'; expected one of ('image', 'frame')"


def test_the_first_bad_media_is_reported() -> None:
    record = Record(id="r", source="s", task="vqa", conversations=[Turn("human", "<image><image>"), Turn("gpt", "a")],
                    media=[Media(path="a.jpg", t=-2), Media(path="b.jpg", kind="clip")])
    assert _error(record) == "record 'r': media[0].t must be a finite number of seconds >= 0, got -2"
