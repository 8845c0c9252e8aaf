"""Pins the boundaries of dedup and decontamination before a refactoring moves them (mmdata/dedup.py, with
signatures.py, selection.py and decontaminate.py).

Most tests build signatures by hand — 64-bit pHashes a known number of bits apart, MinHash rows with a known number
of equal values, text keys, media counts — and run the real `find_duplicates` / `_verify` / `_image_hits` on them
through the real `DatasetSignatures` reading a cache entry written here, so every boundary is exact:
- pHash distance: exactly D bits apart is a duplicate (or a leak), D + 1 is not, for D = 0, 4, 16;
- the D + 1 pHash chunks: two hashes D bits apart, one differing bit in each quarter (or each 1/D-th), are found;
- MinHash Jaccard: exactly J (96 of 128 values equal at J = 0.75) is a duplicate, one value fewer is not; a pair that
  agrees on one LSH band only (the first, or the last) is found;
- the keep rule: a removed record removes nothing (chains A~B~C), each removal names its earliest kept duplicate;
- multi-image records: same count, media k against media k, each within D (order matters);
- the reasons written to removed.jsonl;
- decontamination: n-grams of exactly `ngram` words (and `ngram - 1` not), whole questions of exactly `min_words`
  words (and one fewer skipped), eval images at exactly `distance` (and + 1 not).
End-to-end tests run `dedup()` / `decontaminate()` on tiny built datasets, with the pHash of each image chosen by
the test (`image_phash` replaced while signatures are computed in-process).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.core.options import ConfigError
from mmdata.format.names import REMOVED
from mmdata.quality.decontaminate import DecontaminateOptions, EvalSet, _image_hits, decontaminate, text_index
from mmdata.quality.dedup import (
    DedupOptions,
    _chunks,
    _media_distance,
    _Signatures,
    _verify,
    band_layout,
    candidate_pairs,
    dedup,
    find_duplicates,
)
from mmdata.quality.selection import Inputs
from mmdata.quality.signatures import DatasetSignatures, SignatureParams, key64
from mmdata.testing.images import png_bytes, random_image

NUM_PERM = 128
PARAMS = SignatureParams(num_perm=NUM_PERM)
H = 0x0123_4567_89AB_CDEF  # a pHash; others are this with some bits flipped


def flip(h: int, *bits: int) -> int:
    """`h` with `bits` flipped: a hash exactly len(set(bits)) bits away."""
    for b in bits:
        h ^= 1 << b
    return h


# ---------------------------------------------------------------------------------------------- synthetic world
@dataclass(frozen=True)
class Media:
    sha: int
    phash: int
    ok: bool


def img(phash: int, copy: int = 0) -> Media:
    """A decodable image with pHash `phash`; a different `copy` is other bytes (a re-encoding) with the same pHash."""
    return Media(key64(f"{phash}/{copy}".encode()), phash, True)


def broken(name: str) -> Media:
    """Bytes that do not decode: pHash 0, ok false (as compute_shard stores them)."""
    return Media(key64(name.encode()), 0, False)


def minhash_of(text: str) -> np.ndarray:
    """Random MinHash values for `text`: two different texts agree on none of them."""
    return np.random.default_rng(key64(text.encode())).integers(0, 2**32, NUM_PERM, dtype=np.uint32)


def sharing(base: np.ndarray, equal: Sequence[int] | np.ndarray, salt: int = 1) -> np.ndarray:
    """A MinHash equal to `base` exactly at indices `equal`, different everywhere else (and, for another `salt`,
    different from the other's everywhere else too)."""
    where = np.asarray(equal, dtype=np.int64)
    out = base ^ np.uint32(salt)
    out[where] = base[where]
    return out


@dataclass
class Rec:
    text: str = "no text"
    media: Sequence[Media] = ()
    minhash: np.ndarray | None = None  # default: minhash_of(text)
    text_key: int | None = None  # default: key64(text)


def write_signatures(root: Path, records: list[Rec], shard_size: int) -> DatasetSignatures:
    """The cache entries compute_shard would write for `records`, read back by the real DatasetSignatures."""
    entries, counts = [], []
    for s, lo in enumerate(range(0, len(records), shard_size)):
        shard = records[lo:lo + shard_size]
        media = [m for r in shard for m in r.media]
        arrays = {
            "text_key": np.array([key64(r.text.encode()) if r.text_key is None else r.text_key for r in shard],
                                 dtype=np.uint64),
            "words": np.array([len(r.text.split()) for r in shard], dtype=np.int32),
            "minhash": np.stack([minhash_of(r.text) if r.minhash is None else r.minhash for r in shard]),
            "media_start": np.cumsum([0, *(len(r.media) for r in shard)]).astype(np.int64),
            "media_sha": np.array([m.sha for m in media], dtype=np.uint64),
            "media_phash": np.array([m.phash for m in media], dtype=np.uint64),
            "media_ok": np.array([m.ok for m in media], dtype=bool)}
        entry = root / f"shard{s}"
        entry.mkdir(parents=True)
        for name, array in arrays.items():
            np.save(entry / f"{name}.npy", array, allow_pickle=False)
        entries.append(SimpleNamespace(entry=entry))
        counts.append(len(shard))
    ds = SimpleNamespace(shards=SimpleNamespace(starts=np.cumsum([0, *counts]).astype(np.int64)))
    return DatasetSignatures(ds, entries, NUM_PERM)  # type: ignore[arg-type]


def make_inputs(root: Path, records: list[Rec], shard_size: int = 2, positions: Sequence[int] | None = None) -> Inputs:
    """Inputs over one base dataset holding `records`; position p is row positions[p] (default: row p)."""
    rows = np.arange(len(records)) if positions is None else np.asarray(positions)
    inputs = Inputs.__new__(Inputs)
    inputs.paths, inputs.names, inputs.bases = [root], [root.name], []
    inputs.base, inputs.row = np.zeros(len(rows), np.int64), rows.astype(np.int64)
    inputs.starts = np.array([0, len(rows)])
    inputs.sigs = [write_signatures(root, records, shard_size)]
    return inputs


def find(root: Path, records: list[Rec], images: str = "phash:4", text: str = "none", shard_size: int = 2,
         positions: Sequence[int] | None = None) -> dict[int, tuple[int, str, str]]:
    """find_duplicates on `records`: removed position → (the kept position it names, reason, kind)."""
    inputs = make_inputs(root, records, shard_size, positions)
    removals = find_duplicates(inputs, DedupOptions(images=images, text=text), PARAMS)
    out = {r.position: (r.match["position"], r.reason, r.kind) for r in removals}
    assert len(out) == len(removals), "a position removed twice"
    return out


def kept_by(found: dict[int, tuple[int, str, str]]) -> dict[int, int]:
    return {p: k for p, (k, _, _) in found.items()}


def verify(root: Path, records: list[Rec], pairs: list[tuple[int, int]], images: str = "phash:4",
           text: str = "none") -> tuple[list[bool], list[float]]:
    """_verify on explicit pairs (no candidate stage): (holds, similarity) of each."""
    opts = DedupOptions(images=images, text=text)
    sig = _Signatures(make_inputs(root, records), opts, PARAMS)
    i, j = (np.array(x, dtype=np.int64) for x in zip(*pairs))
    ok, sim = _verify(sig, opts, i, j)
    return ok.tolist(), sim.tolist()


# ---------------------------------------------------------------------------------------------- keys
@pytest.mark.parametrize("distance", [0, 1, 4, 7, 16])
def test_phash_chunks_are_d_plus_1_pieces_that_tile_64_bits(distance: int) -> None:
    chunks = _chunks(distance)
    assert len(chunks) == distance + 1
    assert [s for s, _ in chunks] == np.cumsum([0] + [b for _, b in chunks][:-1]).tolist()
    assert sum(b for _, b in chunks) == 64
    assert max(b for _, b in chunks) - min(b for _, b in chunks) <= 1  # as equal as 64 bits allow


def test_phash_chunk_layout() -> None:
    assert _chunks(0) == [(0, 64)]
    assert _chunks(4) == [(0, 13), (13, 13), (26, 13), (39, 13), (52, 12)]


def test_band_layout_is_datasketchs_choice() -> None:
    assert [band_layout(j, 128) for j in (0.5, 0.75, 0.8, 0.9)] == [(25, 5), (11, 11), (9, 13), (5, 25)]


def unpack(pairs: np.ndarray) -> list[tuple[int, int]]:
    return [(int(p >> np.uint64(32)), int(p & np.uint64(0xFFFFFFFF))) for p in pairs]


def test_candidate_pairs_every_pair_of_a_run_or_each_with_the_first() -> None:
    keys = [np.array([7, 5, 7, 5, 7, 9, 3], dtype=np.uint64), np.array([1, 1, 2, 2, 3, 4, 5], dtype=np.uint64)]
    full = candidate_pairs(iter(keys), star=False)
    assert full.dtype == np.uint64 and full.tolist() == sorted(full.tolist())
    assert unpack(full) == [(0, 1), (0, 2), (0, 4), (1, 3), (2, 3), (2, 4)]
    assert unpack(candidate_pairs(iter(keys), star=True)) == [(0, 1), (0, 2), (0, 4), (1, 3), (2, 3)]
    assert unpack(candidate_pairs(iter([np.array([1, 1], np.uint64) << np.uint64(40)]), star=False)) == [(0, 1)]
    assert len(candidate_pairs(iter([np.arange(5, dtype=np.uint64)]), star=False)) == 0


# ---------------------------------------------------------------------------------------------- image distance
@pytest.mark.parametrize(("distance", "bits"), [(0, ()), (4, (1, 2, 3, 5)), (4, (0, 16, 32, 48)), (16, range(16)),
                                                (16, range(0, 64, 4))])
def test_exactly_d_bits_apart_is_a_duplicate_d_plus_1_is_not(tmp_path: Path, distance: int, bits: Sequence[int]) -> None:
    extra = 60 if 60 not in bits else 61
    records = [Rec("a", [img(H)]), Rec("b", [img(flip(H, *bits), copy=1)]),
               Rec("c", [img(H, copy=2)]), Rec("d", [img(flip(H, *bits, extra), copy=3)])]
    found = find(tmp_path / "a", records[:2], images=f"phash:{distance}")
    assert found == {1: (0, f"pHash distance {distance}", "near-identical images")}
    assert find(tmp_path / "b", records[2:], images=f"phash:{distance}") == {}


@pytest.mark.parametrize("distance", [0, 4])
def test_d_plus_1_is_kept_when_the_pair_is_a_candidate(tmp_path: Path, distance: int) -> None:
    """The differing bits all in one chunk: the pair shares the other chunks, so only verification keeps it."""
    bits = range(distance + 1)
    assert find(tmp_path / "x", [Rec("a", [img(H)]), Rec("b", [img(flip(H, *bits), copy=1)])],
                images=f"phash:{distance}") == {}
    ok, _ = verify(tmp_path / "y", [Rec("a", [img(H)]), Rec("b", [img(flip(H, *bits), copy=1)]),
                                    Rec("c", [img(flip(H, *bits[:-1]), copy=2)])], [(0, 1), (0, 2)],
                   images=f"phash:{distance}")
    assert ok == [False, True]


@pytest.mark.parametrize(("distance", "bits"), [(1, (0,)), (2, (0, 32)), (4, (0, 16, 32, 48)),
                                                (8, range(0, 64, 8)), (16, range(0, 64, 4))])
def test_d_bits_spread_over_d_equal_pieces_are_still_found(tmp_path: Path, distance: int, bits: Sequence[int]) -> None:
    """One differing bit in each of D equal pieces: D pieces would share nothing; the D + 1 chunks share one."""
    found = find(tmp_path, [Rec("a", [img(H)]), Rec("b", [img(flip(H, *bits), copy=1)])], images=f"phash:{distance}")
    assert kept_by(found) == {1: 0}


def test_records_sharing_a_chunk_with_a_far_first_record_are_still_paired(tmp_path: Path) -> None:
    """A, B, C share chunk 0 only; A is far from both, B and C are 4 bits apart: B~C is not lost behind A."""
    far = flip(H, *range(14, 64, 3))  # 17 bits differ, none in chunk 0 (bits 0..12)
    near = flip(H, 13, 26, 39, 52)  # 4 bits differ, one in each of chunks 1..4: chunk 0 is all b and c share
    records = [Rec("a", [img(far)]), Rec("b", [img(H)]), Rec("c", [img(near, copy=1)])]
    assert find(tmp_path, records) == {2: (1, "pHash distance 4", "near-identical images")}


# ---------------------------------------------------------------------------------------------- keep rule
def test_a_removed_record_removes_nothing(tmp_path: Path) -> None:
    """A~B (3 bits), B~C (3 bits), A and C 6 bits apart: B goes (naming A), C stays; D~C goes naming C."""
    b, c = flip(H, 1, 2, 3), flip(H, 1, 2, 3, 20, 21, 22)
    records = [Rec("a", [img(H)]), Rec("b", [img(b)]), Rec("c", [img(c)]), Rec("d", [img(c, copy=1)])]
    found = find(tmp_path, records)
    assert found == {1: (0, "pHash distance 3", "near-identical images"),
                     3: (2, "pHash distance 0", "near-identical images")}


def test_a_removal_names_the_earliest_kept_duplicate(tmp_path: Path) -> None:
    """A and B far apart, both near C: C goes once, naming A; E duplicates both B and D (removed): names B."""
    b = flip(H, *range(10, 20))
    records = [Rec("a", [img(H)]), Rec("b", [img(b)]), Rec("c", [img(flip(H, *range(10, 15)), copy=1)]),
               Rec("d", [img(b, copy=1)]), Rec("e", [img(b, copy=2)])]
    assert kept_by(find(tmp_path, records, images="phash:5", shard_size=3)) == {2: 0, 3: 1, 4: 1}


def test_the_same_row_twice_is_the_same_record_again(tmp_path: Path) -> None:
    """Positions 0..4 are rows 0, 1, 0, 1, 1 (as a mixture repeating a source): row 0 again is "the same record
    again"; row 1 again names position 0, not position 1 (removed)."""
    records = [Rec("a", [img(H)]), Rec("a", [img(H, copy=1)])]
    found = find(tmp_path / "x", records, text="minhash:0.8", positions=[0, 1, 0, 1, 1])
    assert found == {1: (0, "identical text, pHash distance 0", "identical text + near-identical images"),
                     2: (0, "the same record again", "repeated record"),
                     3: (0, "identical text, pHash distance 0", "identical text + near-identical images"),
                     4: (0, "identical text, pHash distance 0", "identical text + near-identical images")}


# ---------------------------------------------------------------------------------------------- text
def test_minhash_similarity_exactly_j_holds_one_value_less_does_not(tmp_path: Path) -> None:
    base = minhash_of("a")
    records = [Rec("a", minhash=base), Rec("b", minhash=sharing(base, range(96), 1)),
               Rec("c", minhash=sharing(base, range(95), 2)), Rec("d", minhash=sharing(base, range(83), 3))]
    ok, sim = verify(tmp_path / "v", records, [(0, 1), (0, 2), (0, 3)], images="none", text="minhash:0.75")
    assert ok == [True, False, False] and sim == [0.75, 95 / 128, 83 / 128]
    ok, _ = verify(tmp_path / "w", records, [(0, 1), (0, 2)], images="none", text="minhash:0.5")
    assert ok == [True, True]
    default = [Rec("a", minhash=base), Rec("b", minhash=sharing(base, range(103), 1)),
               Rec("c", minhash=sharing(base, range(102), 2))]  # 0.8 lies between 102/128 and 103/128
    ok, _ = verify(tmp_path / "d", default, [(0, 1), (0, 2)], images="none", text="minhash:0.8")
    assert ok == [True, False]
    found = find(tmp_path / "f", records[:3], images="none", text="minhash:0.75")
    assert found == {1: (0, "text Jaccard ≈ 0.75", "near-identical text")}  # c is a candidate (8 bands), refused
    assert find(tmp_path / "g", [records[0], records[2]], images="none", text="minhash:0.75") == {}


def test_identical_text_is_similarity_1_whatever_the_minhash(tmp_path: Path) -> None:
    base = minhash_of("a")
    records = [Rec("a", minhash=base), Rec("b", minhash=sharing(base, range(96)), text_key=key64(b"a"))]
    ok, sim = verify(tmp_path, records, [(0, 1)], images="none", text="minhash:0.9")
    assert ok == [True] and sim == [1.0]


@pytest.mark.parametrize("band", [0, 5, 10])
def test_a_pair_sharing_one_band_only_is_found(tmp_path: Path, band: int) -> None:
    """J = 0.75 on 128 values: 11 bands of 11 rows. The pair agrees on all of band `band`, on all but the first
    row of every other band, and on the 7 values no band uses (118 of 128)."""
    b, r = band_layout(0.75, NUM_PERM)
    equal = [k * r + i for k in range(b) for i in range(r) if k == band or i > 0] + list(range(b * r, NUM_PERM))
    base = minhash_of("a")
    records = [Rec("x"), Rec("a", minhash=base), Rec("y"), Rec("b", minhash=sharing(base, equal))]
    assert find(tmp_path, records, images="none", text="minhash:0.75") == {
        3: (1, "text Jaccard ≈ 0.92", "near-identical text")}


def test_exact_text_mode(tmp_path: Path) -> None:
    base = minhash_of("a")
    records = [Rec("a", minhash=base), Rec("b", minhash=base), Rec("a", minhash=sharing(base, range(5)))]
    assert find(tmp_path / "f", records, images="none", text="exact") == {2: (0, "identical text", "identical text")}
    ok, sim = verify(tmp_path / "v", [Rec("a", [img(H)]), Rec("b", [img(H)]), Rec("a", [img(H, 1)])], [(0, 1), (0, 2)],
                     text="exact")
    assert ok == [False, True] and sim == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------- several media
def test_two_images_against_two_each_within_d(tmp_path: Path) -> None:
    x, y = H, flip(H, *range(0, 64, 2))
    near_x, near_y = flip(x, 9, 30, 50), flip(y, 7)
    records = [Rec("a", [img(x), img(y)]), Rec("b", [img(near_x, 1), img(near_y, 1)])]
    assert find(tmp_path / "a", records) == {1: (0, "pHash distance 3", "near-identical images")}
    records = [Rec("a", [img(x), img(y)]), Rec("b", [img(x), img(near_y, 1)])]  # first identical: max is 1
    assert find(tmp_path / "b", records) == {1: (0, "pHash distance 1", "near-identical images")}
    records = [Rec("a", [img(x), img(y)]), Rec("b", [img(x), img(y)])]
    assert find(tmp_path / "c", records) == {1: (0, "identical media bytes", "identical media")}


def test_two_images_one_beyond_d_is_not_a_duplicate(tmp_path: Path) -> None:
    x, y = H, flip(H, *range(0, 64, 2))
    records = [Rec("a", [img(x), img(y)]), Rec("b", [img(x), img(flip(y, 1, 3, 5, 7, 9), 1)]),
               Rec("c", [img(flip(x, 1, 3, 5, 7, 9), 1), img(y)])]
    assert find(tmp_path / "f", records) == {}
    ok, _ = verify(tmp_path / "v", records, [(0, 1), (0, 2)])
    assert ok == [False, False]


def test_swapped_images_are_not_a_duplicate(tmp_path: Path) -> None:
    x, y = H, flip(H, *range(0, 64, 2))
    records = [Rec("a", [img(x), img(y)]), Rec("b", [img(y), img(x)]), Rec("c", [img(x), img(x)])]
    assert find(tmp_path / "f", records, images="exact") == {}
    assert find(tmp_path / "g", records) == {}
    ok, _ = verify(tmp_path / "v", records, [(0, 1), (0, 2)])
    assert ok == [False, False]


def test_one_image_against_two_is_not_a_duplicate(tmp_path: Path) -> None:
    records = [Rec("a", [img(H)]), Rec("b", [img(H), img(flip(H, 1))]),
               Rec("c", [img(H, 1), img(flip(H, *range(0, 64, 2)))]), Rec("d", [])]
    for images in ("phash:4", "exact"):
        assert find(tmp_path / images, records, images=images) == {}
        ok, _ = verify(tmp_path / f"v{images}", records, [(0, 1), (0, 2), (0, 3), (1, 3)], images=images)
        assert ok == [False, False, False, False]
        opts = DedupOptions(images=images)
        sig = _Signatures(make_inputs(tmp_path / f"d{images}", records), opts, PARAMS)
        assert [_media_distance(sig, p, q, opts) for p, q in ((0, 1), (1, 0), (0, 3), (3, 0))] == [None] * 4


def test_undecodable_media_match_by_bytes_only(tmp_path: Path) -> None:
    records = [Rec("a", [broken("x")]), Rec("b", [broken("x")]), Rec("c", [broken("y")]),
               Rec("d", [img(H), broken("p")]), Rec("e", [img(H), broken("q")]), Rec("f", [img(H), img(0, 1)])]
    assert find(tmp_path / "f", records) == {1: (0, "identical media bytes", "identical media")}
    ok, _ = verify(tmp_path / "v", records, [(0, 2), (3, 4), (3, 5), (4, 5)])
    assert ok == [False, False, False, False]


def test_exact_mode_wants_identical_bytes(tmp_path: Path) -> None:
    records = [Rec("a", [img(H), img(flip(H, 5))]), Rec("b", [img(H), img(flip(H, 5), copy=1)]),
               Rec("c", [img(H), img(flip(H, 5))])]
    assert find(tmp_path / "f", records, images="exact") == {2: (0, "identical media bytes", "identical media")}
    ok, _ = verify(tmp_path / "v", records, [(0, 1), (0, 2)], images="exact")
    assert ok == [False, True]
    # under phash:4 the same pair is at distance 0 (other bytes, same pHash)
    assert _media_distance(_Signatures(make_inputs(tmp_path / "d", records), DedupOptions(), PARAMS), 0, 1,
                           DedupOptions()) == 0


def test_text_and_images_must_both_hold(tmp_path: Path) -> None:
    records = [Rec("q1", [img(H)]), Rec("q1", [img(flip(H, *range(30)), 1)]), Rec("q2", [img(H, 2)]),
               Rec("q1", [img(flip(H, 0, 1), 3)]), Rec("t", []), Rec("t", []), Rec("t", [img(H, 4)])]
    assert find(tmp_path, records, text="minhash:0.8") == {
        3: (0, "identical text, pHash distance 2", "identical text + near-identical images"),
        5: (4, "identical text", "identical text")}


@pytest.mark.xfail(strict=True, reason="issue 25.5")
@pytest.mark.parametrize("images", ["phash:4", "exact"])
def test_records_without_media_are_never_image_duplicates(tmp_path: Path, images: str) -> None:
    """Images only: records without media have no image to match (today every one of them after the first goes,
    with an empty reason)."""
    records = [Rec("a", []), Rec("b", [img(H)]), Rec("c", []), Rec("d", [])]
    assert find(tmp_path, records, images=images) == {}


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(("spec", "value"), [("phash:0", 0), ("phash:16", 16), ("phash", 4)])
def test_distance_bounds_accepted(spec: str, value: int) -> None:
    assert DedupOptions(images=spec).distance == value


@pytest.mark.parametrize(("spec", "value"), [("minhash:0.5", 0.5), ("minhash:1", 1.0), ("minhash", 0.8)])
def test_jaccard_bounds_accepted(spec: str, value: float) -> None:
    assert DedupOptions(text=spec).jaccard == value


@pytest.mark.parametrize("kw", [{"images": "phash:17"}, {"text": "minhash:0.49"}, {"text": "minhash:1.01"},
                                {"workers": 0}, {"images": "none", "text": "none"}])
def test_beyond_the_bounds_is_a_config_error(kw: dict) -> None:
    with pytest.raises(ConfigError):
        DedupOptions(**kw)


# ---------------------------------------------------------------------------------------------- decontaminate: images
def image_hits(root: Path, records: list[Rec], evals: dict[bytes, int | None], distance: int,
               monkeypatch: pytest.MonkeyPatch) -> dict[int, str]:
    """_image_hits of eval images (bytes → their pHash, None: does not decode): training row → eval image."""
    monkeypatch.setattr("mmdata.quality.decontaminate.image_phash", lambda data: evals[data])
    ev = EvalSet("ev", images=[(data.decode(), data) for data in evals])
    hits = _image_hits(make_inputs(root, records), [ev], distance)
    assert all(d == 0 for d, _ in hits)
    return {row: label for (_, row), label in hits.items()}


@pytest.mark.parametrize(("distance", "bits"), [(0, ()), (4, (1, 2, 3, 4)), (4, (0, 16, 32, 48)), (16, range(0, 64, 4))])
def test_an_eval_image_at_exactly_d_leaks_d_plus_1_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            distance: int, bits: Sequence[int]) -> None:
    records = [Rec("x", [img(flip(H, *bits, 61))]), Rec("a", [img(flip(H, *bits))])]
    assert image_hits(tmp_path, records, {b"e.png": H}, distance, monkeypatch) == {1: "ev|e.png"}
    near = flip(H, *range(distance + 1))  # all differing bits in one chunk: a candidate, refused by the distance
    assert image_hits(tmp_path / "n", [Rec("a", [img(near)])], {b"e.png": H}, distance, monkeypatch) == {}


def test_eval_image_hits_name_the_right_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows without media and with several: each hit is the row whose media matched (shards of 2 rows). Media
    that do not decode (pHash 0) match by their bytes only, even an eval image 2 bits from 0."""
    far = flip(H, *range(0, 64, 2))
    records = [Rec("a", [img(far)]), Rec("b", []), Rec("c", [img(far, 1), img(flip(H, 3), 1)]), Rec("d", []),
               Rec("e", [img(H, 2)]), Rec("f", [broken("e.png")]), Rec("g", [broken("x"), img(far, 3)])]
    evals = {b"e.png": H, b"o.png": flip(far, 1, 2, 3, 4, 5), b"z.png": flip(0, 1, 2)}
    hits = image_hits(tmp_path, records, evals, 4, monkeypatch)
    assert hits == {2: "ev|e.png", 4: "ev|e.png", 5: "ev|e.png"}
    assert image_hits(tmp_path / "x", records, {b"e.png": H}, 0, monkeypatch) == {4: "ev|e.png", 5: "ev|e.png"}


@pytest.mark.xfail(strict=True, reason="an eval image that does not decode gets pHash 0 and matches blank images")
def test_an_undecodable_eval_image_matches_identical_bytes_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A black image's pHash is 0, a white or grey one's is 1 << 63: neither leaks an eval file that does not decode."""
    records = [Rec("black", [img(0)]), Rec("white", [img(1 << 63)]), Rec("same", [broken("bad.jpg")])]
    assert image_hits(tmp_path, records, {b"bad.jpg": None}, 4, monkeypatch) == {2: "ev|bad.jpg"}


# ---------------------------------------------------------------------------------------------- decontaminate: text
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
         "mike", "november", "oscar", "papa"]


def test_text_index_grams_and_whole_questions() -> None:
    ev = EvalSet("ev", questions=[("q:5", " ".join(WORDS[:5])), ("q:6", " ".join(WORDS[:6])),
                                  ("q:4", " ".join(WORDS[:4])), ("q:3", " ".join(WORDS[:3])),
                                  ("q:2", " ".join(WORDS[:2]))])
    index, skipped = text_index([ev], 5, 3)
    assert index.n == 5 and skipped == 1
    assert index.grams == {key64(" ".join(WORDS[:5]).encode()): "ev|q:5", key64(" ".join(WORDS[1:6]).encode()): "ev|q:6"}
    assert index.wholes == {key64(" ".join(WORDS[:4]).encode()): "ev|q:4", key64(" ".join(WORDS[:3]).encode()): "ev|q:3"}


# ---------------------------------------------------------------------------------------------- end to end
def build_dataset(root: Path, items: list[dict], images: dict[str, bytes], name: str = "ds") -> Path:
    media = root / f"{name}_media"
    media.mkdir(parents=True)
    for file, data in images.items():
        (media / file).write_bytes(data)
    (root / f"{name}.json").write_text(json.dumps(items))
    build("cambrian", CambrianOptions(input=[root / f"{name}.json"], media_root=media),
          BuildSettings(out=root / name, shard_size=3))
    return root / name


def conv(question: str, answer: str = "An answer.", image: bool = False) -> list[dict[str, str]]:
    return [{"from": "human", "value": ("<image>\n" if image else "") + question}, {"from": "gpt", "value": answer}]


def removed_ids(view: Path) -> dict[str, str | None]:
    """Removed record id → the id of the record it names as kept (None for an eval match), ids without suffix."""
    entries = map(orjson.loads, (view / REMOVED).read_bytes().splitlines())
    return {e["id"].split("@")[0]: e["kept"]["id"].split("@")[0] if "kept" in e else None for e in entries}


@pytest.fixture
def chosen_phash(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], bytes]:
    """Image bytes (a tiny PNG each) whose pHash, while signatures are computed in-process, is the one asked for."""
    table: dict[bytes, int] = {}

    def make(phash: int) -> bytes:
        data = png_bytes(random_image(8, 8, seed=len(table)))
        table[data] = phash
        return data

    monkeypatch.setattr("mmdata.quality.signatures.image_phash", lambda data: table.get(data))
    monkeypatch.setattr("mmdata.quality.decontaminate.image_phash", lambda data: table.get(data))  # eval images
    return make


def test_dedup_end_to_end_chain_and_distance(tmp_path: Path, chosen_phash: Callable[[int], bytes]) -> None:
    """Images only, phash:4. Input ds: b is 4 bits from a (goes), c is 4 from b and 8 from a (stays), d is 5 from c
    (stays), e is c's pHash on other bytes (goes, naming c), f is text only (stays). Input two: g1 is a's pHash on
    other bytes (goes, naming a in ds), g2 is far from everything (stays)."""
    hashes = {"a": H, "b": flip(H, 0, 16, 32, 48), "c": flip(H, 0, 16, 32, 48, 1, 17, 33, 49)}
    hashes |= {"d": flip(hashes["c"], *range(50, 55)), "e": hashes["c"]}
    images = {f"{k}.png": chosen_phash(h) for k, h in hashes.items()}
    items = [{"id": k, "image": f"{k}.png", "conversations": conv(f"question {k}", image=True)} for k in hashes]
    ds = build_dataset(tmp_path, [*items, {"id": "f", "conversations": conv("text only")}], images)
    two = build_dataset(tmp_path, [{"id": k, "image": f"{k}.png", "conversations": conv(f"question {k}", image=True)}
                                   for k in ("g1", "g2")],
                        {"g1.png": chosen_phash(H), "g2.png": chosen_phash(flip(H, *range(1, 64, 2)))}, "two")
    manifest = dedup([ds, two], tmp_path / "v", DedupOptions(images="phash:4", text="none", workers=1,
                                                              cache=tmp_path / "cache"))
    assert removed_ids(tmp_path / "v") == {"b": "a", "e": "c", "g1": "a"}
    assert manifest.counts == {"read": 8, "kept": 5, "removed": 3}
    assert manifest.removed == {"ds": {"near-identical images": 2}, "two": {"near-identical images": 1}}
    assert [r.id.split("@")[0] for r in mmdata.open(tmp_path / "v")] == ["a", "c", "d", "f", "g2"]
    assert manifest.params["num_perm"] == 128 and manifest.params["images"] == "phash:4"
    g1 = orjson.loads((tmp_path / "v" / REMOVED).read_bytes().splitlines()[-1])
    g1["id"], g1["kept"]["id"] = g1["id"].split("@")[0], g1["kept"]["id"].split("@")[0]
    assert g1 == {"source": "two", "position": 0, "id": "g1", "reason": "pHash distance 0",
                  "kind": "near-identical images", "kept": {"source": "ds", "position": 0, "id": "a"}}


@pytest.mark.xfail(strict=True, reason="issue 25.5")
def test_dedup_end_to_end_text_only_records_are_no_image_duplicates(tmp_path: Path,
                                                                    chosen_phash: Callable[[int], bytes]) -> None:
    items = [{"id": "a", "image": "a.png", "conversations": conv("question a", image=True)},
             {"id": "t1", "conversations": conv("one question")}, {"id": "t2", "conversations": conv("another one")}]
    ds = build_dataset(tmp_path, items, {"a.png": chosen_phash(H)})
    dedup([ds], tmp_path / "v", DedupOptions(images="phash:4", text="none", workers=1, cache=tmp_path / "cache"))
    assert removed_ids(tmp_path / "v") == {}


def test_decontaminate_end_to_end_ngram_and_min_words(tmp_path: Path, chosen_phash: Callable[[int], bytes]) -> None:
    """ngram 5, min_words 3. Eval: a question of exactly 5 words, one of 8, one of exactly 3, one of 2 (skipped),
    an image. Only human turns count; an n-gram needs all n words, a short question the whole turn."""
    q5, q8, q3, q2 = (" ".join(WORDS[a:b]) for a, b in ((0, 5), (5, 13), (13, 16), (2, 4)))
    train = {
        "q5_inside": f"Please, {q5.upper()}? now",  # contains the whole 5-word question: leaks
        "q8_gram": " ".join(WORDS[8:13]),  # exactly the last 5 words of the 8-word question: leaks
        "q8_four": " ".join(WORDS[5:9]) + " zulu " + " ".join(WORDS[9:13]),  # 4 + 4 words of it: clean
        "q3_whole": q3.title() + "!",  # the 3-word question, as the whole turn: leaks
        "q3_inside": "so " + q3,  # a short question inside a longer turn: clean
        "q2_whole": q2,  # a 2-word question is skipped: clean
    }
    items = [{"id": k, "conversations": conv(v)} for k, v in train.items()]
    items.append({"id": "in_answer", "conversations": conv("tell me", q5)})  # only in a gpt turn: clean
    items += [{"id": f"img{d}", "image": f"i{d}.png", "conversations": conv(f"picture {d}", image=True)}
              for d in (4, 5)]
    images = {f"i{d}.png": chosen_phash(flip(H, *range(0, 8 * d, 8))) for d in (4, 5)}
    ds = build_dataset(tmp_path, items, images)
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "q.jsonl").write_text("".join(json.dumps({"question_id": k, "question": q}) + "\n"
                                        for k, q in (("q5", q5), ("q8", q8), ("q3", q3), ("q2", q2))))
    (ev / "e.png").write_bytes(chosen_phash(H))
    manifest = decontaminate([ds], [ev], tmp_path / "v",
                             DecontaminateOptions(ngram=5, min_words=3, workers=1, cache=tmp_path / "cache"))
    assert removed_ids(tmp_path / "v") == {"q5_inside": None, "q8_gram": None, "q3_whole": None, "img4": None}
    assert manifest.params["questions_skipped_as_too_short"] == 1
    gone = {e["id"].split("@")[0]: e for e in map(orjson.loads, (tmp_path / "v" / REMOVED).read_bytes().splitlines())}
    assert gone["q8_gram"]["item"] == "q.jsonl:q8" and gone["q3_whole"]["item"] == "q.jsonl:q3"
    assert gone["img4"]["reason"] == "image matches eval image e.png"
    assert gone["q5_inside"]["reason"] == "human turn shares a 5-gram with eval question q.jsonl:q5"
