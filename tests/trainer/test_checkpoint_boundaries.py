"""Pins `trainer.checkpoint` at its boundaries before a refactoring moves it.

Real `checkpoint.save` / `checkpoint.load` on a real DeepSpeed engine (ZeRO-2, one gloo rank on the CPU, a 4 → 2
linear model), no mocks:

- pruning keeps exactly the newest `keep` checkpoints, by name, after every save; only rank 0 prunes;
- `list_checkpoints` lists complete tags oldest first and excludes tags newer than `latest` (a partial write);
- `rng_state` / `set_rng_state` round-trip python `random`, numpy and torch; `save` writes the state of the moment
  of the save as `rng_rank{rank}.pt`; `load` restores the tag `latest` names (also when edited back) and its RNG,
  leaves the RNGs alone when the file is absent, and fails with `NotFound` without `latest`;
- a run whose steps draw from the global RNGs, resumed from a checkpoint, draws exactly the numbers (and ends
  with exactly the weights) of the uninterrupted run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmdata.core.errors import NotFound
from trainer import checkpoint

Draw = tuple[list[float], float, float]


@pytest.fixture(scope="module", autouse=True)
def process_group() -> Iterator[None]:
    """One gloo rank, as `mmtrain` sets it up without a launcher (`save`/`load` call barriers)."""
    from trainer.engine import init_distributed

    init_distributed()
    yield


def make_engine() -> Any:
    import deepspeed

    model = torch.nn.Linear(4, 2)
    with torch.no_grad():  # fixed weights without touching the global RNG
        model.weight.copy_(torch.linspace(-1, 1, 8).reshape(2, 4))
        model.bias.copy_(torch.tensor([0.1, -0.2]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 2,
              "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def train_step(engine: Any) -> tuple[Draw, float]:
    """One optimizer step whose batch, scale and offset come from the global torch, numpy and python RNGs."""
    x = torch.randn(2, 4)
    scale = float(np.random.rand())
    offset = random.random()
    loss = (engine(x) * scale + offset).pow(2).mean()
    engine.backward(loss)
    engine.step()
    return (x.flatten().tolist(), scale, offset), loss.item()


def names(run: Path) -> list[str]:
    return [p.name for p in checkpoint.list_checkpoints(run)]


def dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / checkpoint.CHECKPOINTS).iterdir() if p.is_dir())


def draws(n: int = 3) -> list[float]:
    return [random.random() for _ in range(n)] + np.random.rand(n).tolist() + torch.rand(n).tolist()


# ---------------------------------------------------------------------------- tags and listing


def test_tag_is_eight_digits() -> None:
    assert checkpoint.tag(40) == "step_00000040" and checkpoint.tag(0) == "step_00000000"


def test_list_checkpoints_is_oldest_first_and_stops_at_latest(tmp_path: Path) -> None:
    root = tmp_path / checkpoint.CHECKPOINTS
    assert checkpoint.list_checkpoints(tmp_path) == [] and checkpoint.latest_tag(tmp_path) is None
    for name in ("step_00000010", "step_00000002", "step_00000004", "step_00000006", "step_2", "step_000000003",
                 "tmp"):
        (root / name).mkdir(parents=True)
    (root / "step_00000003").write_text("a file, not a checkpoint")
    assert checkpoint.list_checkpoints(tmp_path) == []  # no `latest`: nothing is complete
    (root / "latest").write_text("step_00000004\n")
    assert checkpoint.latest_tag(tmp_path) == "step_00000004"
    assert names(tmp_path) == ["step_00000002", "step_00000004"]  # 6 and 10 are newer than latest
    assert checkpoint.list_checkpoints(tmp_path)[0] == root / "step_00000002"
    (root / "latest").write_text("step_00000010")
    assert names(tmp_path) == ["step_00000002", "step_00000004", "step_00000006", "step_00000010"]
    (root / "latest").write_text("step_00000001")
    assert names(tmp_path) == []


# ---------------------------------------------------------------------------- RNG state


def test_rng_state_round_trips_each_of_the_three_rngs() -> None:
    state = checkpoint.rng_state()
    assert set(state) == {"python", "numpy", "torch"}
    first = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint.set_rng_state(state)
    again = draws()
    for k, name in enumerate(("python", "numpy", "torch")):
        assert again[3 * k: 3 * k + 3] == first[3 * k: 3 * k + 3], f"{name} was not restored"


# ---------------------------------------------------------------------------- save and prune


def test_pruning_keeps_exactly_the_newest_keep_after_every_save(tmp_path: Path) -> None:
    engine = make_engine()
    seen = []
    for step in range(1, 6):
        train_step(engine)
        path = checkpoint.save(engine, tmp_path, step, {"step": step}, rank=0, keep=2)
        assert path == tmp_path / checkpoint.CHECKPOINTS / checkpoint.tag(step)
        seen.append(dirs(tmp_path))
    assert seen == [["step_00000001"], ["step_00000001", "step_00000002"], ["step_00000002", "step_00000003"],
                    ["step_00000003", "step_00000004"], ["step_00000004", "step_00000005"]]
    assert checkpoint.latest_tag(tmp_path) == "step_00000005"
    assert names(tmp_path) == ["step_00000004", "step_00000005"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step_00000005").iterdir() if p.name.startswith("rng"))\
        == ["rng_rank0.pt"]
    train_step(engine)
    checkpoint.save(engine, tmp_path, 6, {"step": 6}, rank=0, keep=1)
    assert dirs(tmp_path) == ["step_00000006"]


def test_a_partial_tag_newer_than_latest_is_neither_listed_nor_counted_by_pruning(tmp_path: Path) -> None:
    engine = make_engine()
    partial = tmp_path / checkpoint.CHECKPOINTS / checkpoint.tag(9)  # a killed run's half-written checkpoint
    partial.mkdir(parents=True)
    for step in (1, 2, 3):
        train_step(engine)
        checkpoint.save(engine, tmp_path, step, {"step": step}, rank=0, keep=2)
    assert names(tmp_path) == ["step_00000002", "step_00000003"]
    assert dirs(tmp_path) == ["step_00000002", "step_00000003", "step_00000009"]


def test_the_rank_names_the_rng_file_and_only_rank_0_prunes(tmp_path: Path) -> None:
    engine = make_engine()
    for step in (1, 2):
        train_step(engine)
        checkpoint.save(engine, tmp_path, step, {"step": step}, rank=1, keep=1)
    after = draws()
    assert dirs(tmp_path) == ["step_00000001", "step_00000002"]
    assert (tmp_path / "checkpoints" / "step_00000002" / "rng_rank1.pt").is_file()
    assert not (tmp_path / "checkpoints" / "step_00000002" / "rng_rank0.pt").exists()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    checkpoint.load(make_engine(), tmp_path, rank=1)
    assert draws() == after
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    unrestored = draws()
    fresh = make_engine()  # (building a module draws from torch's RNG)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    checkpoint.load(fresh, tmp_path, rank=0)  # a rank the checkpoint has no RNG for starts fresh
    assert draws() == unrestored


# ---------------------------------------------------------------------------- load


def test_save_writes_the_rng_of_its_moment_and_load_restores_the_tag_latest_names(tmp_path: Path) -> None:
    engine = make_engine()
    after: dict[int, list[float]] = {}
    for step in (1, 2):
        train_step(engine)
        checkpoint.save(engine, tmp_path, step, {"step": step, "tag": f"t{step}"}, rank=0, keep=3)
        after[step] = draws()  # what a run continuing from this checkpoint draws first
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    assert checkpoint.load(make_engine(), tmp_path, rank=0)["tag"] == "t2"
    assert draws() == after[2]
    (tmp_path / "checkpoints" / "latest").write_text("step_00000001")  # "resume from an older one"
    assert checkpoint.load(make_engine(), tmp_path, rank=0)["step"] == 1
    assert draws() == after[1]


def test_load_without_the_rng_file_leaves_the_rngs_alone(tmp_path: Path) -> None:
    engine = make_engine()
    train_step(engine)
    checkpoint.save(engine, tmp_path, 1, {"step": 1}, rank=0, keep=2)
    (tmp_path / "checkpoints" / "step_00000001" / "rng_rank0.pt").unlink()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = draws()
    fresh = make_engine()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    assert checkpoint.load(fresh, tmp_path, rank=0)["step"] == 1
    assert draws() == expected


def test_load_without_latest_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "step_00000002").mkdir(parents=True)
    with pytest.raises(NotFound, match=r"no checkpoint to resume from \(no `latest` file\); start without --resume"):
        checkpoint.load(make_engine(), tmp_path, rank=0)


# ---------------------------------------------------------------------------- resume


def run(run_dir: Path, steps: int, *, resume: bool) -> tuple[dict[int, Draw], dict[int, float], torch.Tensor]:
    """What `trainer.train` does around the checkpoints: seed (every process does), resume, step, save every 2."""
    from trainer.loop import seed_all

    seed_all(0)
    engine = make_engine()
    step = int(checkpoint.load(engine, run_dir, rank=0)["step"]) if resume else 0
    drawn, losses = {}, {}
    while step < steps:
        draw, loss = train_step(engine)
        step += 1
        drawn[step], losses[step] = draw, loss
        if step % 2 == 0:
            checkpoint.save(engine, run_dir, step, {"step": step}, rank=0, keep=2)
    weights = torch.cat([p.detach().flatten() for p in engine.module.parameters()])
    return drawn, losses, weights


def test_a_resumed_run_draws_exactly_the_numbers_of_the_uninterrupted_run(tmp_path: Path) -> None:
    full_draws, full_losses, full_weights = run(tmp_path / "full", 4, resume=False)
    first, _, _ = run(tmp_path / "cut", 2, resume=False)
    assert first == {k: full_draws[k] for k in (1, 2)}
    again, losses, weights = run(tmp_path / "cut", 4, resume=True)
    assert sorted(again) == [3, 4]
    for step in (3, 4):
        x, scale, offset = again[step]
        fx, fscale, foffset = full_draws[step]
        assert x == fx, f"step {step}: torch drew other numbers"
        assert scale == fscale, f"step {step}: numpy drew other numbers"
        assert offset == foffset, f"step {step}: python random drew other numbers"
        assert losses[step] == full_losses[step]
    assert torch.equal(weights, full_weights)


# ---------------------------------------------------------------------------- known defect


class Killed(BaseException):
    """The process dying in the middle of `checkpoint.save` (not an Exception: nothing may catch it)."""


def test_a_save_killed_before_its_rng_file_leaves_the_previous_checkpoint_the_latest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine()
    train_step(engine)
    checkpoint.save(engine, tmp_path, 1, {"step": 1}, rank=0, keep=2)
    after_1 = draws()
    train_step(engine)

    def die() -> dict[str, Any]:
        raise Killed

    monkeypatch.setattr(checkpoint, "rng_state", die)  # dies between DeepSpeed's files and the RNG file
    with pytest.raises(Killed):
        checkpoint.save(engine, tmp_path, 2, {"step": 2}, rank=0, keep=2)
    monkeypatch.undo()
    assert all((p / "rng_rank0.pt").is_file() for p in checkpoint.list_checkpoints(tmp_path))
    fresh = make_engine()
    assert checkpoint.load(fresh, tmp_path, rank=0)["step"] == 1
    assert draws() == after_1
