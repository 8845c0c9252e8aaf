"""`make demo`: generate sample sources, build each one, inspect, mix, train stage 1 then stage 2 of a tiny model.

Every input is generated here (images, videos, a TSV served on loopback, parquet, Visual-CoT and V* JSON); nothing
is downloaded. Each step is the real CLI a user would type, printed before it runs.
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo_out"
BIN = Path(sys.executable).parent

# (builder name, module providing demo_source, extra kwargs for demo_source, output name)
SOURCES = [
    ("cambrian", "mmdata.testing.llava", {}, "cambrian"),
    ("cc12m", "mmdata.testing.cc12m", {}, "cc12m"),
    ("video", "mmdata.testing.video", {"task": "video_qa"}, "video_qa"),
    ("video", "mmdata.testing.video", {"task": "frame_pred"}, "frame_pred"),
    ("visual_cot", "mmdata.testing.visual_cot", {}, "visual_cot"),
    ("vstar", "mmdata.testing.vstar", {}, "vstar"),
    ("instructpix2pix", "mmdata.testing.instructpix2pix", {}, "instructpix2pix"),
]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(args: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def mmdata(*args: str) -> None:
    run([str(BIN / "mmdata"), *args])


def build_sources() -> list[str]:
    built: list[str] = []
    for name, module, kwargs, out_name in SOURCES:
        demo_source = importlib.import_module(module).demo_source
        say(f"build {out_name}")
        with demo_source(OUT / "sources" / out_name, **kwargs) as args:
            mmdata("build", name.replace("_", "-"), *args, "--out", str(OUT / "data" / out_name), "--overwrite")
        built.append(out_name)
    return built


def main() -> None:
    start = time.perf_counter()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    built = build_sources()
    say("inspect the Cambrian sample")
    mmdata("inspect", str(OUT / "data" / "cambrian"), "--n", "2")
    mmdata("validate", str(OUT / "data" / "cambrian"))

    mixture = mix()
    runs = train(mixture)

    say(f"done in {time.perf_counter() - start:.0f} s — where everything is")
    for name in built:
        print(f"  dataset    {OUT / 'data' / name}")
    print(f"  mixture    {mixture}")
    print(f"  report     {OUT / 'report.html'}  (open in a browser: sampled records with their images)")
    for stage, path in runs.items():
        print(f"  {stage:<10} {path}")
    print("\nLook at any of them with `mmdata inspect PATH`, or in pandas: "
          "`import mmdata; mmdata.open(PATH).to_pandas()`.")


def mix() -> Path:
    recipe = ROOT / "recipes" / "demo_mix.yaml"
    say("mix the sample datasets")
    out = OUT / "mixture"
    mmdata("mix", str(recipe), "--dry-run")
    mmdata("mix", str(recipe), "--out", str(out))
    mmdata("inspect", str(out), "--n", "2")
    mmdata("report", str(out), "--out", str(OUT / "report.html"), "--n", "24")
    return out


def train(mixture: Path) -> dict[str, Path]:
    from trainer.demo import run as run_training

    return run_training(ROOT, OUT, mixture, say=say, run=run)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
