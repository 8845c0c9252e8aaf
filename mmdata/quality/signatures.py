"""Per-record signatures for dedup and decontamination, computed a shard at a time and cached by shard content.

For each record of a shard: a 64-bit key of its whitespace-normalized conversation, a MinHash (`datasketch`) of its
word shingles, and for each media file a 64-bit prefix of its sha256 and its 64-bit perceptual hash (`imagehash`
pHash; 0 with `ok` false when the file does not decode). The arrays of a shard are stored under
`<cache>/<shard sha256>.<params>/` — a rebuilt shard has a new sha256, an unchanged one is never hashed twice, and
a second dataset holding the same shard shares its entry. Workers write; the driver reads the arrays memory-mapped.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from mmdata.core.schema import IMAGE, Record
from mmdata.read.dataset import Dataset
from mmdata.storage.files import temp_path

T = TypeVar("T")


SIGNATURES_VERSION = 1


_WORDS = re.compile(r"\S+")


_ARRAYS = ("text_key", "words", "media_start", "media_sha", "media_phash", "media_ok")  # and "minhash"


def default_cache() -> Path:
    """`$MMDATA_CACHE/signatures`, else `~/.cache/mmdata/signatures`."""
    base = os.environ.get("MMDATA_CACHE") or Path.home() / ".cache" / "mmdata"
    return Path(base) / "signatures"


@dataclass(frozen=True)
class SignatureParams:
    """What the cached arrays depend on (besides the shard's bytes): part of the cache entry's name."""

    num_perm: int = 128
    shingle: int = 3  # words per shingle

    @property
    def tag(self) -> str:
        return f"v{SIGNATURES_VERSION}-p{self.num_perm}-k{self.shingle}"


# ---------------------------------------------------------------------------------------------- one record
def conversation_words(record: Record) -> list[str]:
    """The conversation as words, each turn prefixed by its role; placeholders dropped, case folded."""
    words: list[str] = []
    for turn in record.conversations:
        words.append(f"<{turn.role}>")
        words += _WORDS.findall(turn.value.replace(IMAGE, " ").lower())
    return words


def key64(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


def shingles(words: list[str], k: int) -> list[bytes]:
    if len(words) <= k:
        return [" ".join(words).encode()]
    return [" ".join(words[i:i + k]).encode() for i in range(len(words) - k + 1)]


def phash64(image: Image.Image) -> int:
    """The 64-bit pHash of `image` as an integer (bit order of `imagehash`'s hex string)."""
    import imagehash

    return int(str(imagehash.phash(image)), 16)


def image_phash(data: bytes) -> int | None:
    """pHash of encoded image bytes, or None when they do not decode. JPEGs are decoded at reduced scale (pHash
    looks at 32×32 pixels, so a full-size decode would be wasted)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("L", (128, 128))
            return phash64(im)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


# ---------------------------------------------------------------------------------------------- one shard
@dataclass(frozen=True)
class ShardTask:
    root: Path  # a built dataset
    form: str
    shard: int  # position among the dataset's non-empty shards
    sha256: str
    cache: Path
    params: SignatureParams

    @property
    def entry(self) -> Path:
        return self.cache / f"{self.sha256}.{self.params.tag}"


def shard_tasks(ds: Dataset, cache: Path, params: SignatureParams) -> list[ShardTask]:
    entries = [s for s in ds.manifest.shards if s.count > 0]
    return [ShardTask(ds.root.resolve(), ds.form, k, e.files[ds.form].sha256, cache, params)
            for k, e in enumerate(entries)]


def compute_shard(task: ShardTask) -> Path:
    """Hash every record of one shard into its cache entry (a directory renamed into place when complete)."""
    if task.entry.is_dir():
        return task.entry
    from datasketch import MinHash

    ds = Dataset(task.root, task.form)  # type: ignore[arg-type]
    perm = MinHash(num_perm=task.params.num_perm, seed=1)
    cols: dict[str, list[int]] = {k: [] for k in ("text_key", "words", "media_sha", "media_phash", "media_ok")}
    minhashes, media_start = [], [0]
    for data in ds.shards.scan(task.shard):
        record = ds.decode(data)
        words = conversation_words(record)
        cols["text_key"].append(key64(" ".join(words).encode()))
        cols["words"].append(sum(not w.startswith("<") for w in words))
        m = MinHash(num_perm=task.params.num_perm, permutations=perm.permutations, scheme=perm.scheme)
        m.update_batch(shingles(words, task.params.shingle))
        minhashes.append(m.hashvalues)
        for j in range(len(record.media)):
            blob = _media_bytes(ds, record, j)
            ph = image_phash(blob) if blob is not None else None
            cols["media_sha"].append(key64(blob) if blob is not None else 0)
            cols["media_phash"].append(ph or 0)
            cols["media_ok"].append(ph is not None)
        media_start.append(len(cols["media_sha"]))
    arrays = {"text_key": np.array(cols["text_key"], dtype=np.uint64),
              "words": np.array(cols["words"], dtype=np.int32),
              "minhash": np.array(minhashes, dtype=np.uint32).reshape(-1, task.params.num_perm),
              "media_start": np.array(media_start, dtype=np.int64),
              "media_sha": np.array(cols["media_sha"], dtype=np.uint64),
              "media_phash": np.array(cols["media_phash"], dtype=np.uint64),
              "media_ok": np.array(cols["media_ok"], dtype=bool)}
    tmp = temp_path(task.entry)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array, allow_pickle=False)
    try:
        os.rename(tmp, task.entry)
    except OSError:  # another run finished the same shard first: its entry is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return task.entry


def _media_bytes(ds: Dataset, record: Record, j: int) -> bytes | None:
    """The media's bytes wherever the dataset keeps them; None for a file that cannot be read (hashed as
    undecodable). Media whose whole root is gone stop the run (`MediaUnreachable`) instead of all matching none."""
    try:
        return ds.media_bytes(record, j)
    except OSError:
        return None


def map_shards(fn: Callable[[ShardTask], T], tasks: list[ShardTask], workers: int) -> list[T]:
    """`fn` over shards, `workers` at a time in spawned processes (like a build's), results in task order."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
        return list(pool.map(fn, tasks))


def run_tasks(tasks: list[ShardTask], workers: int) -> None:
    """Compute every missing cache entry."""
    map_shards(compute_shard, [t for t in tasks if not t.entry.is_dir()], workers)


# ---------------------------------------------------------------------------------------------- reading
class ShardSignatures:
    """One shard's cached arrays, memory-mapped; MinHash signatures (512 bytes a record) only on demand, and
    unmapped after use, so a million records' worth never stays resident."""

    def __init__(self, entry: Path) -> None:
        self.entry = entry
        for name in _ARRAYS:
            setattr(self, name, np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False))
        self.text_key: np.ndarray
        self.words: np.ndarray
        self.media_start: np.ndarray
        self.media_sha: np.ndarray
        self.media_phash: np.ndarray
        self.media_ok: np.ndarray

    def minhash(self, rows: np.ndarray | None = None) -> np.ndarray:
        """MinHash signatures of `rows` (all rows by default), copied out of a map that is closed on return."""
        mapped = np.load(self.entry / "minhash.npy", mmap_mode="r", allow_pickle=False)
        out = np.array(mapped if rows is None else mapped[rows])
        del mapped  # the last reference: unmapped here
        return out


class DatasetSignatures:
    """The signatures of all rows of one dataset, shard by shard (nothing loaded until asked)."""

    def __init__(self, ds: Dataset, tasks: list[ShardTask], num_perm: int) -> None:
        self.dataset, self.num_perm = ds, num_perm
        self.starts = ds.shards.starts  # dataset row of each shard's first record
        self.shards = [ShardSignatures(t.entry) for t in tasks]

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self.starts[1:], rows, side="right")
        return shard, rows - self.starts[shard]

    def column(self, name: str) -> np.ndarray:
        """A per-record array over the whole dataset, in row order."""
        parts = [getattr(s, name) for s in self.shards]
        return np.concatenate(parts) if parts else np.zeros(0)

    def media(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start, sha, phash, ok): record r's media are entries start[r]:start[r+1] of the other three."""
        starts, shas, phashes, oks, base = [np.zeros(1, np.int64)], [], [], [], 0
        for s in self.shards:
            starts.append(np.asarray(s.media_start[1:]) + base)
            base += int(s.media_start[-1])
            shas.append(s.media_sha)
            phashes.append(s.media_phash)
            oks.append(s.media_ok)
        cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
        return np.concatenate(starts), cat(shas, np.uint64), cat(phashes, np.uint64), cat(oks, bool)

    def minhash_rows(self, rows: np.ndarray) -> np.ndarray:
        """MinHash signatures of `rows` (any order), read from the shards' memory maps."""
        shard, local = self.locate(rows)
        out = np.empty((len(rows), self.num_perm), dtype=np.uint32)
        for s in np.unique(shard).tolist():
            where = np.flatnonzero(shard == s)
            out[where] = self.shards[s].minhash(local[where])
        return out


def signatures(datasets: list[Dataset], cache: Path, params: SignatureParams, workers: int) -> list[DatasetSignatures]:
    """Signatures of every row of every dataset: missing shards are computed in parallel, all of them first."""
    tasks = [shard_tasks(ds, cache, params) for ds in datasets]
    run_tasks([t for ts in tasks for t in ts], workers)
    return [DatasetSignatures(ds, ts, params.num_perm) for ds, ts in zip(datasets, tasks)]


def iter_words(text: str) -> Iterator[str]:
    """Words of free text as n-gram matching sees them: lower case, letters and digits only."""
    yield from re.findall(r"[a-z0-9]+", text.replace(IMAGE, " ").lower())
