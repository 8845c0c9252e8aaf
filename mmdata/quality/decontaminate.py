"""`mmdata decontaminate INPUT... --against EVAL --out VIEW`: drop training records that leak evaluation data.

An EVAL is a folder (its images, and every .json/.jsonl in it) or one JSON/JSONL file (its questions, and the images
it names when they exist next to it). Questions are read from LLaVA-style `conversations` (human turns) or from a
`question` / `text` / `prompt` key. A training record leaks when
- one of its images is within pHash distance D of an eval image (identical bytes included), or
- one of its human turns shares an n-gram of words (13 by default, the common practice) with an eval question.
  An eval question shorter than n words leaks only when a human turn equals it, and only if it has at least
  `min_words` words: "What is this?" is in every training set and says nothing about a leak.
Words are lower-cased runs of letters and digits, so punctuation, case and `<image>` placeholders do not matter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.core.errors import InputError, NotFound
from mmdata.format.manifests import ViewManifest
from mmdata.quality.dedup import _chunks
from mmdata.quality.options import DecontaminateOptions
from mmdata.quality.selection import Inputs, Removal
from mmdata.quality.signatures import ShardTask, SignatureParams, image_phash, iter_words, key64, map_shards, shard_tasks
from mmdata.read.dataset import Dataset
from mmdata.storage.location import Location

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


_QUESTION_KEYS = ("question", "text", "prompt", "instruction")


@dataclass
class EvalSet:
    name: str
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (path, bytes)
    questions: list[tuple[str, str]] = field(default_factory=list)  # (where, text)


def load_eval(path: Path) -> EvalSet:
    path = Path(path)
    if not path.exists():
        raise NotFound(f"--against {path}: not found; give a folder of images and/or a JSON/JSONL of questions")
    ev = EvalSet(path.stem if path.is_file() else path.name)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    seen: set[Path] = set()
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            seen.add(f.resolve())
            ev.images.append((str(f.relative_to(path) if path.is_dir() else f), f.read_bytes()))
    for f in files:
        if f.suffix.lower() not in (".json", ".jsonl"):
            continue
        for k, item in enumerate(_items(f)):
            where = f"{f.name}:{item.get('id', item.get('question_id', k))}"
            ev.questions += [(where, q) for q in _questions(item)]
            for ref in _image_refs(item):
                img = (f.parent / ref).resolve()
                if img.suffix.lower() in IMAGE_SUFFIXES and img.is_file() and img not in seen:
                    seen.add(img)
                    ev.images.append((ref, img.read_bytes()))
    if not ev.images and not ev.questions:
        raise InputError(f"--against {path}: no image ({', '.join(sorted(IMAGE_SUFFIXES))}) and no question found")
    return ev


def _items(f: Path) -> list[dict]:
    text = f.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if f.suffix.lower() == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise InputError(f"--against {f}: not valid JSON ({e}); give a JSON list or a JSONL of questions") from None
    data = data if isinstance(data, list) else [data]
    return [x for x in data if isinstance(x, dict)]


def _questions(item: dict) -> list[str]:
    turns = item.get("conversations")
    if isinstance(turns, list):
        return [t["value"] for t in turns if isinstance(t, dict) and t.get("from") == "human"
                and isinstance(t.get("value"), str)]
    return [item[k] for k in _QUESTION_KEYS if isinstance(item.get(k), str)][:1]


def _image_refs(item: dict) -> list[str]:
    image = item.get("image")
    return [image] if isinstance(image, str) else [x for x in image if isinstance(x, str)] if isinstance(image, list) else []


# ---------------------------------------------------------------------------------------------- text
@dataclass(frozen=True)
class TextIndex:
    """Hashes of eval n-grams and of whole short questions, each with what it came from."""

    n: int
    grams: dict[int, str]
    wholes: dict[int, str]


def text_index(evals: list[EvalSet], n: int, min_words: int) -> tuple[TextIndex, int]:
    grams, wholes, skipped = {}, {}, 0
    for ev in evals:
        for where, q in ev.questions:
            words = list(iter_words(q))
            label = f"{ev.name}|{where}"
            if len(words) >= n:
                for i in range(len(words) - n + 1):
                    grams.setdefault(key64(" ".join(words[i:i + n]).encode()), label)
            elif len(words) >= min_words:
                wholes.setdefault(key64(" ".join(words).encode()), label)
            else:
                skipped += 1
    return TextIndex(n, grams, wholes), skipped


@dataclass(frozen=True)
class _TextScan:
    index: TextIndex

    def __call__(self, task: ShardTask) -> list[tuple[int, str]]:
        """(row in shard, matched eval question) of each record of the shard whose human turns leak."""
        ds = Dataset(task.root, task.form)  # type: ignore[arg-type]
        n, grams, wholes = self.index.n, self.index.grams, self.index.wholes
        out = []
        for row, data in enumerate(ds.shards.scan(task.shard)):
            for turn in ds.decode(data).conversations:
                if turn.role != "human":
                    continue
                words = list(iter_words(turn.value))
                hit = wholes.get(key64(" ".join(words).encode()))
                for i in range(len(words) - n + 1):
                    if hit is not None:
                        break
                    hit = grams.get(key64(" ".join(words[i:i + n]).encode()))
                if hit is not None:
                    out.append((row, hit))
                    break
        return out


# ---------------------------------------------------------------------------------------------- images
def _image_hits(inputs: Inputs, evals: list[EvalSet], distance: int) -> dict[tuple[int, int], str]:
    """(base dataset, row) → the eval image one of its media matches."""
    labels, phashes, shas = [], [], []
    for ev in evals:
        for ref, data in ev.images:
            ph = image_phash(data)
            labels.append(f"{ev.name}|{ref}")
            phashes.append(ph if ph is not None else 0)
            shas.append(key64(data))
    hits: dict[tuple[int, int], str] = {}
    if not labels:
        return hits
    eval_ph, eval_sha = np.array(phashes, dtype=np.uint64), np.array(shas, dtype=np.uint64)
    for d, sig in enumerate(inputs.sigs):
        start, sha, ph, ok = sig.media()
        by_sha = {int(v): e for e, v in enumerate(eval_sha.tolist())}
        same = np.flatnonzero(np.isin(sha, eval_sha))
        pairs = [np.array([same, [by_sha[int(v)] for v in sha[same].tolist()]], dtype=np.int64).reshape(2, -1)]
        for shift, bits in _chunks(distance):  # media and eval images that agree on this piece, then verified
            mask = np.uint64((1 << bits) - 1)
            mine, theirs = (ph >> np.uint64(shift)) & mask, (eval_ph >> np.uint64(shift)) & mask
            order = np.argsort(theirs, kind="stable")
            sorted_theirs = theirs[order]
            media = np.flatnonzero(ok)
            lo = np.searchsorted(sorted_theirs, mine[media], side="left")
            n = np.searchsorted(sorted_theirs, mine[media], side="right") - lo
            media, lo, n = media[n > 0], lo[n > 0], n[n > 0]
            m = np.repeat(media, n)
            e = order[np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
            close = np.bitwise_count(ph[m] ^ eval_ph[e]) <= distance
            pairs.append(np.stack([m[close], e[close]]).astype(np.int64))
        for m, e in np.concatenate(pairs, axis=1).T.tolist():
            row = int(np.searchsorted(start, m, side="right") - 1)
            hits.setdefault((d, row), labels[e])
    return hits


def decontaminate(paths: list[Path], against: list[Path], out: Location, opts: DecontaminateOptions,
                  storage_options: dict[str, Any] | None = None) -> ViewManifest:
    """Write the view of `paths` without the records that leak any of `against` to `out`, a folder or a URL (see the
    module docstring)."""
    if not against:
        raise InputError("no eval set: pass --against EVAL (a folder of images and/or a JSON/JSONL of questions)")
    evals = [load_eval(p) for p in against]
    names = [e.name for e in evals]
    for e in evals:
        e.name = e.name if names.count(e.name) == 1 else f"{e.name}#{names.index(e.name)}"
    params = SignatureParams()
    inputs = Inputs(paths)
    inputs.load_signatures(opts.cache, params, opts.workers)
    hits = {key: ("image", label) for key, label in _image_hits(inputs, evals, opts.distance).items()}
    index, skipped = text_index(evals, opts.ngram, opts.min_words)
    if index.grams or index.wholes:
        for d, ds in enumerate(inputs.bases):
            tasks = shard_tasks(ds, opts.cache or Path(), params)
            for task, found in zip(tasks, map_shards(_TextScan(index), tasks, opts.workers)):
                first = int(ds.shards.starts[task.shard])
                for row, label in found:
                    hits.setdefault((d, first + row), ("question", label))
    removals = []
    for p in range(len(inputs)):
        hit = hits.get((int(inputs.base[p]), int(inputs.row[p])))
        if hit is not None:
            what, label = hit
            ev, item = label.split("|", 1)
            reason = f"image matches {ev} image {item}" if what == "image" else \
                f"human turn shares a {opts.ngram}-gram with {ev} question {item}"
            removals.append(Removal(p, reason, f"{ev}: {what}", {"eval": ev, "item": item}))
    params_out = {"against": [str(Path(p).resolve()) for p in against], "distance": opts.distance,
                  "ngram": opts.ngram, "min_words": opts.min_words, "questions_skipped_as_too_short": skipped,
                  "eval_images": sum(len(e.images) for e in evals),
                  "eval_questions": sum(len(e.questions) for e in evals)}
    return inputs.write(out, "decontaminate", params_out, removals, storage_options)
