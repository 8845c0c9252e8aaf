"""Benchmark `mmdata dedup` on 1,000,000 text records and 100,000 images against a plain loop over the same calls.

    .venv/bin/python bench/dedup.py [--out bench_out/dedup] [--text-records 1000000] [--images 100000]
                                    [--rounds 3] [--workers 2]

Two datasets, each with 5 % planted duplicates (a copy of the previous record with its whitespace changed; for
images, the previous image re-encoded at another JPEG quality with the same caption):
- text: `mmdata dedup --images none --text minhash:0.8`;
- images: `mmdata dedup --images phash:4 --text minhash:0.8` (the defaults).
The baseline is the loop one writes without mmdata, over the same library calls: read each record, MinHash its
words (`datasketch.MinHash.update_batch`, same shingles), query then insert a `datasketch.MinHashLSH` at the same
threshold, and for images compute the same `imagehash.phash` and compare it with each candidate's.
Each side runs in a fresh subprocess (ours with an empty signature cache, so it hashes everything), rounds
interleave the two, and each figure is the median over rounds with the min–max spread. Peak RSS is the driver's
and, for ours, the largest worker's. Both sides must find the same number of duplicates.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mmdata  # noqa: E402

SHARD = 10_000  # the build default: a worker hashes one shard at a time
VOCAB = [f"w{k}" for k in range(5000)]


def _texts(n: int, seed: int) -> list[str]:
    words = np.random.default_rng(seed).integers(0, len(VOCAB), size=(n, 24))
    return [" ".join(VOCAB[w] for w in row) for row in words.tolist()]


def is_built(path: Path) -> bool:
    try:
        mmdata.open(path)
    except mmdata.NotFound:
        return False
    return True


def write_dataset(out: Path, n: int, images: bool) -> None:
    """n records, every 20th a duplicate of the one before, through `mmdata.DatasetWriter` (images beside `out`)."""
    if is_built(out):
        return
    from mmdata import Media, Record, Turn
    from mmdata.testing.images import jpeg_bytes
    from mmdata.testing.quality import shapes_image

    media = out.with_name(f"{out.name}-images")
    media.mkdir(parents=True, exist_ok=True)
    questions, answers = _texts(n, 1), _texts(n, 2)
    with mmdata.DatasetWriter(out, media_root=media if images else None, shard_size=SHARD, name="bench") as w:
        for lo in range(0, n, SHARD):
            batch = []
            for i in range(lo, min(n, lo + SHARD)):
                dup = i % 20 == 19
                k = i - 1 if dup else i
                q = questions[k].replace(" ", "  ", 3) if dup else questions[k]
                record = Record(f"r{i}", "bench", "vqa" if images else "text",
                                [Turn("human", ("<image>\n" if images else "") + q), Turn("gpt", answers[k])])
                if images:
                    (media / f"{i}.jpg").write_bytes(jpeg_bytes(shapes_image(k, 64, 48), quality=70 if dup else 90))
                    record.media = [Media(f"{i}.jpg", "image", 64, 48)]
                batch.append(record)
            w.add_many(batch)


# ---------------------------------------------------------------------------------------------- the two sides
def run_ours(data: Path, work: Path, images: bool, workers: int) -> dict:
    from mmdata.quality.dedup import DedupOptions, dedup

    shutil.rmtree(work, ignore_errors=True)
    opts = DedupOptions(images="phash:4" if images else "none", text="minhash:0.8", workers=workers,
                        cache=work / "cache")
    t = time.perf_counter()
    manifest = dedup([data], work / "view", opts)
    return {"seconds": time.perf_counter() - t, "removed": manifest.counts["removed"]}


def run_baseline(data: Path, images: bool) -> dict:
    from datasketch import MinHash, MinHashLSH

    from mmdata.quality.signatures import conversation_words, image_phash, shingles

    t = time.perf_counter()
    ds = mmdata.open(data)
    lsh, perm = MinHashLSH(threshold=0.8, num_perm=128), MinHash(num_perm=128, seed=1)
    phashes: dict[int, int] = {}
    removed = 0
    for i, record in enumerate(ds):
        m = MinHash(num_perm=128, permutations=perm.permutations, scheme=perm.scheme)
        m.update_batch(shingles(conversation_words(record), 3))
        ph = image_phash(ds.media_bytes(record, 0)) if images else None
        hits = [k for k in lsh.query(m) if not images or int(ph ^ phashes[k]).bit_count() <= 4]  # type: ignore[operator]
        if hits:
            removed += 1
            continue
        lsh.insert(i, m)
        if images:
            phashes[i] = ph  # type: ignore[assignment]
    return {"seconds": time.perf_counter() - t, "removed": removed}


def _child(args: argparse.Namespace) -> None:
    data, images = Path(args.data), args.kind == "images"
    result = run_ours(data, Path(args.work), images, args.workers) if args.side == "ours" else \
        run_baseline(data, images)
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["workers_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def measure(side: str, kind: str, data: Path, work: Path, workers: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", side, "--kind", kind, "--data", str(data),
                          "--work", str(work), "--workers", str(workers)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "dedup")
    ap.add_argument("--text-records", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", choices=["ours", "baseline"])
    ap.add_argument("--kind", choices=["text", "images"])
    ap.add_argument("--data")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        args.side = args.child
        return _child(args)

    for kind, n in (("text", args.text_records), ("images", args.images)):
        if n == 0:
            continue
        data = args.out / f"{kind}-{n}"
        t = time.perf_counter()
        write_dataset(data, n, kind == "images")
        print(f"\n{kind}: {n:,} records ({n // 20:,} planted duplicates), ready in {time.perf_counter() - t:.0f} s")
        runs: dict[str, list[dict]] = {"baseline": [], "ours": []}
        for _ in range(args.rounds):
            for side in ("baseline", "ours"):
                runs[side].append(measure(side, kind, data, args.out / "work", args.workers))
        base_rate = [n / r["seconds"] for r in runs["baseline"]]
        print(f"{args.rounds} interleaved rounds; median (min-max); ours with {args.workers} workers, empty cache")
        for side in ("baseline", "ours"):
            rates = [n / r["seconds"] for r in runs[side]]
            ratio = [a / b for a, b in zip(rates, base_rate)]
            rss = max(r["rss_mb"] for r in runs[side])
            workers = max(r["workers_rss_mb"] for r in runs[side])
            label = "plain loop (datasketch LSH + imagehash)" if side == "baseline" else "mmdata dedup"
            print(f"  {label:<42} {statistics.median(rates):>9,.0f} rec/s ({min(rates):,.0f}-{max(rates):,.0f})  "
                  f"{statistics.median(ratio):.2f}x  peak RSS {rss:,.0f} MB"
                  + (f" (+ workers {workers:,.0f} MB each at most)" if side == "ours" else "")
                  + f"  removed {runs[side][0]['removed']:,}")


if __name__ == "__main__":
    main()
