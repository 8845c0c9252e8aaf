"""Reading a dataset from S3 vs local disk, same data, one run, against an S3 server on the loopback (moto).

A webdataset-format dataset (records with their JPEG bytes in tars) is built once to local disk and once to
s3://bench/ds (the same bytes). Then, as interleaved repeated pairs (median and spread of each):
- random access: `ds[i]` for random i; requests per record counted at the server (target: 1);
- sequential iteration: `for record in ds` (target: S3 >= 0.8x local);
- `MixtureLoader` batches over a one-source mixture, shuffled (target: S3 >= 0.5x local);
- sequential, ours from S3 vs `webdataset.WebDataset` streaming the same tars from the same server over HTTP
  (target: >= 1x).
Usage: python bench/remote_read.py [--records 4000] [--shard-size 1000] [--pairs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmdata.testing.s3 import S3Server  # noqa: E402


def make_source(root: Path, records: int) -> tuple[Path, Path]:
    """A Cambrian-style JSONL of `records` image records over a pool of 200 JPEGs (~10 KB each)."""
    from mmdata.testing.images import write_image

    media = root / "images"
    for k in range(200):
        write_image(media / f"{k:04d}.jpg", 128, 96, seed=k)
    src = root / "src.jsonl"
    src.write_text("".join(json.dumps({
        "id": f"r{i}", "image": f"{i % 200:04d}.jpg",
        "conversations": [{"from": "human", "value": f"<image>\nWhat is in picture {i}?"},
                          {"from": "gpt", "value": "Noise, in colour. " * (1 + i % 5)}]}) + "\n"
        for i in range(records)))
    return src, media


def timed(fn: Callable[[], int]) -> float:
    """Items per second of one call of `fn` (which returns how many items it produced)."""
    t = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t)


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pairs(name: str, ours: Callable[[], int], base: Callable[[], int], n: int, target: float | None,
          unit: str) -> None:
    a, b = [], []
    for _ in range(n):  # interleaved: a slow moment of the machine hits both sides
        a.append(timed(ours))
        b.append(timed(base))
    ratio = [x / y for x, y in zip(a, b)]
    print(f"{name:44}{statistics.median(a):>12,.0f}{statistics.median(b):>12,.0f} {unit:10}"
          f"{statistics.median(ratio):6.2f}x  [{min(ratio):.2f}-{max(ratio):.2f}]  "
          + (f"target >= {target}x" if target is not None else "bound: one request per record"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--random", type=int, default=500, help="random ds[i] per measurement")
    args = ap.parse_args()

    import webdataset as wds

    import mmdata
    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import BuildSettings, build
    from mmdata.mix.planner import mix

    with tempfile.TemporaryDirectory(prefix="bench_remote_") as tmp, S3Server(process=True) as s3:
        root = Path(tmp)
        s3.bucket("bench")
        src, media = make_source(root, args.records)
        options = CambrianOptions(input=[src], media_root=media)
        for out in (root / "ds", "s3://bench/ds"):
            build("cambrian", options, BuildSettings(out=out, format="wds", shard_size=args.shard_size))
            recipe = root / f"mix{len(str(out))}.yaml"
            recipe.write_text(f'seed: 0\nsources:\n  - {{path: "{out}", epochs: 1}}\n')
            mix(recipe, f"{out}-mixture")
        local, remote = mmdata.open(root / "ds"), mmdata.open("s3://bench/ds")
        assert isinstance(local, mmdata.Dataset) and isinstance(remote, mmdata.Dataset)
        local_files = local.shard_files()
        mb = sum(f.bytes for f in local_files) / 1e6
        print(f"{len(local):,} records in {len(local_files)} tar shards, {mb:.1f} MB; server {s3.url}")

        # ---- requests per record
        shards = [str(f.location) for f in remote.shard_files()]  # the offset indexes: fetched once, here
        rng = random.Random(0)
        rows = [rng.randrange(len(local)) for _ in range(args.random)]
        before = s3.count("GET")
        assert [remote.raw(i) for i in rows] == [local.raw(i) for i in rows]
        print(f"random ds[i]: {(s3.count('GET') - before) / len(rows):.2f} GET requests per record (target 1)\n")

        import fsspec

        fs = fsspec.filesystem("s3")  # presigned URLs: what `aws s3 presign` prints, for curl (webdataset's http)
        http = [fs.sign(url, expiration=3600) for url in shards]

        def random_reads(ds: mmdata.Dataset) -> Callable[[], int]:
            return lambda: len([ds[i] for i in rows])

        def iterate(ds: mmdata.Dataset) -> Callable[[], int]:
            return lambda: sum(1 for _ in ds)

        def batches(where: object) -> Callable[[], int]:
            loader = mmdata.MixtureLoader(mmdata.RecordDataset(mmdata.open(f"{where}-mixture")), batch_size=64,
                                          shuffle=True, collate_fn=mmdata.collate_list)
            return lambda: sum(len(b) for b in loader)


        def batches_cached(where: str, cache: Path) -> Callable[[], int]:
            loader = mmdata.MixtureLoader(mmdata.RecordDataset(mmdata.open(f"{where}-mixture", cache_dir=cache)),
                                          batch_size=64, shuffle=True, collate_fn=mmdata.collate_list)
            return lambda: sum(len(b) for b in loader)

        def bare_requests(fs: object, path: str) -> Callable[[], float]:
            return lambda: 64 * 20 / _seconds(lambda: [fs.cat_ranges([path] * 64, list(range(64)),  # type: ignore[attr-defined]
                                                                       list(range(1, 65))) for _ in range(20)])

        def webdataset_stream() -> int:
            return sum(1 for _ in wds.WebDataset(http, shardshuffle=False))

        print(f"{'':44}{'ours':>12}{'baseline':>12} {'':10}{'ratio':>6}")
        pairs("random ds[i]: S3 vs local", random_reads(remote), random_reads(local), args.pairs, None, "rec/s")
        pairs("sequential: S3 vs local", iterate(remote), iterate(local), args.pairs, 0.8, "rec/s")
        whole = statistics.median(mb / _seconds(lambda: fs.cat(shards)) for _ in range(3))
        ours = statistics.median(mb / _seconds(iterate(remote)) for _ in range(3))
        print(f"{'  the server alone: every shard at once':44}{whole:>12,.0f}{'':12} MB/s  (ours: {ours:,.0f} MB/s)")
        pairs("MixtureLoader batches: S3 vs local", batches("s3://bench/ds"), batches(root / "ds"), args.pairs, 0.5,
              "rec/s")
        cached = batches_cached("s3://bench/ds", root / "cache")
        cached()  # the first epoch fills the block cache
        pairs("  the same, repeated epochs (cache_dir)", cached, batches(root / "ds"), args.pairs, 0.5, "rec/s")
        floor = bare_requests(fs, shards[0])
        print(f"{'  the server alone: 64 concurrent 1-byte GETs':44}{floor():>12,.0f}{'':12} requests/s")
        pairs("sequential from S3: ours vs webdataset", iterate(remote), webdataset_stream, args.pairs, 1.0, "rec/s")
        print("\nthe S3 rows are bounded by the server: compare them with its own requests/s and MB/s above")


if __name__ == "__main__":
    main()
