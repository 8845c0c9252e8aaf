"""Reading a built dataset beside the format's limit: a bare loop of `os.pread` + `orjson.loads` over the same
shard files at the same record offsets (`ds.shard_files()`; no Record, no checks, the offsets already in Python
lists).

Builds 200,000 text-only LLaVA-style records (shards of 10,000), then, as interleaved repeated rounds:
(a) random access: 20,000 `ds[i]` at random indices vs pread + loads at the same indices;
(b) iteration: `for r in ds` vs pread + loads of every record, shard by shard.
Targets: >= 0.8x the bare loop for both. `ds[i]` and iteration return `Record`s, decoded and type-checked by
msgspec straight from the stored line.
Usage: python bench/read.py [--records 200000] [--reads 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import rate, ratio, rounds
from convert import make_text_jsonl

import mmdata
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildSettings, build


def bare_table(ds: mmdata.Dataset) -> tuple[list[int], list[list[tuple[int, int, int]]]]:
    """Per shard, each record's (fd, offset, length), from `ds.shard_files()`: what the bare loop reads with."""
    fds, shards = [], []
    for f in ds.shard_files():
        fd = os.open(f.location, os.O_RDONLY)
        fds.append(fd)
        offsets = f.offsets.tolist()
        shards.append([(fd, a, b - a) for a, b in zip(offsets, offsets[1:])])
    return fds, shards


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_read_"))
    try:
        src = tmp / "llava.jsonl"
        make_text_jsonl(src, args.records)
        build("cambrian", CambrianOptions(input=[src]), BuildSettings(out=tmp / "ds"))
        ds = mmdata.open(tmp / "ds")
        assert isinstance(ds, mmdata.Dataset)
        fds, shards = bare_table(ds)
        flat = [row for shard in shards for row in shard]
        rng = random.Random(0)
        idx = [rng.randrange(len(ds)) for _ in range(args.reads)]
        ds[0]  # loads the offset index: part of opening

        def ours_random() -> None:
            for i in idx:
                ds[i]

        def bare_random() -> None:
            pread, loads = os.pread, orjson.loads
            for i in idx:
                fd, off, n = flat[i]
                loads(pread(fd, n, off))

        def ours_iterate() -> None:
            for _ in ds:
                pass

        def bare_iterate() -> None:
            pread, loads = os.pread, orjson.loads
            for shard in shards:
                for fd, off, n in shard:
                    loads(pread(fd, n, off))

        print(f"(a) random access, {args.reads:,} reads of {len(ds):,} records  ", end="")
        t = rounds({"ds[i]": ours_random, "pread + orjson.loads": bare_random}, args.rounds)
        for name, seconds in t.items():
            rate(name, args.reads, seconds)
        ratio("ds[i] / bare loop", t["ds[i]"], t["pread + orjson.loads"], ">= 0.8x")
        print(f"\n(b) iteration over {len(ds):,} records  ", end="")
        t = rounds({"for r in ds": ours_iterate, "pread + orjson.loads": bare_iterate}, args.rounds)
        for name, seconds in t.items():
            rate(name, len(ds), seconds)
        ratio("iteration / bare loop", t["for r in ds"], t["pread + orjson.loads"], ">= 0.8x")
        for fd in fds:
            os.close(fd)
        ds.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
