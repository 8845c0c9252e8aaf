"""Where a step's numbers go, on rank 0: `metrics.jsonl` (one line per optimizer step), TensorBoard, a progress bar.

The JSONL is the source of truth (the demo's loss curve, the resume tests and the benchmark read it); on resume the
lines past the restored step are dropped, so the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
_BARS = "▁▂▃▄▅▆▇█"


class MetricsLogger:
    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, enabled: bool, tensorboard: bool,
                 progress: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS
        self.tb = self.bar = None
        if not enabled:
            return
        truncate(self.path, start_step)
        self.file = self.path.open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        step = row["step"]
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            shown = {"loss": "loss", "ce": "text_loss", "lr": "lr", "samples/s": "samples_per_s",
                     "tok/s": "tokens_per_s", "vis_cos": "vision_cos"}  # those the run logs (the visualizer: fewer)
            self.bar.set_postfix({k: f"{row[v]:.3g}" for k, v in shown.items() if row.get(v) is not None},
                                 refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def truncate(path: Path, step: int) -> None:
    """Keep rows with step <= `step` (what a resumed run has already logged)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows))


def read(path: Path) -> list[dict[str, Any]]:
    path = path / METRICS if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line text plot; long series are averaged into `width` buckets."""
    if not values:
        return ""
    if len(values) > width:
        k = len(values) / width
        values = [sum(b) / len(b) for b in (values[int(i * k):max(int((i + 1) * k), int(i * k) + 1)]
                                            for i in range(width))]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int((v - lo) / span * len(_BARS)))] for v in values)


def loss_table(rows: list[dict[str, Any]], every: int | None = None) -> str:
    """Step, loss, text CE, vision cosine, lr: about ten rows, always including the first and the last."""
    if not rows:
        return "(no steps logged)"
    every = every or max(1, len(rows) // 10)
    picked = [r for i, r in enumerate(rows) if i % every == 0 or i == len(rows) - 1]
    lines = [f"{'step':>6} {'loss':>9} {'text CE':>9} {'vis cos':>8} {'lr':>10}"]
    for r in picked:
        vis = "" if r.get("vision_cos") is None else f"{r['vision_cos']:.4f}"
        lines.append(f"{r['step']:>6} {r['loss']:>9.4f} {r['text_loss']:>9.4f} {vis:>8} {r['lr']:>10.3e}")
    return "\n".join(lines)
