"""Dedup: every planted duplicate found across and within sources, near misses kept, the view reads like a dataset."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import mmdata
from mmdata.core.options import ConfigError
from mmdata.format.names import REMOVED
from mmdata.quality.dedup import DedupOptions, dedup
from mmdata.read.view import View
from tests.quality.conftest import Built


def short(rid: str) -> str:
    return rid.split("@")[0]  # the cambrian builder suffixes ids with where they came from


def removed(view: Path) -> dict[str, dict]:
    """Removed record id → its removed.jsonl entry, ids shortened (the kept record's too)."""
    out = {}
    for e in map(orjson.loads, (view / REMOVED).read_bytes().splitlines()):
        if "kept" in e:
            e["kept"]["id"] = short(e["kept"]["id"])
        out[short(e["id"])] = e
    return out


def test_every_planted_duplicate_and_nothing_else(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "view"
    manifest = dedup([built.a, built.b], out, DedupOptions(cache=built.cache))
    gone = removed(out)
    assert {rid: e["kept"]["id"] for rid, e in gone.items()} == built.world.duplicates
    assert gone["dup_bytes"]["reason"] == "identical text, identical media bytes"
    assert gone["dup_resized"]["kind"] == "identical text + near-identical images"
    assert gone["dup_resized"]["kept"]["source"] == "a" and gone["dup_resized"]["source"] == "b"
    n_a, n_b = len(mmdata.open(built.a)), len(mmdata.open(built.b))
    assert manifest.counts == {"read": n_a + n_b, "kept": n_a + n_b - len(gone), "removed": len(gone)}
    view = mmdata.open(out)
    assert isinstance(view, View) and len(view) == n_a + n_b - len(gone)
    ids = [short(r.id) for r in view]
    assert not set(ids) & set(gone) and set(built.world.distinct) <= set(ids)
    assert [short(r.id) for r, _ in view.get_many([0, len(view) - 1])] == [ids[0], ids[-1]]
    record, dataset = view.get(len(view) - 1)  # a record of B (webdataset form): its image decodes
    assert dataset.root.resolve() == built.b and dataset.image(record, 0).size[0] > 0


def test_keep_rule_follows_input_order(built: Built, tmp_path: Path) -> None:
    dedup([built.b, built.a], tmp_path / "v", DedupOptions(cache=built.cache))
    gone = removed(tmp_path / "v")
    # B first: B's copies are kept and A's originals go (dup_within_a stays second to a5, both in A)
    assert gone["a1"]["kept"]["id"] == "dup_reencoded" and gone["dup_within_a"]["kept"]["id"] == "a5"


def test_exact_modes_find_only_exact_copies(built: Built, tmp_path: Path) -> None:
    dedup([built.a, built.b], tmp_path / "v", DedupOptions(images="exact", text="exact", cache=built.cache))
    assert set(removed(tmp_path / "v")) == {"dup_bytes", "dup_spaces", "dup_text_only", "dup_within_a"}


def test_a_view_of_a_view_and_cache_reuse(built: Built, tmp_path: Path) -> None:
    before = sorted(p.name for p in built.cache.iterdir())
    dedup([built.a, built.b], tmp_path / "v1", DedupOptions(cache=built.cache))
    assert sorted(p.name for p in built.cache.iterdir()) == before  # nothing hashed twice
    dedup([tmp_path / "v1", built.a], tmp_path / "v2", DedupOptions(cache=built.cache))
    v1, v2 = mmdata.open(tmp_path / "v1"), mmdata.open(tmp_path / "v2")
    assert [r.id for r in v2] == [r.id for r in v1]  # A again adds nothing new
    assert len(removed(tmp_path / "v2")) == len(mmdata.open(built.a))  # every record of A is in v1 or a copy


@pytest.mark.parametrize("kw", [{"images": "phash:99"}, {"images": "phash:2.5"}, {"text": "minhash:0.1"},
                                {"text": "fuzzy"}, {"images": "exact:3"}, {"images": "none", "text": "none"}])
def test_bad_specs_are_config_errors(kw: dict) -> None:
    with pytest.raises(ConfigError):
        DedupOptions(**kw)
    assert DedupOptions(text="minhash").jaccard == 0.8


def test_the_training_loader_reads_a_view(built: Built, tmp_path: Path) -> None:
    """What mmtrain does with `--data.mixture VIEW`: batches of (record, dataset) from worker processes."""
    from mmdata.read.loader import MixtureLoader, RecordDataset

    dedup([built.a, built.b], tmp_path / "v", DedupOptions(cache=built.cache))
    view = mmdata.open(tmp_path / "v")
    data = RecordDataset(view, lambda record, dataset: (record.id, dataset.image(record, 0).size if record.media
                                                        else None))
    loader = MixtureLoader(data, batch_size=4, num_workers=2, collate_fn=list)
    items = [item for batch in loader for item in batch]
    assert [rid for rid, _ in items] == [r.id for r in view]
    assert all(size is None or size[0] > 0 for _, size in items)


def test_a_mixture_input_loses_its_repeats(built: Built, tmp_path: Path) -> None:
    from mmdata.mix.planner import mix

    (tmp_path / "a").symlink_to(built.a)
    (tmp_path / "r.yaml").write_text("sources:\n  - {path: a, epochs: 2}\n")
    mix(tmp_path / "r.yaml", tmp_path / "m")
    dedup([tmp_path / "m"], tmp_path / "v", DedupOptions(cache=built.cache))
    gone = [orjson.loads(line) for line in (tmp_path / "v" / REMOVED).read_bytes().splitlines()]
    n = len(mmdata.open(built.a))
    # The second pass goes, each record as "the same record again" — except one of the pair a5 / dup_within_a:
    # whichever comes first in the mixture's order is kept, and both copies of the other name it.
    assert sum(e["reason"] == "the same record again" for e in gone) == n - 1
    near = [(short(e["id"]), short(e["kept"]["id"])) for e in gone if e["reason"] != "the same record again"]
    assert len(near) == 2 and near[0] == near[1] and set(near[0]) == {"a5", "dup_within_a"}
    assert len(gone) == n + 1 and len(mmdata.open(tmp_path / "v")) == n - 1
