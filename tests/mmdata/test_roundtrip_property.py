"""Property: any valid Record survives write → read unchanged, in both storage forms."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmdata
from mmdata.build.driver import BuildSettings, build
from mmdata.build.registry import Builder, register
from mmdata.core.options import opt
from mmdata.core.schema import IMAGE, Media, Record, Turn
from mmdata.testing.images import png_bytes, random_image

_PNG = png_bytes(random_image(5, 3, seed=1))


@dataclass
class PickledOptions:
    file: Path = opt(help="pickled list of records")


def _records(options: PickledOptions, unit: int) -> Iterator[Record]:
    yield from pickle.loads(options.file.read_bytes())


register(Builder(name="_pickled", help="test only", options=PickledOptions, units=lambda o, s, n: [0],
                 records=_records, generates_media=True))

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: s.strip() and IMAGE not in s)
meta_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=6)


@st.composite
def records(draw: st.DrawFn, index: int) -> Record:
    n_pairs = draw(st.integers(1, 3))
    turns = [Turn("system", draw(text))] if draw(st.booleans()) else []
    for _ in range(n_pairs):
        turns.append(Turn("human", draw(text)))
        turns.append(Turn("gpt", draw(text)))
    media: list[Media] = []
    for t in turns[1 if turns[0].role == "system" else 0:]:
        for _ in range(draw(st.integers(0, 2))):
            where = draw(st.sampled_from(["start", "end"]))
            t.value = IMAGE + t.value if where == "start" else t.value + IMAGE
            frame = draw(st.booleans())
            media.append(Media(path=f"m/{index}/{len(media)}.png", kind="frame" if frame else "image",
                               video="v.mp4" if frame else None, t=draw(st.floats(0, 1e4)) if frame else None,
                               data=_PNG))
    # media must follow placeholder order across turns: rebuild it in conversation order
    return Record(id=f"r{index}-{draw(text)}", source=draw(st.sampled_from(["a", "b"])),
                  task=draw(st.sampled_from(["vqa", "t2i", "edit"])), conversations=turns, media=media,
                  meta=draw(st.dictionaries(st.text(max_size=8), meta_values, max_size=3)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 0), min_size=1, max_size=4).flatmap(
    lambda xs: st.tuples(*[records(i) for i in range(len(xs))])))
def test_any_valid_record_survives_write_and_read(recs: tuple[Record, ...]) -> None:
    for r in recs:
        r.validate()
    expected = [r.to_dict() for r in recs]
    for r in expected:
        for m in r["media"]:
            m["width"], m["height"] = 5, 3  # the writer measures media; nothing else may change
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "records.pkl"
        src.write_bytes(pickle.dumps(list(recs)))
        for fmt in ("jsonl", "wds"):
            out = Path(tmp) / fmt
            manifest = build("_pickled", PickledOptions(file=src), BuildSettings(out=out, format=fmt))
            assert manifest.counts == {"read": len(recs), "written": len(recs), "rejected": 0}
            ds = mmdata.open(out)
            assert [r.to_dict() for r in ds] == expected
            assert [ds[i].to_dict() for i in range(len(ds))] == expected
