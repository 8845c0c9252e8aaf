"""Build throughput beside the fastest baselines for the same input, measured in the same run.

(a) 200,000 text-only Cambrian-style records: `mmdata build cambrian` (every record decoded, converted, validated
    and written with its index and checksums) on 1 and 2 workers, and on 1 worker with 1% of the lines broken (cut,
    empty answer, leading gpt turn, user/assistant roles: rejected or repaired one by one), beside Hugging Face
    `datasets`' JSON→Arrow conversion of the same file (`load_dataset("json")` + `save_to_disk`, fresh cache each
    run) and beside parsing each line with orjson. Targets: >= 1.0x `datasets` on 1 worker, >= 0.5x the parse-only rate.
(b) 2,000 records with 640x480 JPEGs: the build with its media check (every image decoded to its end; a JPEG's
    bitstream at 1/8 scale) vs a bare Pillow open+load loop (target: >= 0.8x), and vs the same loop decoding at
    1/8 scale (the like-for-like figure).
Every contender runs once per round, rounds interleaved; figures are medians with their spread, and (a) also prints
the CPU time each contender spends per record (`datasets` parses on all cores; a 1-worker build converts on one).
Usage: python bench/convert.py [--records 200000] [--images 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import rate, ratio, rounds

from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build
from mmdata.testing.images import jpeg_bytes

WORDS = ["the", "a", "of", "image", "shows", "person", "table", "red", "blue", "two", "three", "left", "right", "near", "small", "large", "building", "street", "car", "dog", "cat", "sign", "text", "window", "people", "sitting", "standing", "holding", "wearing", "white", "black", "green", "water", "sky"]  # noqa: E501


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def make_text_jsonl(path: Path, n: int, broken: float = 0.0) -> None:
    """LLaVA-style text records; a share `broken` of the lines is what real files hold now and then: a cut line,
    an empty answer, a leading gpt turn, `user`/`assistant` roles."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            turns = []
            for _ in range(rng.choice((1, 1, 2, 3))):  # LLaVA-like: short questions, longer answers
                turns.append({"from": "human", "value": sentence(rng, 6, 20)})
                turns.append({"from": "gpt", "value": " ".join(sentence(rng, 8, 25) for _ in range(rng.randint(1, 4)))})
            line = json.dumps({"id": f"{i:09d}", "conversations": turns})
            if broken and rng.random() < broken:
                kind = rng.randrange(4)
                line = (line[:len(line) // 2] if kind == 0 else
                        line.replace(turns[-1]["value"], "") if kind == 1 else
                        json.dumps({"id": f"{i:09d}", "conversations": [{"from": "gpt", "value": "Hi."}, *turns]})
                        if kind == 2 else line.replace('"human"', '"user"').replace('"gpt"', '"assistant"'))
            f.write(line + "\n")


def make_image_jsonl(root: Path, n: int) -> None:
    rng = random.Random(1)
    media = root / "images"
    media.mkdir(parents=True)
    # A handful of distinct photos-like JPEGs, copied: decoding cost is what matters, not their variety.
    import numpy as np

    base = []
    for s in range(8):
        g = np.random.default_rng(s)
        arr = np.clip(g.normal(128, 60, (480, 640, 3)), 0, 255).astype("uint8")
        base.append(jpeg_bytes(Image.fromarray(arr).resize((640, 480)), quality=88))
    with open(root / "img.jsonl", "w") as f:
        for i in range(n):
            (media / f"{i:06d}.jpg").write_bytes(base[i % len(base)])
            f.write(json.dumps({"id": i, "image": f"{i:06d}.jpg", "conversations": [
                {"from": "human", "value": "<image>\n" + sentence(rng, 6, 15)},
                {"from": "gpt", "value": sentence(rng, 5, 30)}]}) + "\n")


def cpu_timed(fn: Callable[[], None], into: list[float]) -> Callable[[], None]:
    """`fn`, adding the CPU seconds it used (this process's threads and the worker processes it waited for)."""
    def run() -> None:
        before = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime \
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
        fn()
        after = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime \
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
        into.append(after - before)
    return run


def parse_only(path: Path) -> None:
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)


def pillow_loop(root: Path, draft: bool = False) -> None:
    for p in sorted((root / "images").iterdir()):
        with Image.open(p) as im:
            if draft:
                im.draft(im.mode, (im.width // 8, im.height // 8))
            im.load()


def hf_convert(path: Path, work: Path) -> None:
    """`datasets`' JSON→Arrow: load (parse + Arrow conversion into its cache) and save, from a fresh cache."""
    import datasets

    shutil.rmtree(work, ignore_errors=True)
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(work / "cache"))
    ds.save_to_disk(str(work / "saved"))
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--images", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every contender")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        datasets = None  # type: ignore[assignment]
        print("(`datasets` is not installed: pip install 'mmdata[builders]' for its baseline)")
    try:
        text = tmp / "text.jsonl"
        make_text_jsonl(text, args.records)
        parse_only(text)  # warm the page cache for every contender

        def build_text(workers: int) -> None:
            out = tmp / "out_text"
            shutil.rmtree(out, ignore_errors=True)
            build("cambrian", CambrianOptions(input=[text]), BuildSettings(out=out, workers=workers))

        dirty = tmp / "dirty.jsonl"
        make_text_jsonl(dirty, args.records, broken=0.01)

        def build_dirty() -> None:
            shutil.rmtree(tmp / "out_dirty", ignore_errors=True)
            build("cambrian", CambrianOptions(input=[dirty]), BuildSettings(out=tmp / "out_dirty", workers=1))

        contenders = {"orjson parse only": lambda: parse_only(text),
                      "mmdata build, 1 worker": lambda: build_text(1),
                      "mmdata build, 2 workers": lambda: build_text(2),
                      "1 worker, 1% broken lines": build_dirty}
        if datasets is not None:
            contenders["datasets JSON→Arrow"] = lambda: hf_convert(text, tmp / "hf")
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        print(f"(a) text-only, {args.records:,} records  ", end="")
        t = rounds({name: cpu_timed(fn, cpu[name]) for name, fn in contenders.items()}, args.rounds)
        for name, seconds in t.items():
            rate(name, args.records, seconds)
        print("    CPU per record (all threads and worker processes), median:")
        for name, seconds in cpu.items():
            print(f"      {name:<32}{statistics.median(seconds) / args.records * 1e6:8.2f} µs")
        if datasets is not None:
            ratio("1 worker / datasets", t["mmdata build, 1 worker"], t["datasets JSON→Arrow"], ">= 1.0x")
            ratio("2 workers / datasets", t["mmdata build, 2 workers"], t["datasets JSON→Arrow"], "")
        ratio("1 worker / orjson parse only", t["mmdata build, 1 worker"], t["orjson parse only"], ">= 0.5x")
        ratio("1% broken lines / clean", t["1 worker, 1% broken lines"], t["mmdata build, 1 worker"], "")
        ratio("2 workers / orjson parse only", t["mmdata build, 2 workers"], t["orjson parse only"], "")

        make_image_jsonl(tmp / "img", args.images)
        pillow_loop(tmp / "img")

        def build_images() -> None:
            out = tmp / "out_img"
            shutil.rmtree(out, ignore_errors=True)
            build("cambrian", CambrianOptions(input=[tmp / "img" / "img.jsonl"], media_root=tmp / "img" / "images"),
                  BuildSettings(out=out))

        print(f"\n(b) {args.images:,} records with 640x480 JPEGs, 1 worker  ", end="")
        t = rounds({"Pillow open+load loop": lambda: pillow_loop(tmp / "img"),
                    "Pillow loop at 1/8 scale": lambda: pillow_loop(tmp / "img", draft=True),
                    "mmdata build": build_images}, args.rounds)
        for name, seconds in t.items():
            rate(name, args.images, seconds)
        ratio("mmdata build / Pillow loop", t["mmdata build"], t["Pillow open+load loop"], ">= 0.8x")
        ratio("mmdata build / 1/8-scale loop", t["mmdata build"], t["Pillow loop at 1/8 scale"], "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
