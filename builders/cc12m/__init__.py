"""CC12M (or CC3M) image-caption pairs → `t2i` conversations (optionally `caption` ones), downloaded with
img2dataset.

Where to get it: `cc12m.tsv` from github.com/google-research-datasets/conceptual-12m: no header, one
`url<TAB>caption` per line, 12.4 M lines (CC3M's `Train_GCC-training.tsv` is `caption<TAB>url`: `--columns
caption-url`). Captions hold `"` quotes that break CSV readers, `<PERSON>`, HTML entities, non-ASCII, even
tabs, so the TSV is split here on the tab next to the URL into `<download-dir>/rows.parquet` and img2dataset
gets that parquet.

`units` only plans (it writes nothing). `start`, called by the build in its main process before any shard is
written, starts img2dataset's Python API in a child process of its own (its spawn workers never re-import the
caller's script, its SIGINT handler stays out of ours), splits the TSV while the child imports, then lets it
download (a line "go" on its stdin) into `<download-dir>/shards/`:
webdataset `NNNNN.tar` with the successes, `NNNNN.parquet` with every row's `status` and `error_message`,
`NNNNN_stats.json` (kept there). Incremental mode: finished shards are never fetched again. img2dataset shard k
(`--shard-size` rows) becomes output shard k, converted once that shard's `_stats.json` exists (`ready`), so
conversion overlaps the download. With `--engine ray` img2dataset downloads with its own Ray distributor on the
build's cluster, and each conversion is a Ray task. Every TSV row becomes one record or one reject with
img2dataset's own error message, so `read == written + rejected == TSV lines`.

`--from-img2dataset DIR` converts an existing img2dataset webdataset folder instead of downloading. A download made
with img2dataset's default `resize_mode=border` (white letterbox squares) is refused unless `--allow-letterbox`:
the bands would become part of every generation target.

The package: `options` (the flags; a unit is one img2dataset shard), `tsv` (reading and splitting the TSV),
`download` (img2dataset in its child process, the download folder's identity, `ready`), `letterbox` (the
resize_mode=border check), `conversion` (a downloaded sample → a record; `tar_index` reads a shard's tar from its
headers with the builder API's `tar_spans`); here: planning (`units`), `start`, `records` (img2dataset shard k →
output shard k) and the `BUILDER`.
"""

from __future__ import annotations

import os

# Before any import of img2dataset: otherwise albumentations calls the package index on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from builders.cc12m.conversion import ANSWERS, CAPTION_PROMPTS, PERSON, PROMPTS, convert, tar_index, tsv_line
from builders.cc12m.download import DownloadError, check_download_dir, download_identity, ready, start_download
from builders.cc12m.letterbox import letterbox_evidence
from builders.cc12m.options import CC12MOptions, Unit
from builders.cc12m.tsv import convert_tsv, count_rows, header_lines, is_header, parse_line
from mmdata.build import Builder, Storage, temp_path
from mmdata.core.errors import InputError, NotFound
from mmdata.core.schema import Record, Reject

__all__ = ["ANSWERS", "BUILDER", "CAPTION_PROMPTS", "PERSON", "PROMPTS", "CC12MOptions", "DownloadError", "Unit",
           "convert", "convert_tsv", "header_lines", "is_header", "keep_stats", "letterbox_evidence", "parse_line",
           "ready", "records", "start", "tar_index", "units"]


# ---------------------------------------------------------------- units: plan; start: convert the TSV, download
def units(options: CC12MOptions, shard_size: int, limit: int | None) -> list[Unit]:
    """One unit per img2dataset shard. Planning only: nothing is written or started here (see `start`)."""
    if (options.input is None) == (options.from_img2dataset is None):
        raise InputError("cc12m: give exactly one of --input cc12m.tsv or --from-img2dataset DIR")
    if options.from_img2dataset is not None:
        return _existing_units(Path(options.from_img2dataset), limit, options.allow_letterbox)
    tsv, dl = Path(options.input), Path(options.download_dir)  # type: ignore[arg-type]
    if not tsv.is_file():
        raise NotFound(f"--input {tsv}: file not found (get cc12m.tsv as DATA.md explains)")
    check_download_dir(dl, download_identity(options, tsv, shard_size, limit))
    rows = dl / "rows.parquet"
    n_rows = pq.read_metadata(rows).num_rows if rows.is_file() else count_rows(tsv, limit)
    n_shards = -(-n_rows // shard_size)
    header = header_lines(tsv)  # img2dataset's recipe prepends `url<TAB>caption`: rows then start at line 2
    return [Unit(str(dl / "shards" / f"{k:05d}"), tsv.stem, 1 + header + k * shard_size,  # img2dataset's shard names
                 min(shard_size, n_rows - k * shard_size)) for k in range(n_shards)]


def start(options: CC12MOptions, shard_size: int, limit: int | None, units: list[Unit]) -> list[Unit]:
    """Called by the build before the first shard: claim the download folder for these settings, split the TSV
    into `rows.parquet` once, and start img2dataset when a shard is missing; the units then carry its pid."""
    if options.from_img2dataset is not None:
        return units
    tsv, dl = Path(options.input), Path(options.download_dir)  # type: ignore[arg-type]
    identity = download_identity(options, tsv, shard_size, limit)
    if not check_download_dir(dl, identity):
        dl.mkdir(parents=True, exist_ok=True)
        (dl / "download.json").write_text(json.dumps(identity, indent=2))
    rows = dl / "rows.parquet"
    downloaded = all(Path(u.shard + "_stats.json").is_file() for u in units)
    # img2dataset takes seconds to import: it starts first and waits for its input while the TSV is split.
    proc = None if downloaded else start_download(options, dl, shard_size, len(units))
    try:
        if not rows.is_file():
            tmp = temp_path(rows)
            convert_tsv(tsv, tmp, options.columns, limit)
            os.replace(tmp, rows)
    finally:
        if proc is not None:  # "go" once the input is in place; closed without it, the child downloads nothing
            with contextlib.suppress(BrokenPipeError):
                if rows.is_file():
                    proc.stdin.write(b"go\n")  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
    if proc is None:
        return units
    return [dataclasses.replace(u, pid=proc.pid) for u in units]


def _existing_units(folder: Path, limit: int | None, allow_letterbox: bool = False) -> list[Unit]:
    if not folder.is_dir():
        raise NotFound(f"--from-img2dataset {folder}: folder not found")
    done = sorted(p.name[: -len("_stats.json")] for p in folder.glob("*_stats.json"))
    partial = sorted(p.stem for p in folder.glob("*.parquet") if p.stem not in set(done))
    if partial:
        raise DownloadError(f"--from-img2dataset {folder}: shard(s) {', '.join(partial[:10])} have no "
                            "_stats.json (img2dataset was interrupted); rerun img2dataset there, or delete "
                            "those shards' files")
    if not done:
        raise InputError(f"--from-img2dataset {folder}: no img2dataset shards (NNNNN_stats.json) found")
    if not allow_letterbox and (why := letterbox_evidence(folder, done)):
        raise InputError(f"--from-img2dataset {folder}: made with resize_mode=border ({why}): every generation "
                         "target would carry white letterbox bands. Re-download with img2dataset "
                         "--resize_mode keep_ratio (or let `mmdata build cc12m --input cc12m.tsv` download it), "
                         "or pass --allow-letterbox to convert it as it is")
    # All shards but the last hold number_sample_per_shard rows: the first one's count tells it.
    per_shard = json.loads((folder / f"{done[0]}_stats.json").read_text()).get("count") or 0
    out: list[Unit] = []
    left = limit
    for name in done:
        if not (folder / f"{name}.tar").is_file() or not (folder / f"{name}.parquet").is_file():
            raise InputError(f"--from-img2dataset {folder}: shard {name} lacks its .tar or .parquet; only "
                             "img2dataset's output_format=webdataset is supported")
        n = pq.read_metadata(folder / f"{name}.parquet").num_rows
        n = n if left is None else min(n, left)
        if n == 0:
            break
        out.append(Unit(str(folder / name), folder.name, 0, n, per_shard=per_shard))
        left = None if left is None else left - n
    return out


# ------------------------------------------------------------ records: img2dataset shard k → output shard k
def records(options: CC12MOptions, unit: Unit) -> Iterator[Record | Reject]:
    table = pq.read_table(unit.shard + ".parquet")
    rows = table.to_pylist()
    shard = Path(unit.shard).name
    with open(unit.shard + ".tar", "rb") as tar:
        images, damage = tar_index(tar, unit.shard + ".tar")
        if unit.first:
            by_line = {r["line"]: r for r in rows}
            order: list[tuple[int, dict[str, Any] | None]] = [
                (line, by_line.get(line)) for line in range(unit.first, unit.first + unit.count)]
        else:
            order = [(0, r) for r in sorted(rows, key=lambda r: r["key"])[: unit.count]]
        for line, row in order:
            ref = f"{unit.label}:{line}" if line else f"cc12m:{tsv_line(row, shard, unit.per_shard)}"  # type: ignore
            if row is None:
                yield Reject(ref, "img2dataset wrote no status for this row (a per-sample error; see "
                                  "img2dataset.log in the download folder)")
            elif row.get("issue"):
                yield Reject(ref, row["issue"])
            elif row["status"] != "success":
                yield Reject(ref, f"{row['status']}: {row['error_message']}")
            elif row["key"] not in images:
                yield Reject(ref, damage or f"img2dataset reported success but {shard}.tar has no image for key "
                                            f"{row['key']}")
            else:
                offset, size, ext = images[row["key"]]
                tar.seek(offset)
                yield convert(options, row, tar.read(size), ext, unit.label, line, shard, ref)


def keep_stats(options: CC12MOptions, out: Storage) -> None:
    """Copy img2dataset's per-shard `_stats.json` into `<out>/img2dataset/`: the dataset carries its download report
    (success rate, error counts per reason) even after the download folder is deleted."""
    folder = Path(options.from_img2dataset) if options.from_img2dataset else Path(options.download_dir) / "shards"  # type: ignore[arg-type]
    for stats in sorted(folder.glob("*_stats.json")):
        out.write_bytes(f"img2dataset/{stats.name}", stats.read_bytes())


BUILDER = Builder(
    name="cc12m",
    help="CC12M/CC3M url+caption TSV → images downloaded with img2dataset → t2i (and caption) conversations.",
    options=CC12MOptions,
    units=units,
    records=records,
    start=start,
    ready=ready,
    generates_media=True,
    finish=keep_stats,
    reads_urls=False,
)
