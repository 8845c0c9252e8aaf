"""`FsspecStorage`: a dataset under a URL (`s3://bucket/prefix`; any fsspec protocol), behind `mmdata.storage.Storage`.

- Random reads are ranged GETs: `read_ranges` issues a batch of them concurrently (fsspec's `cat_ranges`), so
  `ds[i]` is one request and a loader batch is one round of parallel requests.
- `stream` reads a file front to back in large chunks, several in flight ahead of the reader.
- Writes are staged in a local temporary file and uploaded on `commit()`: an object store makes an object visible
  only once its upload completes, so a killed upload leaves nothing under the final name.
- `cache_dir` keeps fetched blocks on local disk, so repeated epochs read from there; blocks are filed under a
  key the dataset gives (the hash of its manifest), so a rebuilt dataset never meets stale blocks.
- Credentials and endpoints come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ~/.aws/config) or
  `options`; they stay in memory, and every error message goes through `_scrub` before it is raised.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mmdata.core.errors import NotFound, StorageError
from mmdata.storage.pin import Pin, check_pin, take_pin

CHUNK = 8 << 20  # bytes per GET when streaming a file


AHEAD = 4  # chunks in flight ahead of the reader


BLOCK = 1 << 20  # cache block size


_PUT_THREADS = 8  # concurrent uploads of `put_files`


_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


_CREDENTIALS_HINT = ("check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, or "
                     "--storage-options) and the endpoint (AWS_ENDPOINT_URL)")


class FsspecStorage:
    def __init__(self, url: str, options: dict[str, Any] | None = None, cache_dir: str | Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_key = ""
        self._cache_ns: tuple[str, Path] | None = None
        self._fs: Any = None
        self._pid = -1
        self._pool: ThreadPoolExecutor | None = None
        self._pin: Pin | None = None

    # ---------------------------------------------------------------- the filesystem, per process
    @property
    def fs(self) -> Any:
        if self._fs is None or self._pid != os.getpid():  # a forked DataLoader worker opens its own
            import fsspec

            with self._errors(""):
                # No listing cache: another process (a build worker) may have written since we last listed.
                self._fs, self._root = fsspec.core.url_to_fs(self.url, **{"use_listings_cache": False,
                                                                          **self.options})
            self._pid, self._pool = os.getpid(), None
        return self._fs

    def _path(self, name: str) -> str:
        self.fs  # noqa: B018 - sets _root
        return f"{self._root}/{name}" if name else self._root

    @property
    def pool(self) -> ThreadPoolExecutor:
        self.fs  # noqa: B018 - a pool of this process
        if self._pool is None:
            self._pool = ThreadPoolExecutor(AHEAD * 2, thread_name_prefix="mmdata-read")
        return self._pool

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None, "_pid": -1, "_pool": None}

    def __repr__(self) -> str:
        return f"FsspecStorage({self.url!r})"  # never the options

    # ---------------------------------------------------------------- errors
    def where(self, name: str = "") -> str:
        return f"{self.url}/{name}" if name else self.url

    def _scrub(self, text: str) -> str:
        secrets = [v for v in self.options.values() if isinstance(v, str) and len(v) >= 4]
        secrets += [os.environ[k] for k in _SECRET_ENV if len(os.environ.get(k, "")) >= 4]
        for s in secrets:
            text = text.replace(s, "***")
        return text

    @contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        """Every failure of the client as one line: the URL, what happened, how to fix it; never a secret."""
        try:
            yield
        except (NotFound, StorageError):
            raise
        except FileNotFoundError as e:
            bucket = "bucket" in str(e).lower()
            what = "the bucket does not exist; create it or fix the URL" if bucket else "not found"
            raise NotFound(self._scrub(f"{self.where(name)}: {what}")) from None
        except PermissionError as e:
            raise StorageError(self._scrub(f"{self.where(name)}: access denied ({_first_line(e)}); "
                                           f"{_CREDENTIALS_HINT}")) from None
        except Exception as e:
            module = type(e).__module__.split(".")[0]
            if not isinstance(e, OSError) and module not in ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec"):
                raise
            raise StorageError(self._scrub(f"{self.where(name)}: {type(e).__name__}: {_first_line(e)}; "
                                           f"{_CREDENTIALS_HINT}")) from None

    # ---------------------------------------------------------------- the Storage interface
    def check(self) -> None:
        with self._errors(""):
            try:
                self.fs.info(self._path("").split("/", 1)[0])
            except FileNotFoundError:
                raise FileNotFoundError("bucket") from None

    def exists(self, name: str) -> bool:
        with self._errors(name):  # `fs.exists` would answer False for a refused request too
            try:
                return bool(self.fs.info(self._path(name))["type"] == "file")
            except FileNotFoundError:
                return False

    def info(self, name: str) -> dict[str, Any]:
        """The object's metadata (`size`, `type`, `ETag`…); a missing one is `NotFound` naming the URL."""
        with self._errors(name):
            return dict(self.fs.info(self._path(name)))

    def empty(self) -> bool:
        with self._errors(""):
            try:
                return not self.fs.ls(self._path(""), detail=False)
            except FileNotFoundError:
                self.check()  # a missing prefix is empty; a missing bucket is an error
                return True

    def clear(self) -> None:
        with self._errors(""):
            if not self.empty():
                self.fs.rm(self._path(""), recursive=True)

    def remove(self, name: str) -> None:
        with self._errors(name):
            try:
                self.fs.rm_file(self._path(name))
            except FileNotFoundError:
                pass

    def read_bytes(self, name: str) -> bytes:
        data = self._read(name)
        self.check_pinned()
        return data

    def _read(self, name: str) -> bytes:
        with self._errors(name):
            return bytes(self.fs.cat_file(self._path(name)))

    def pin(self, name: str) -> bytes:
        """Read `name` (the manifest) and pin it (`mmdata.storage.take_pin`): after every fetch (a batch of ranged
        GETs, a read-ahead chunk, an index) one HEAD of the manifest checks it is still the one read (the store
        reads what was last written). A store that reports neither an ETag nor a modification time is not pinned."""
        pin, data = take_pin(self.url, name, self._version, self._read)
        tag, _, when = pin[1] or ("", 0, "")
        if tag or when:
            self._pin = pin
        return data

    def _version(self, name: str) -> tuple[str, int, str] | None:
        """What the store says identifies the object's content now (ETag, size, modification time; "" where it
        reports none), or None if it is gone."""
        with self._errors(name):
            try:
                info = self.fs.info(self._path(name))
            except FileNotFoundError:
                return None
        tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""
        when = info.get("LastModified") or info.get("mtime") or info.get("updated") or ""
        return str(tag), int(info.get("size") or 0), str(when)

    def check_pinned(self) -> None:
        if self._pin is not None:
            self._pin = check_pin(self.url, self._pin, self._version, self._read)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self._errors(name):  # one PUT: the object is the old content or the new, never half
            self.fs.pipe_file(self._path(name), data)

    def create(self, name: str) -> _Upload:
        return _Upload(self, name)

    def put_files(self, files: Sequence[tuple[str, bytes, Path | None]]) -> None:
        """Uploaded concurrently, one PUT each (a local `source` cannot be linked here: its bytes are sent)."""
        if files:
            with ThreadPoolExecutor(_PUT_THREADS) as pool:
                list(pool.map(lambda f: self.write_bytes(f[0], f[1]), files))

    def list(self, folder: str, suffix: str) -> list[str]:
        with self._errors(folder):
            try:
                found = self.fs.ls(self._path(folder), detail=False)
            except FileNotFoundError:
                return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in found)
        return sorted(f"{folder}/{n}" if folder else n for n in names if n.endswith(suffix))

    def stream(self, name: str, size: int | None = None) -> BinaryIO:
        if size is None:
            with self._errors(name):
                size = int(self.fs.size(self._path(name)))
        return io.BufferedReader(_ReadAhead(self, name, size), buffer_size=1 << 20)  # type: ignore[return-value]

    def read_ranges(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        if self.cache_dir is not None:
            return self._cached_ranges(names, starts, ends)
        return self._fetch(names, starts, ends)

    def _fetch(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        if not names:
            return []
        with self._errors(names[0]):
            if len(names) == 1:  # the scalar path (`ds[i]`): one GET, without the batching machinery
                out = [self.fs.cat_file(self._path(names[0]), start=starts[0], end=ends[0])]
            else:
                out = self.fs.cat_ranges([self._path(n) for n in names], list(starts), list(ends), on_error="return")
            for n, r in zip(names, out):
                if isinstance(r, BaseException):
                    with self._errors(n):
                        raise r
        self.check_pinned()  # before anything is used or cached: the bytes are the opened build's
        return [bytes(r) for r in out]

    # ---------------------------------------------------------------- whole files for a parser (the read layer)
    def open_file(self, name: str) -> BinaryIO:
        """`name` fetched in one GET (a file a parser reads whole, such as an image: `stream`'s read-ahead would
        cost a HEAD more)."""
        return io.BytesIO(self.read_bytes(name))

    def read_array(self, name: str) -> np.ndarray:
        """A `.npy` file, fetched in one GET (a view's index: 12 bytes a sample)."""
        return np.load(io.BytesIO(self.read_bytes(name)), allow_pickle=False)

    def reachable(self) -> bool:
        """Whether the prefix holds anything (one HEAD, then a listing of at most one key); a refused request is
        an error, not an answer."""
        with self._errors(""):
            try:
                return self.fs.info(self._path("")).get("type") == "directory"
            except FileNotFoundError:
                return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ---------------------------------------------------------------- the block cache
    def _block_file(self, name: str, block: int) -> Path:
        assert self.cache_dir is not None
        if self._cache_ns is None or self._cache_ns[0] != self.cache_key:
            ns = hashlib.sha256(f"{self.url}\0{self.cache_key}".encode()).hexdigest()[:24]
            self._cache_ns = (self.cache_key, self.cache_dir / ns)
        return self._cache_ns[1] / name / f"{block:08d}"

    def _cached_ranges(self, names: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        spans = [(n, range(s // BLOCK, max(s, e - 1) // BLOCK + 1)) for n, s, e in zip(names, starts, ends)]
        need = sorted({(n, b) for n, blocks in spans for b in blocks if not self._block_file(n, b).is_file()})
        if need:
            blobs = self._fetch([n for n, _ in need], [b * BLOCK for _, b in need], [(b + 1) * BLOCK for _, b in need])
            for (n, b), data in zip(need, blobs):
                dst = self._block_file(n, b)
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, dst)  # a reader never sees half a block
        out = []
        for (n, blocks), s, e in zip(spans, starts, ends):
            parts = []
            for b in blocks:  # only the bytes asked for, not whole blocks
                lo, hi = max(s, b * BLOCK) - b * BLOCK, min(e, (b + 1) * BLOCK) - b * BLOCK
                with open(self._block_file(n, b), "rb") as f:
                    f.seek(lo)
                    parts.append(f.read(hi - lo))
            out.append(parts[0] if len(parts) == 1 else b"".join(parts))
        return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


class _Upload:
    """A staged object: written to a local temporary file, uploaded on `commit()` (a multipart upload for a large
    file, which the store completes atomically)."""

    def __init__(self, storage: FsspecStorage, name: str) -> None:
        self.storage, self.name = storage, name
        fd, self.tmp = tempfile.mkstemp(prefix="mmdata-upload-", suffix=".part")
        self.f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        return self.f.write(data)

    def commit(self) -> None:
        try:
            self.f.close()
            with self.storage._errors(self.name):
                self.storage.fs.put_file(self.tmp, self.storage._path(self.name))
        finally:
            Path(self.tmp).unlink(missing_ok=True)

    def abort(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass
        Path(self.tmp).unlink(missing_ok=True)


class _ReadAhead(io.RawIOBase):
    """A file read front to back as chunks of `CHUNK` bytes, `AHEAD` of them fetched ahead of the reader. The
    first chunks are requested on construction, so opening the next shard's stream early hides its latency."""

    def __init__(self, storage: FsspecStorage, name: str, size: int) -> None:
        self.storage, self.name, self.size = storage, name, size
        self.next_start = 0
        self.pending: deque[Future[bytes]] = deque()
        self.buf, self.pos = b"", 0
        self._fill()

    def _fill(self) -> None:
        while len(self.pending) < AHEAD and self.next_start < self.size:
            start, end = self.next_start, min(self.next_start + CHUNK, self.size)
            self.pending.append(self.storage.pool.submit(self.storage._fetch, [self.name], [start], [end]))
            self.next_start = end

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.pos == len(self.buf):
            if not self.pending:
                return 0
            self.buf, self.pos = self.pending.popleft().result()[0], 0
            self._fill()
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos:self.pos + n]
        self.pos += n
        return n

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()
        super().close()
