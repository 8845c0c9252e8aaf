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
"""

from __future__ import annotations

import os

# Before any import of img2dataset: otherwise albumentations calls the package index on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import atexit
import contextlib
import dataclasses
import html
import io
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from builders._common import Draws
from mmdata.build import Builder, Storage, ray_address, temp_path
from mmdata.core.errors import InputError, NotFound
from mmdata.core.options import opt
from mmdata.core.schema import IMAGE, Media, Record, Reject, Turn

PERSON = "<PERSON>"
# MetaMorph's pool was not released; its one example is the first pair. Varied wording keeps the model from
# keying generation on one template.
PROMPTS = (
    "Generate an image of {c}",
    "Create an image based on this description: {c}",
    "Please draw a picture of the following: {c}",
    "Can you make an image that matches this caption? {c}",
    "Show me an image of: {c}",
    "{c}\nGenerate an image of this.",
    "Produce a picture described as follows: {c}",
    "I'd like to see an image of this: {c}",
    "Paint a picture for this caption: {c}",
    "Generate a photo that fits this text: {c}",
)
ANSWERS = (
    "Here is an image based on your request: <image>",
    "Sure, here it is: <image>",
    "Here's the image you asked for: <image>",
    "<image>",
    "Of course. <image>",
    "Here is a picture matching that description: <image>",
    "Here you go: <image>",
)
CAPTION_PROMPTS = (
    "<image>\nDescribe this image briefly.",
    "<image>\nWrite a short caption for this image.",
    "<image>\nWhat is shown in this picture?",
    "<image>\nGive a one-sentence description of the image.",
    "What does this image show?\n<image>",
)
_ROWS_SCHEMA = pa.schema([("line", pa.int64()), ("url", pa.string()), ("caption", pa.string()),
                          ("issue", pa.string())])


class DownloadError(InputError):
    """img2dataset did not finish: a ValueError so the CLI shows the one-line fix (rerun to resume)."""


@dataclass
class CC12MOptions:
    input: Path | None = opt(None, help="cc12m.tsv: headerless url<TAB>caption lines (CC3M: see --columns)")
    from_img2dataset: Path | None = opt(None, help="Convert this existing img2dataset webdataset output "
                                                   "folder (NNNNN.tar/.parquet/_stats.json) instead of "
                                                   "downloading")
    download_dir: Path | None = opt(None, help="img2dataset's working folder; a rerun resumes there "
                                               "[default: <input folder>/<input stem>_img2dataset]")
    columns: Literal["url-caption", "caption-url"] = opt("url-caption", help="TSV column order: CC12M is "
                                                                             "url-caption, CC3M caption-url")
    image_size: int = opt(384, help="img2dataset --image_size: target side in pixels")
    resize_mode: Literal["keep_ratio", "keep_ratio_largest", "center_crop", "border", "no"] = opt(
        "keep_ratio", help="img2dataset resize mode; keep_ratio (smaller side = image size, no letterbox) "
                           "suits generation targets")
    processes: int = opt(0, help="img2dataset processes (0: one per CPU core)")
    threads: int = opt(64, help="img2dataset download threads per process")
    timeout: int = opt(10, help="Seconds before a download is abandoned (a reject: 'timed out')")
    seed: int = opt(0, help="Chooses each sample's phrasing and caption share (same seed, same choice)")
    caption_ratio: float = opt(0.0, help="Share of samples made image→caption (task: caption) instead of t2i")
    person_token: str | None = opt(None, help="Replace CC12M's <PERSON> with this text "
                                              "(default: keep it verbatim)")
    allow_letterbox: bool = opt(False, help="Accept a download made with resize_mode=border (white letterbox "
                                            "squares as generation targets); refused by default")

    def __post_init__(self) -> None:
        if self.download_dir is None and self.input is not None:
            self.download_dir = Path(self.input).parent / f"{Path(self.input).stem}_img2dataset"
        if self.image_size < 1:
            raise InputError(f"--image-size must be >= 1, got {self.image_size}")
        if self.processes < 0 or self.threads < 1 or self.timeout < 1:
            raise InputError("--processes must be >= 0, --threads and --timeout >= 1; got "
                             f"{self.processes}, {self.threads}, {self.timeout}")
        if not 0.0 <= self.caption_ratio <= 1.0:
            raise InputError(f"--caption-ratio must be within 0..1, got {self.caption_ratio}")
        if self.person_token is not None and (IMAGE in self.person_token or not self.person_token.strip()):
            raise InputError(f"--person-token {self.person_token!r}: must be non-empty text without {IMAGE}")
        if self.resize_mode == "border" and not self.allow_letterbox:
            raise InputError("--resize-mode border letterboxes every image onto a white square, and the bands "
                             "become part of each generation target; use keep_ratio, or pass --allow-letterbox")


@dataclass(frozen=True)
class Unit:
    shard: str  # img2dataset shard path without extension: <dir>/NNNNN(.tar|.parquet|_stats.json)
    label: str  # record id prefix: the TSV's stem, or the img2dataset folder's name
    first: int  # first TSV line of the shard (TSV mode); 0: take the rows the parquet holds
    count: int  # rows of the shard to convert
    pid: int = 0  # the background img2dataset process to wait for (0: the shard is already downloaded)
    per_shard: int = 0  # --from-img2dataset: img2dataset's number_sample_per_shard, to tell each key's TSV line


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
    _check_download_dir(dl, _identity(options, tsv, shard_size, limit))
    rows = dl / "rows.parquet"
    n_rows = pq.read_metadata(rows).num_rows if rows.is_file() else _count_rows(tsv, limit)
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
    identity = _identity(options, tsv, shard_size, limit)
    if not _check_download_dir(dl, identity):
        dl.mkdir(parents=True, exist_ok=True)
        (dl / "download.json").write_text(json.dumps(identity, indent=2))
    rows = dl / "rows.parquet"
    downloaded = all(Path(u.shard + "_stats.json").is_file() for u in units)
    # img2dataset takes seconds to import: it starts first and waits for its input while the TSV is split.
    proc = None if downloaded else _start_download(options, dl, shard_size, len(units))
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


def _identity(options: CC12MOptions, tsv: Path, shard_size: int, limit: int | None) -> dict[str, Any]:
    """What a download depends on: a rerun with the same identity resumes it."""
    st = tsv.stat()
    return {"input": str(tsv.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "columns": options.columns, "limit": limit, "shard_size": shard_size,
            "image_size": options.image_size, "resize_mode": options.resize_mode}


def _check_download_dir(dl: Path, identity: dict[str, Any]) -> bool:
    """True when `dl` holds a download made with `identity`, False when it is new or empty; else an InputError."""
    marker = dl / "download.json"
    if marker.is_file():
        found = json.loads(marker.read_text())
        if found != identity:
            diff = sorted(k for k in identity.keys() | found.keys() if found.get(k) != identity.get(k))
            raise InputError(f"--download-dir {dl}: holds a download made with other settings "
                             f"({', '.join(diff)} differ: a changed TSV or flag); pass another "
                             "--download-dir or delete it to start over")
        return True
    if dl.is_dir() and any(dl.iterdir()):
        raise InputError(f"--download-dir {dl}: not empty and not made by `mmdata build cc12m`; choose an "
                         "empty or new folder (for an existing img2dataset output use --from-img2dataset)")
    return False


def _count_rows(tsv: Path, limit: int | None) -> int:
    """The rows `convert_tsv` will write: every line but a header, at most `limit`."""
    n = -header_lines(tsv)
    with open(tsv, "rb") as f:
        for _ in f:
            if limit is not None and n >= limit:
                break
            n += 1
    return n


def is_header(raw: bytes) -> bool:
    """`url<TAB>caption` (either order, any case): the header img2dataset's recipe prepends, as its TSV reader
    needs column names. The released file has none."""
    fields = raw.decode("utf-8", "replace").lstrip("\ufeff").strip().split("\t")
    return sorted(f.strip().lower() for f in fields) == ["caption", "url"]


def header_lines(tsv: Path) -> int:
    """1 when the TSV starts with a header line (skipped: neither read nor rejected), else 0."""
    with open(tsv, "rb") as f:
        return int(is_header(f.readline().rstrip(b"\r\n")))


def convert_tsv(tsv: Path, out: Path, columns: str, limit: int | None, batch: int = 200_000) -> int:
    """Every TSV line → one parquet row (line, url, caption, issue); bad lines get an `issue` and no URL.
    `line` is the file's own line number; a header line is skipped, and `limit` counts data lines."""
    n = line = 0
    cols: dict[str, list[Any]] = {k: [] for k in _ROWS_SCHEMA.names}
    with open(tsv, "rb") as f, pq.ParquetWriter(out, _ROWS_SCHEMA) as writer:
        for raw in f:
            line += 1
            raw = raw.rstrip(b"\r\n")
            if line == 1 and is_header(raw):
                continue
            if limit is not None and n >= limit:
                break
            n += 1
            url, caption, issue = parse_line(raw, columns, first=line == 1)
            for k, v in zip(_ROWS_SCHEMA.names, (line, url, caption, issue), strict=True):
                cols[k].append(v)
            if len(cols["line"]) >= batch:
                writer.write_table(pa.table(cols, schema=_ROWS_SCHEMA))
                cols = {k: [] for k in _ROWS_SCHEMA.names}
        writer.write_table(pa.table(cols, schema=_ROWS_SCHEMA))
    return n


def parse_line(raw: bytes, columns: str, first: bool = False) -> tuple[str, str, str | None]:
    """(url, caption, issue). A line with an issue gets url "" so img2dataset fetches nothing for it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return "", "", f"not valid UTF-8 ({e.reason} at byte {e.start})"
    if first:
        text = text.lstrip("\ufeff")
    if "\t" not in text:
        return "", "", "no tab: expected url<TAB>caption (CC3M: caption<TAB>url with --columns caption-url)"
    # URLs never hold a tab, captions may: split on the tab next to the URL.
    url, caption = text.split("\t", 1) if columns == "url-caption" else text.rsplit("\t", 1)[::-1]
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        hint = " (check --columns: CC12M is url-caption, CC3M caption-url)" if " " in url else ""
        return "", caption, f"URL {url[:80]!r} is not http(s){hint}"
    if not caption.strip():
        return "", caption, "empty caption: nothing to generate from"
    if IMAGE in caption:
        return "", caption, f"caption contains the media placeholder {IMAGE}"
    return url, caption, None


# Runs in the child: img2dataset's download(), then an exit note the shard writers read. If the build dies
# (even by SIGKILL) the child sees its parent change and kills its own process group (pool workers included),
# so a rerun never races a stray download.
_CHILD = """
import json, os, signal, sys, threading, time
kwargs, exit_dir, ray_address, parent = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], os.getppid()
def orphaned():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=orphaned, daemon=True).start()
status = "failed"
try:
    from img2dataset import download
    if ray_address:
        import ray
        ray.init(address=ray_address)
    if sys.stdin.readline() != "go\\n":  # the build stopped before the input was ready (the TSV split failed)
        sys.exit("img2dataset not started: the build stopped before its input was ready")
    print("img2dataset distributor:", kwargs.get("distributor", "multiprocessing"), flush=True)
    download(**kwargs)
    status = "ok"
finally:
    with open(os.path.join(exit_dir, f"img2dataset.{os.getpid()}.exit"), "w") as f:
        f.write(status)
"""


_RUNNING: dict[Path, subprocess.Popen[bytes]] = {}  # download folder → the img2dataset this process started


def _start_download(options: CC12MOptions, dl: Path, shard_size: int, n_shards: int) -> subprocess.Popen[bytes]:
    """Start img2dataset in the background (its output in `img2dataset.log`): it imports, then waits for a line
    "go" on its stdin (its input, `rows.parquet`, is ready) to download `n_shards` shards. The shard writers wait
    for each shard's `_stats.json`, so conversion overlaps the download."""
    kwargs = {
        "url_list": str((dl / "rows.parquet").resolve()), "output_folder": str((dl / "shards").resolve()),
        "input_format": "parquet", "url_col": "url", "caption_col": "caption",
        "save_additional_columns": ["line", "issue"], "output_format": "webdataset",
        "image_size": options.image_size, "resize_mode": options.resize_mode, "encode_format": "jpg",
        "processes_count": options.processes or os.cpu_count() or 1, "thread_count": options.threads,
        "number_sample_per_shard": shard_size, "oom_shard_count": 5, "timeout": options.timeout,
        "extract_exif": False, "incremental_mode": "incremental", "enable_wandb": False,
    }
    cluster = ray_address()
    if cluster is not None:  # a `--engine ray` build: img2dataset's own Ray distributor, on the same cluster
        kwargs["distributor"] = "ray"
    previous = _RUNNING.get(dl.resolve())
    if previous is not None:
        # A download this process started may still be tidying up: its final rm of `shards/_tmp` would delete
        # the new run's input splits.
        _stop(previous, dl / "shards", n_shards)
    for old in dl.glob("img2dataset.*.exit"):
        old.unlink()
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    with open(dl / "img2dataset.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(kwargs), str(dl), cluster or ""],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
                                # Its own process group, so it and its pool can be stopped as one.
                                start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it, so "not alive" is observable
    _RUNNING[dl.resolve()] = proc
    atexit.register(_stop, proc, dl / "shards", n_shards)
    print(f"img2dataset: downloading into {dl / 'shards'} (progress: tail -f {dl / 'img2dataset.log'})",
          file=sys.stderr)
    return proc


def _stop(proc: subprocess.Popen[bytes], shards: Path, n_shards: int) -> None:
    """At exit: let a finished download tidy up (the build ends with the last `_stats.json`, img2dataset a
    moment later); stop an unfinished one (an error or Ctrl-C in the build), pool included."""
    if proc.poll() is None and len(list(shards.glob("*_stats.json"))) >= n_shards:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def ready(options: CC12MOptions, unit: Unit) -> bool:
    """Whether img2dataset has finished the unit's shard (its `_stats.json`): the build converts a shard only
    then, so conversion overlaps the download without a worker waiting. Runs in the build's driver, where the
    download process lives."""
    stats = Path(unit.shard + "_stats.json")
    if not unit.pid or stats.is_file():
        return True
    dl = Path(unit.shard).parent.parent
    ended = (dl / f"img2dataset.{unit.pid}.exit").is_file() or not _alive(unit.pid)
    if ended and not stats.is_file():
        raise DownloadError(f"{dl / 'shards'}: img2dataset stopped before finishing shard "
                            f"{Path(unit.shard).name} (see {dl / 'img2dataset.log'}); rerun the same "
                            "command to retry the unfinished shards only")
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        images, damage = _tar_index(tar, unit.shard + ".tar")
        if unit.first:
            by_line = {r["line"]: r for r in rows}
            order: list[tuple[int, dict[str, Any] | None]] = [
                (line, by_line.get(line)) for line in range(unit.first, unit.first + unit.count)]
        else:
            order = [(0, r) for r in sorted(rows, key=lambda r: r["key"])[: unit.count]]
        for line, row in order:
            ref = f"{unit.label}:{line}" if line else f"cc12m:{_tsv_line(row, shard, unit.per_shard)}"  # type: ignore
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


def _tsv_line(row: dict[str, Any], shard: str, per_shard: int) -> int:
    """The TSV line an img2dataset row came from: its `line` column (our own downloads save it), else from its key
    (shard id digits + index in the shard) below the header line img2dataset's TSV input requires."""
    if isinstance(row.get("line"), int):
        return row["line"]
    index = int(row["key"][len(shard):] or 0)
    return 2 + int(shard) * per_shard + index


def letterbox_evidence(folder: Path, shards: list[str], samples: int = 8) -> str | None:
    """Why this img2dataset output looks made with resize_mode=border, or None. The download's own record of its
    config wins (newer img2dataset writes it into the stats); otherwise a few images stored as squares although
    their originals are not are checked for the white bands `border` pads with."""
    for name in shards:
        config = json.loads((folder / f"{name}_stats.json").read_text()).get("config")
        if isinstance(config, dict) and "resize_mode" in config:
            mode = config["resize_mode"]
            return f"{name}_stats.json records resize_mode={mode}" if mode == "border" else None
    checked = banded = 0
    for name in shards[:3]:
        cols = ["key", "status", "width", "height", "original_width", "original_height"]
        try:
            rows = pq.read_table(folder / f"{name}.parquet", columns=cols).to_pylist()
        except (pa.ArrowInvalid, KeyError):
            return None  # not the columns img2dataset writes: nothing to tell
        squares = [r for r in rows if r["status"] == "success" and r["width"] and r["width"] == r["height"]
                   and r["original_width"] and r["original_height"]
                   and abs(r["original_width"] / r["original_height"] - 1) > 0.1]
        if not squares:
            continue
        with open(folder / f"{name}.tar", "rb") as tar:
            index, _ = _tar_index(tar, str(folder / f"{name}.tar"))
            for r in squares[: samples - checked]:
                if r["key"] not in index:
                    continue
                offset, size, _ = index[r["key"]]
                tar.seek(offset)
                checked += 1
                banded += _white_bands(tar.read(size), r["original_width"], r["original_height"])
        if checked >= samples:
            break
    if checked and banded * 2 > checked:
        return f"{banded} of {checked} sampled images are squares with white bands around non-square originals"
    return None


def _white_bands(data: bytes, original_width: int, original_height: int) -> bool:
    """True when the square image has the near-white bands `border` pads a non-square original with."""
    try:
        gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    side = gray.shape[0]
    long, short = max(original_width, original_height), min(original_width, original_height)
    band = (side - round(side * short / long)) // 2 - 1  # one pixel less: JPEG blurs the edge
    if band < 1:
        return False
    bands = (gray[:band], gray[-band:]) if original_width > original_height else (gray[:, :band], gray[:, -band:])
    return all(b.mean() > 240 and b.std() < 12 for b in bands)


def _tar_index(f: Any, path: str) -> tuple[dict[str, tuple[int, int, str]], str | None]:
    """key → (offset, size, extension) of each image member, from the headers only, so a shard's images
    never all sit in memory; and, if a header is damaged, why (naming the file and byte): the members before it
    are still used. A plain header walk: `tarfile` spent a quarter of the conversion parsing webdataset's pax
    headers."""
    index: dict[str, tuple[int, int, str]] = {}
    try:
        _walk_tar(f, index)
    except (ValueError, UnicodeDecodeError) as e:
        return index, f"{path}: damaged tar ({e}); this sample's image is unreadable"
    return index, None


def _walk_tar(f: Any, index: dict[str, tuple[int, int, str]]) -> None:
    pos, long_name = 0, None
    while True:
        f.seek(pos)
        header = f.read(512)
        if len(header) < 512 or header == bytes(512):
            return
        try:
            stored = int(header[148:156].rstrip(b"\0 ") or b"-1", 8)
            size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        except ValueError:
            stored = size = -1
        if stored != sum(header[:148]) + 256 + sum(header[156:]) or size < 0:  # 256: the checksum field as spaces
            raise ValueError(f"bad member header at byte {pos}")
        kind, data = header[156:157], pos + 512
        if kind in (b"x", b"L"):  # pax extended header or GNU long name: they rename the next member
            f.seek(data)
            body = f.read(size)
            long_name = body.rstrip(b"\0").decode() if kind == b"L" else _pax_path(body) or long_name
        elif kind in (b"0", b"\0"):
            name = long_name or _ustar_name(header)
            key, _, ext = name.rpartition("/")[2].partition(".")
            if ext in ("jpg", "jpeg", "png", "webp"):
                index[key] = (data, size, ext)
            long_name = None
        pos = data + (size + 511) // 512 * 512


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode()
    prefix = header[345:500].split(b"\0", 1)[0].decode() if header[257:262] == b"ustar" else ""
    return f"{prefix}/{name}" if prefix else name


def _pax_path(body: bytes) -> str | None:
    for record in body.decode("utf-8", "replace").split("\n"):
        _, _, kv = record.partition(" ")
        if kv.startswith("path="):
            return kv[5:]
    return None


def convert(options: CC12MOptions, row: dict[str, Any], image: bytes, ext: str, label: str, line: int,
            shard: str, ref: str) -> Record | Reject:
    """One downloaded sample → a t2i record (or, for a seeded share, a caption record)."""
    rid = f"{label}-{line:09d}" if line else f"{label}-{row['key']}"
    raw = row.get("caption") or ""
    caption = " ".join(html.unescape(raw).split())  # entities and stray tabs/newlines are crawl noise
    if not caption:
        return Reject(ref, "empty caption: nothing to generate from")
    if IMAGE in caption:
        return Reject(ref, f"caption contains the media placeholder {IMAGE}")
    text = caption.replace(PERSON, options.person_token) if options.person_token is not None else caption
    # Three draws in this order; the phrasing's table depends on the third, so the first is kept as a raw draw.
    draws = Draws(options.seed, rid, "sha256")
    phrasing, answer, share = draws.word(), draws.index(len(ANSWERS)), draws.share()
    if share < options.caption_ratio:
        task = "caption"
        turns = [Turn("human", CAPTION_PROMPTS[phrasing % len(CAPTION_PROMPTS)]), Turn("gpt", text)]
    else:
        task = "t2i"
        prompt = PROMPTS[phrasing % len(PROMPTS)].format(c=text)
        turns = [Turn("human", prompt), Turn("gpt", ANSWERS[answer])]
    meta: dict[str, Any] = {"ref": ref, "url": row["url"], "caption": caption, "img2dataset_shard": shard,
                            "img2dataset_key": row["key"], "original_size": [row.get("original_width"),
                                                                             row.get("original_height")]}
    if caption != raw:
        meta["caption_raw"] = raw
    if row.get("sha256"):
        meta["sha256"] = row["sha256"]
    return Record(id=rid, source="cc12m", task=task, conversations=turns,
                  media=[Media(path=f"{shard}/{rid}.{ext}", data=image)], meta=meta)


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
