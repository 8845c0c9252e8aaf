"""The lengths cache: computed once and reused, recomputed when anything that sets lengths changes, the same packing
plan as the uncached path, and split across ranks under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmdata.read.dataset import Dataset
from mmdata.read.loader import RecordList
from mmdata.read.view import Mixture
from tests.trainer.trainer_world import RECORDS, TrainWorld, fake_image, launcher_env
from trainer import ConversationDataset, ModelConfig, build_model
from trainer.lengths import MISSING, expanded_lengths
from trainer.packing import fingerprint, plan_packs
from trainer.templates import ConversationEncoder, LabelError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(train_world: TrainWorld):
    return build_model(ModelConfig(llm=str(train_world.models / "lm"), vision_tower=str(train_world.models / "vision"),
                                   num_image_tokens=4)).model


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts tokenizations (ConversationEncoder.encode calls)."""
    n = [0]
    encode = ConversationEncoder.encode

    def counting(self, *a, **kw):
        n[0] += 1
        return encode(self, *a, **kw)

    monkeypatch.setattr(ConversationEncoder, "encode", counting)
    return n


def _data(source, model, **kw) -> ConversationDataset:
    return ConversationDataset.for_model(source, model, max_length=kw.pop("max_length", 512), on_error="skip", **kw)


def _distinct_rows(mixture: Mixture) -> int:
    return len(np.unique(np.asarray(mixture.index).view(np.uint8).reshape(len(mixture), -1), axis=0))


def test_second_run_reuses_the_table_and_plans_the_same_packs(train_world: TrainWorld, model, calls: list[int],
                                                              tmp_path: Path) -> None:
    mixture = Mixture(train_world.mixture)
    plain = _data(mixture, model).lengths()
    assert calls[0] == len(mixture)
    calls[0] = 0
    first, stats = expanded_lengths(_data(mixture, model), tmp_path)
    assert first == plain and stats.computed == calls[0] == _distinct_rows(mixture) < len(mixture)  # repeats once
    tables = sorted(tmp_path.glob("*.npy"))
    assert len(tables) == 2 and all(t.with_suffix(".json").is_file() for t in tables)  # one per source dataset
    mtimes = [t.stat().st_mtime_ns for t in tables]
    calls[0] = 0
    again, stats = expanded_lengths(_data(mixture, model), tmp_path)
    assert again == plain and calls[0] == 0 and stats.computed == 0
    assert [t.stat().st_mtime_ns for t in tables] == mtimes
    assert fingerprint(plan_packs(again, 128)) == fingerprint(plan_packs(plain, 128))

    # A source dataset read on its own shares the mixture's rows: only the rows the mixture did not use are new.
    vqa = Dataset(train_world.root / "vqa")
    used = len(np.unique(mixture.index["row"][mixture.index["dataset"] == mixture.names.index("vqa")]))
    calls[0] = 0
    whole, stats = expanded_lengths(_data(vqa, model), tmp_path)
    assert stats.computed == calls[0] == len(vqa) - used and whole == _data(vqa, model).lengths()


def test_a_view_of_the_mixture_reads_the_same_tables(train_world: TrainWorld, model, calls: list[int],
                                                     tmp_path: Path) -> None:
    from mmdata.quality.dedup import DedupOptions, dedup
    from mmdata.read.view import View

    mixture = Mixture(train_world.mixture)
    expanded_lengths(_data(mixture, model), tmp_path / "cache")
    dedup([train_world.mixture], tmp_path / "view", DedupOptions(images="none", text="exact", workers=1,
                                                                  cache=tmp_path / "sig"))
    view = View(tmp_path / "view")
    assert 0 < len(view) < len(mixture)  # the mixture's repeats removed
    calls[0] = 0
    lengths, stats = expanded_lengths(_data(view, model), tmp_path / "cache")
    assert stats.computed == calls[0] == 0 and lengths == _data(view, model).lengths()


@pytest.mark.parametrize("change", ["tokenizer", "template", "max_length", "num_image_tokens"])
def test_a_change_to_what_sets_lengths_recomputes(train_world: TrainWorld, model, calls: list[int], tmp_path: Path,
                                                  change: str) -> None:
    mixture = Mixture(train_world.mixture)
    expanded_lengths(_data(mixture, model), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.glob("*.npy")}
    if change == "tokenizer":
        import copy

        tok = copy.deepcopy(model.tokenizer)
        tok.add_tokens(["the picture"])  # one token where there were several: other lengths
        data = ConversationDataset(mixture, tokenizer=tok, processor=model.processor, template="llama3",
                                   num_image_tokens=4, max_length=512, on_error="skip")
    elif change == "template":
        data = ConversationDataset(mixture, tokenizer=model.tokenizer, processor=model.processor, template="plain",
                                   num_image_tokens=4, max_length=512, on_error="skip")
    elif change == "max_length":
        data = _data(mixture, model, max_length=40)  # truncates, or skips, some records
    else:
        data = ConversationDataset(mixture, tokenizer=model.tokenizer, processor=model.processor, template="llama3",
                                   num_image_tokens=2, max_length=512, on_error="skip")
    calls[0] = 0
    lengths, stats = expanded_lengths(data, tmp_path)
    assert stats.computed == calls[0] == _distinct_rows(mixture)
    assert lengths == data.lengths() != _data(mixture, model).lengths()
    assert {p: p.read_bytes() for p in before} == before and len(list(tmp_path.glob("*.npy"))) == 4


def test_a_damaged_table_is_recomputed_and_sources_without_identity_are_not_cached(
        train_world: TrainWorld, model, calls: list[int], tmp_path: Path) -> None:
    mixture = Mixture(train_world.mixture)
    plain, _ = expanded_lengths(_data(mixture, model), tmp_path)
    table = sorted(tmp_path.glob("*.npy"))[0]
    table.write_bytes(table.read_bytes()[:-8])  # truncated
    calls[0] = 0
    lengths, stats = expanded_lengths(_data(mixture, model), tmp_path)
    assert lengths == plain and stats.computed == calls[0] > 0
    assert not (np.load(table) == MISSING).all()

    records = RecordList([RECORDS[k] for k in ("vqa", "text")], fake_image)
    lengths, stats = expanded_lengths(_data(records, model), tmp_path / "none")
    assert stats.cache is None and lengths == _data(records, model).lengths() and not (tmp_path / "none").exists()


def test_raise_mode_raises_for_a_sample_whose_labels_cannot_be_built(train_world: TrainWorld, model,
                                                                     tmp_path: Path) -> None:
    mixture = Mixture(train_world.mixture)
    expanded_lengths(_data(mixture, model, max_length=30), tmp_path)  # some records cannot fit: 0 in the table
    strict = ConversationDataset.for_model(mixture, model, max_length=30, on_error="raise")
    with pytest.raises(LabelError, match="max_length is 30"):
        expanded_lengths(strict, tmp_path)


SCRIPT = """
import faulthandler, json, os, sys
import torch.distributed as dist
from mmdata import Mixture
from trainer import ConversationDataset, ModelConfig, build_model
from trainer.lengths import expanded_lengths
from trainer.templates import ConversationEncoder

faulthandler.enable()  # an abort before the end prints where each thread was
world, cache, out = sys.argv[1:4]
dist.init_process_group("gloo")
calls = [0]
encode = ConversationEncoder.encode
def counting(self, *a, **kw):
    calls[0] += 1
    return encode(self, *a, **kw)
ConversationEncoder.encode = counting
model = build_model(ModelConfig(llm=world + "/models/lm", vision_tower=world + "/models/vision",
                                num_image_tokens=4)).model
data = ConversationDataset.for_model(Mixture(world + "/mixture"), model, max_length=512, on_error="skip")
lengths, stats = expanded_lengths(data, cache, rank=dist.get_rank(), world_size=dist.get_world_size())
with open(f"{out}-{dist.get_rank()}.json", "w") as f:
    json.dump({"calls": calls[0], "computed": stats.computed, "lengths": lengths}, f)
dist.destroy_process_group()
# Skip interpreter teardown: with gloo's worker threads still alive it can abort the process
# ("terminate called without an active exception", seen once in CI), which is torch's, not what is tested.
os._exit(0)
"""


@pytest.mark.slow
def test_two_ranks_split_the_work_once_then_both_read_the_table(train_world: TrainWorld, model,
                                                                tmp_path: Path) -> None:
    script = tmp_path / "lengths_ranks.py"
    script.write_text(textwrap.dedent(SCRIPT))
    mixture = Mixture(train_world.mixture)
    plain = _data(mixture, model).lengths()
    for launch in ("first", "second"):
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            str(script), str(train_world.root), str(tmp_path / "cache"), str(tmp_path / launch)],
                           cwd=ROOT, env=launcher_env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        ranks = [json.loads((tmp_path / f"{launch}-{r}.json").read_text()) for r in (0, 1)]
        assert all(r["lengths"] == plain for r in ranks)
        calls = [r["calls"] for r in ranks]
        if launch == "first":  # each distinct row tokenized once, half on each rank
            assert sum(calls) == ranks[0]["computed"] == _distinct_rows(mixture) and abs(calls[0] - calls[1]) <= 1
        else:
            assert calls == [0, 0] and ranks[0]["computed"] == 0
