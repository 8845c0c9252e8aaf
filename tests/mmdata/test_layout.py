"""The shard layout: the batched record reader, the typed manifest entries, and the reads it asks storage for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import mmdata
from mmdata.core.schema import Media, Record, Turn
from mmdata.format.manifests import Manifest
from mmdata.format.names import MANIFEST, data_name, index_name
from mmdata.format.reader import ShardReader, decoder
from mmdata.storage.local import LocalStorage
from mmdata.testing.images import png_bytes, random_image

N = 23


def _record(i: int) -> Record:
    # Every third record carries an image (stored in the tar as a member), so wds rows differ in size.
    media = [Media(f"img/{i}.png", data=png_bytes(random_image(8 + i % 5, 6, seed=i)))] if i % 3 == 0 else []
    question = ("<image>\n" if media else "") + f"Question {i}?"
    return Record(f"r{i}", "test", "vqa" if media else "text",
                  [Turn("human", question), Turn("gpt", "x" * (i % 7 + 1))], media)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "ds"
    with mmdata.DatasetWriter(out, format="both", copy_media=True, shard_size=5) as w:
        for i in range(N):
            assert w.add(_record(i))
    return out


def _reader(root: Path, form: str, storage: LocalStorage | None = None) -> ShardReader:
    return ShardReader(storage or LocalStorage(root), Manifest.load(root).shards, form)  # type: ignore[arg-type]


def _one_by_one(reader: ShardReader) -> list[bytes]:
    return [reader.read_one(i) for i in range(len(reader))]


@pytest.mark.parametrize("form", ["jsonl", "wds"])
@pytest.mark.parametrize("seed", range(6))
def test_batched_read_returns_any_row_set_in_the_order_asked(built: Path, form: str, seed: int) -> None:
    reader = _reader(built, form)
    expected = _one_by_one(reader)
    assert len(set(expected)) == N  # every row is distinct bytes: a mix-up could not go unnoticed
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, N, size=int(rng.integers(1, 3 * N)))  # unsorted, with repeats, across shards
    assert reader.read_rows(rows) == [expected[r] for r in rows]
    assert reader.read_rows(rows.tolist()) == [expected[r] for r in rows]


@pytest.mark.parametrize("form", ["jsonl", "wds"])
def test_batched_read_edge_cases(built: Path, form: str) -> None:
    reader = _reader(built, form)
    expected = _one_by_one(reader)
    assert reader.read_rows([]) == []
    assert reader.read_rows(list(range(N))[::-1]) == expected[::-1]
    assert reader.read_rows([N - 1] * 4) == [expected[-1]] * 4  # the last row ends at the file's size
    assert reader.read(1, [4, 0, 0, 2]) == [expected[9], expected[5], expected[5], expected[7]]  # shard-local rows
    with pytest.raises(IndexError, match="out of range"):
        reader.read(1, [5])
    decoded = [decoder(form)(b) for b in reader.read_rows([3, 0, 3])]  # type: ignore[arg-type]
    assert [r.id for r in decoded] == ["r3", "r0", "r3"]
    if form == "wds":  # tar records come back with their image bytes
        assert decoded[0].media[0].data == _record(3).media[0].data


class _Recording(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[list[tuple[str, int]]] = []

    def read_ranges(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        self.calls.append(list(zip(names, starts)))
        return super().read_ranges(names, starts, ends)


def test_reads_are_issued_in_one_call_sorted_by_shard_and_offset(built: Path) -> None:
    storage = _Recording(built)
    reader = _reader(built, "jsonl", storage)
    reader.read_rows([22, 3, 17, 0, 9, 3])
    assert len(storage.calls) == 1 and storage.calls[0] == sorted(storage.calls[0])


def test_every_dataset_read_gives_the_same_records(built: Path) -> None:
    ds = mmdata.Dataset(built)
    records = list(ds)
    assert [r.id for r in records] == [f"r{i}" for i in range(N)]
    assert [r.id for r, d in ds.get_many([5, 1, 5])] == ["r5", "r1", "r5"]
    assert all(d is ds for _, d in ds.get_many([0, 2]))
    assert [ds[i] for i in range(N)] == records


def test_typed_manifest_keeps_dataset_json_byte_identical(built: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(built)
    assert manifest.shards[0].files["jsonl"].name == data_name(0, "jsonl")
    assert index_name(data_name(0, "wds")) == "shards/000000.tar.idx"
    manifest.save(tmp_path)
    assert (tmp_path / MANIFEST).read_bytes() == (built / MANIFEST).read_bytes()
