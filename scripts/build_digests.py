"""Build every sample source of `mmdata.testing` (plus seeded variants), mix them, dedup and decontaminate them,
and print one sha256 per output file (datasets, the mixture, the views).

For "outputs are byte-identical" checks across two checkouts: run it under each (same WORK directory, so input
paths in the manifests match) and diff the two listings.

    PYTHONPATH=<checkout A> python scripts/build_digests.py WORK > a.txt
    PYTHONPATH=<checkout B> python scripts/build_digests.py WORK > b.txt && diff a.txt b.txt

The sources are generated on the first run and reused after (`WORK/sources/<name>/args.json`): cc12m's TSV names
a loopback port that changes per run, so its download is made once and later runs convert that same download.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# (output name, builder, module with demo_source or None, demo_source kwargs, extra flags)
BUILDS = [
    ("cambrian", "cambrian", "mmdata.testing.llava", {}, []),
    ("cambrian_wds", "cambrian", "mmdata.testing.llava", {}, ["--format", "both", "--copy-media"]),
    ("cc12m", "cc12m", "mmdata.testing.cc12m", {}, []),
    ("cc12m_captions", "cc12m", "mmdata.testing.cc12m", {}, ["--caption-ratio", "0.5", "--seed", "3"]),
    ("video_qa", "video", "mmdata.testing.video", {"task": "video_qa"}, []),
    ("frame_pred", "video", "mmdata.testing.video", {"task": "frame_pred"}, []),
    ("frame_pred_seed", "video", "mmdata.testing.video", {"task": "frame_pred"}, ["--seed", "7"]),
    ("frame_pred_variants", "video", "mmdata.testing.video", {"task": "frame_pred"}, ["--variants", "3"]),
    ("visual_cot", "visual_cot", "mmdata.testing.visual_cot", {}, []),
    ("visual_cot_seed", "visual_cot", "mmdata.testing.visual_cot", {}, ["--seed", "5", "--crop-format", "png"]),
    ("vstar", "vstar", "mmdata.testing.vstar", {}, []),
    ("vstar_seed", "vstar", "mmdata.testing.vstar", {}, ["--seed", "4", "--image-format", "png"]),
    ("instructpix2pix", "instructpix2pix", "mmdata.testing.instructpix2pix", {}, ["--format", "both"]),
    ("aurora", "aurora", None, {}, []),
    ("aurora_seed", "aurora", None, {}, ["--seed", "9"]),
]


@contextlib.contextmanager
def _aurora(dir: Path) -> Iterator[list[str]]:
    from mmdata.testing.instructpix2pix import write_aurora

    items = [{"instruction": [f"phrasing {k} of edit {i}" for k in range(4)], "input": f"imgs/{i}_a.png",
              "output": f"imgs/{i}_b.png"} for i in range(12)]
    items.append({"instruction": "a single instruction", "input": "imgs/x_a.png", "output": "imgs/x_b.png"})
    yield ["--input", str(write_aurora(dir, items)), "--media-root", str(dir)]


def _source(module: str | None, dir: Path, kwargs: dict) -> contextlib.AbstractContextManager[list[str]]:
    if module is None:
        return _aurora(dir)
    return importlib.import_module(module).demo_source(dir, **kwargs)


def _build(builder: str, args: list[str], out: Path) -> None:
    cmd = [sys.executable, "-m", "mmdata.cli", "build", builder, *args, "--out", str(out), "--overwrite", "--quiet"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def digests(root: Path) -> Iterator[str]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name.endswith(".done.json"):  # all but `node`: the host and PID that wrote the shard
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "node"}, sort_keys=True).encode()
        yield f"{hashlib.sha256(data).hexdigest()}  {path.relative_to(root)}"


def _mmdata(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mmdata.cli", *args], check=True, stdout=subprocess.DEVNULL)


RECIPE = """name: digests
seed: 3
size: 400
filters: {max_media: 40}
sources:
  - {path: data/cambrian, weight: 0.5}
  - {path: data/cc12m, weight: 0.3, max: 30}
  - {path: data/visual_cot, weight: 0.2}
  - {path: data/video_qa, epochs: 1.5}
  - {path: data/instructpix2pix, epochs: 2, filters: {min_side: 8}}
"""


def views(work: Path) -> Iterator[str]:
    """A mixture of the builds, a dedup view over two of them and a decontamination view of that view."""
    (work / "recipe.yaml").write_text(RECIPE)
    _mmdata("mix", str(work / "recipe.yaml"), "--out", str(work / "views" / "mixture"))
    cache = str(work / "signatures")
    _mmdata("dedup", str(work / "data" / "cambrian"), str(work / "data" / "cambrian_wds"), str(work / "data" / "vstar"),
            "--out", str(work / "views" / "dedup"), "--cache", cache)
    evals = work / "evals.jsonl"
    import mmdata

    question = mmdata.open(work / "data" / "cambrian")[0].conversations[0].value.replace("<image>", "").strip()
    evals.write_text(json.dumps({"question": question + " and some more words to pass the minimum"}) + "\n")
    _mmdata("decontaminate", str(work / "views" / "dedup"), "--against", str(evals), "--against",
            str(work / "sources" / "visual_cot"), "--out", str(work / "views" / "clean"), "--cache", cache,
            "--min-words", "3", "--ngram", "3")
    for name in ("mixture", "dedup", "clean"):
        for line in digests(work / "views" / name):
            yield f"views/{name}/{line}"


def main(work: Path) -> None:
    for name, builder, module, kwargs, flags in BUILDS:
        src = work / "sources" / (kwargs.get("task") or builder)  # variants share their source
        saved = src / "args.json"
        out = work / "data" / name
        if saved.is_file():
            _build(builder, [*json.loads(saved.read_text()), *flags], out)
        else:
            with _source(module, src, kwargs) as args:
                _build(builder, [*args, *flags], out)
                saved.write_text(json.dumps(args))
        for line in digests(out):
            print(f"{name}/{line}")
    for line in views(work):
        print(line)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve())
