"""Checkpoints that resume exactly: DeepSpeed state + the loader's position + the step + every rank's RNG.

    <run>/checkpoints/step_00000040/   DeepSpeed's files (model, optimizer partitions, scheduler, client state)
    <run>/checkpoints/step_00000040/rng_rank{r}.pt
    <run>/checkpoints/latest           DeepSpeed's pointer to the newest tag

The loader state is the number of samples all ranks consumed in the current epoch (see `mmdata.read.loader`), taken at
an optimizer-step boundary, so a resumed run's next micro-batch is the first one of step k + 1.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmdata.core.errors import NotFound

CHECKPOINTS = "checkpoints"
_TAG = re.compile(r"^step_(\d{8})$")


def tag(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a tag is complete once DeepSpeed wrote `latest` pointing at or past it)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = sorted(p for p in root.iterdir() if p.is_dir() and _TAG.match(p.name))
    latest = latest_tag(run_dir)
    if latest is None:
        return []
    return [p for p in found if p.name <= latest]


def latest_tag(run_dir: Path) -> str | None:
    f = run_dir / CHECKPOINTS / "latest"
    return f.read_text().strip() if f.is_file() else None


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save(engine: Any, run_dir: Path, step: int, client_state: dict[str, Any], *, rank: int, keep: int) -> Path:
    """Collective: every rank calls it. Writes the step's checkpoint, then prunes to the newest `keep`."""
    import torch.distributed as dist

    root = run_dir / CHECKPOINTS
    folder = root / tag(step)
    folder.mkdir(parents=True, exist_ok=True)
    # Before DeepSpeed moves `latest` to this tag, and whole (renamed into place): a checkpoint that `latest` names
    # always has every rank's RNG state, whenever a kill comes.
    rng_file = folder / f"rng_rank{rank}.pt"
    torch.save(rng_state(), rng_file.with_name(rng_file.name + ".tmp"))
    os.replace(rng_file.with_name(rng_file.name + ".tmp"), rng_file)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tag(step), client_state=client_state)
    dist.barrier()
    if rank == 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return root / tag(step)


def load(engine: Any, run_dir: Path, *, rank: int) -> dict[str, Any]:
    """Collective: restore the newest checkpoint into `engine`; returns its client state (step, loader, …)."""
    root = run_dir / CHECKPOINTS
    name = latest_tag(run_dir)
    if name is None:
        raise NotFound(f"{root}: no checkpoint to resume from (no `latest` file); start without --resume")
    path, client = engine.load_checkpoint(str(root), tag=name, load_module_strict=True, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None:
        raise NotFound(f"{root / name}: DeepSpeed could not load this checkpoint; delete it and resume "
                                f"from an older one by editing {root}/latest")
    rng_file = root / name / f"rng_rank{rank}.pt"
    if rng_file.is_file():  # absent when resuming with more ranks than were saved: those ranks start fresh RNG
        set_rng_state(torch.load(rng_file, weights_only=False))
    return client
