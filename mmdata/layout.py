"""The on-disk shard layout of a built dataset, writer and reader side by side. No other module names a shard file.

    shards/NNNNNN.jsonl      one record per line                     (form "jsonl")
    shards/NNNNNN.idx        little-endian uint64 byte offset of each line
    shards/NNNNNN.tar        webdataset: <key>.json + <key>.<i>.<ext> per record   (form "wds")
    shards/NNNNNN.tar.idx    uint64 offset of each record's first tar member
    shards/NNNNNN.done.json  the shard's `ShardResult`, written last: its existence means "this shard is complete"

Every byte goes through a `Storage` (`mmdata.storage`), so a second backend changes no line here.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Literal

import numpy as np
import orjson

from mmdata.errors import DamagedData
from mmdata.lines import newlines
from mmdata.media import decode as decode_media
from mmdata.schema import RECORD_DECODER, Record
from mmdata.storage import StagedFile, Storage

Form = Literal["jsonl", "wds"]
SHARDS = "shards"
_SUFFIX: dict[str, str] = {"jsonl": ".jsonl", "wds": ".tar"}
_DONE = ".done.json"


# ---------------------------------------------------------------------------------------------- names
def shard_name(index: int) -> str:
    return f"{index:06d}"


def data_name(index: int, form: Form) -> str:
    return f"{SHARDS}/{shard_name(index)}{_SUFFIX[form]}"


def index_name(data: str) -> str:
    """The offset index of data file `data`: `x.jsonl` → `x.idx`, `x.tar` → `x.tar.idx`."""
    return data.removesuffix(".jsonl") + ".idx"


def shard_pattern(index: int) -> str:
    """Every file of shard `index` (for messages about it)."""
    return f"{SHARDS}/{shard_name(index)}.*"


def done_name(index: int) -> str:
    return f"{SHARDS}/{shard_name(index)}{_DONE}"


# ---------------------------------------------------------------------------------------------- manifest entries
@dataclass(frozen=True)
class ShardFile:
    name: str  # relative to the dataset root
    bytes: int
    sha256: str


@dataclass
class ShardEntry:
    """One shard in `dataset.json`: its counts and, per form, its data file."""

    name: str
    count: int
    read: int
    rejected: int
    files: dict[str, ShardFile]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardEntry:
        return cls(d["name"], d["count"], d["read"], d["rejected"],
                   {form: ShardFile(**f) for form, f in d["files"].items()})


@dataclass
class ShardResult:
    """What writing one shard produced; stored as its `.done.json` (rejects included, for `rejects.jsonl`)."""

    index: int
    read: int = 0
    written: int = 0
    rejected: int = 0
    files: dict[str, ShardFile] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    rejects: list[dict[str, str]] = field(default_factory=list)
    # Where the shard was written (host, pid; on Ray also node ip and id): in `.done.json` only, never the manifest.
    node: dict[str, Any] = field(default_factory=dict)
    # What the shard was made from: {"unit": digest, "files": {path: fingerprint}} (`mmdata.freshness`); a rerun
    # rebuilds the shard when it differs.
    inputs: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> ShardEntry:
        return ShardEntry(shard_name(self.index), self.written, self.read, self.rejected, self.files)


def write_done(storage: Storage, result: ShardResult) -> None:
    storage.write_bytes(done_name(result.index), orjson.dumps(asdict(result)))


def read_done(storage: Storage, index: int) -> ShardResult | None:
    """The result of shard `index` if it is complete, else None."""
    name = done_name(index)
    if not storage.exists(name):
        return None
    d = orjson.loads(storage.read_bytes(name))
    d["files"] = {form: ShardFile(**f) for form, f in d["files"].items()}
    return ShardResult(**d)


def any_done(storage: Storage) -> bool:
    return bool(storage.list(SHARDS, _DONE))


def remove_shards_from(storage: Storage, first: int) -> None:
    """Delete every file of the shards numbered `first` and above (a rebuild from a shorter input has fewer)."""
    for name in storage.list(SHARDS, ""):
        number = name.removeprefix(f"{SHARDS}/").split(".", 1)[0]
        if number.isdigit() and int(number) >= first:
            storage.remove(name)


# ---------------------------------------------------------------------------------------------- writing
class _Hashing:
    """A staged file that hashes what it writes and knows its size (for the manifest's checksums). Large writes and
    their hashing run on a thread of their own (both release the GIL), beside the conversion; one at a time, so
    they stay in order and a failed write (a full disk) is raised by the next call."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.name = name
        self.f: StagedFile = storage.create(name)
        self.sha = hashlib.sha256()
        self.size = 0
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def write(self, data: bytes) -> int:
        self._wait()
        if len(data) < 1 << 16:
            self._put(data)
        else:
            self._thread = self._thread or ThreadPoolExecutor(1, thread_name_prefix="shard-write")
            self._pending = self._thread.submit(self._put, data)
        self.size += len(data)
        return len(data)

    def _put(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def tell(self) -> int:
        return self.size

    def commit(self) -> ShardFile:
        self._wait()
        self._close()
        self.f.commit()
        return ShardFile(self.name, self.size, self.sha.hexdigest())

    def abort(self) -> None:
        try:
            self._wait()
        except Exception:
            pass
        self._close()
        self.f.abort()

    def _close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None


def _write_index(storage: Storage, data: str, offsets: Sequence[int] | np.ndarray) -> None:
    f = storage.create(index_name(data))
    try:
        f.write(np.asarray(offsets, dtype="<u8").tobytes())
        f.commit()
    except BaseException:
        f.abort()
        raise


class JsonlSink:
    """`NNNNNN.jsonl`, one record per line, and its `.idx`. The index is committed before the data.

    Lines are buffered (~4 MiB): each flush is one write, one hash update and one vectorised pass for the offsets
    (a stored line never holds a raw newline), so the per-record cost is appending to a list."""

    _FLUSH = 1 << 22

    def __init__(self, storage: Storage, index: int) -> None:
        self.storage = storage
        self.data = _Hashing(storage, data_name(index, "jsonl"))
        self.offsets: list[np.ndarray] = []
        self.buffer: list[bytes] = []  # lines, each followed by its newline
        self.pending = 0  # bytes in `buffer`

    def add(self, line: bytes, record: Record, blobs: list[bytes]) -> None:
        self.add_line(line, record.id)

    def add_line(self, line: bytes, rid: str) -> None:
        self.buffer += (line, b"\n")
        self.pending += len(line) + 1
        if self.pending > self._FLUSH:
            self._flush()

    def add_lines(self, lines: bytes, rids: list[str]) -> None:
        """Several lines at once: `lines` holds one per id, each ending with a newline. A large run is written as
        it is, not copied into the buffer."""
        self.buffer.append(lines)
        self.pending += len(lines)
        if self.pending > self._FLUSH or len(lines) > 1 << 16:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            data = b"".join(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
            ends = newlines(np.frombuffer(data, np.uint8))
            self.offsets.append(self.data.size + np.concatenate(([0], ends[:-1] + 1)))
            self.data.write(data)
            self.buffer, self.pending = [], 0

    def commit(self) -> ShardFile:
        self._flush()
        _write_index(self.storage, self.data.name, np.concatenate(self.offsets) if self.offsets else [])
        return self.data.commit()

    def abort(self) -> None:
        self.data.abort()

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_EXT = re.compile(r"[a-z0-9]{1,10}")


class TarSink:
    """A webdataset tar: `<key>.json` + `<key>.<i>.<ext>` per record, with deterministic member metadata, and a
    `.tar.idx` of each record's first member offset, for random access."""

    def __init__(self, storage: Storage, index: int) -> None:
        self.storage = storage
        self.data = _Hashing(storage, data_name(index, "wds"))
        self.tar = tarfile.open(fileobj=self.data, mode="w", format=tarfile.USTAR_FORMAT)  # type: ignore[arg-type]
        self.offsets: list[int] = []

    def add(self, line: bytes, record: Record, blobs: list[bytes]) -> None:
        key = self.add_line(line, record.id)
        for i, (m, blob) in enumerate(zip(record.media, blobs)):
            ext = m.path.rsplit(".", 1)[-1].lower() if "." in m.path.rsplit("/", 1)[-1] else "img"
            if not _EXT.fullmatch(ext):  # a tar member name holds 100 bytes: the decoded format's name instead
                ext = decode_media(blob, m.path).ext
            self._member(f"{key}.{i}.{ext}", blob)

    def add_lines(self, lines: bytes, rids: list[str]) -> None:
        """Several media-free records at once: `lines` holds one per id, each ending with a newline."""
        for line, rid in zip(lines.split(b"\n"), rids):
            self.add_line(line, rid)

    def add_line(self, line: bytes, rid: str) -> str:
        # webdataset splits the key at the first dot of the member name: the key must have none.
        key = f"{len(self.offsets):06d}_{_KEY_UNSAFE.sub('_', rid)[:60]}"
        self.offsets.append(self.data.tell())
        self._member(f"{key}.json", line)
        return key

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
        self.tar.addfile(info, io.BytesIO(data))

    def commit(self) -> ShardFile:
        self.tar.close()  # writes the end-of-archive blocks, leaves the file object open
        _write_index(self.storage, self.data.name, self.offsets)
        return self.data.commit()

    def abort(self) -> None:
        self.data.abort()


SINKS: dict[str, type[JsonlSink] | type[TarSink]] = {"jsonl": JsonlSink, "wds": TarSink}


# ---------------------------------------------------------------------------------------------- reading
class ShardReader:
    """Rows of one form of a dataset's shards as stored bytes: a JSON line, or one record's tar members.

    All shards' offsets form one table (8 bytes per record, read on first use): shard s's row j starts at
    `offsets[start_s + j + s]` and ends at the next entry, each shard's run closing with its file size.
    """

    def __init__(self, storage: Storage, shards: Sequence[ShardEntry], form: Form) -> None:
        self.storage, self.form = storage, form
        shards = [s for s in shards if s.count > 0]
        self.names = [s.files[form].name for s in shards]
        self.sizes = [s.files[form].bytes for s in shards]
        self.counts = [s.count for s in shards]
        self.starts = np.cumsum([0] + self.counts).astype(np.int64)
        self._starts = self.starts.tolist()
        self._offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            parts = []
            for name, size, count in zip(self.names, self.sizes, self.counts):
                raw = self.storage.read_bytes(index_name(name))
                if len(raw) != 8 * count:  # every row after it would be misread
                    root = getattr(self.storage, "root", self.storage)
                    raise DamagedData(f"{root}/{index_name(name)}: {len(raw) / 8:g} offsets for the {count} records "
                                      "the manifest lists (a damaged index, or the dataset was replaced since it was "
                                      "opened)", root)
                parts += [np.frombuffer(raw, dtype="<u8"), np.array([size], dtype="<u8")]
            self._offsets = np.concatenate(parts).astype(np.int64) if parts else np.zeros(1, dtype=np.int64)
        return self._offsets

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_offsets": None}  # a DataLoader worker reads the indexes itself, on first use

    def read(self, shard: int, rows: Sequence[int] | np.ndarray) -> list[bytes]:
        """Rows `rows` of shard `shard` (any order, repeats allowed), in the order asked."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.counts[shard]):
            raise IndexError(f"{self.names[shard]}: a row of {rows.tolist()} is out of range for "
                             f"{self.counts[shard]} records")
        return self.read_rows(rows + self.starts[shard])

    def read_rows(self, rows: Sequence[int] | np.ndarray) -> list[bytes]:
        """Dataset rows `rows` (any order, any shards, repeats allowed), in the order asked. The reads are issued
        sorted by (shard, offset): sequential for a file system, one batch of ranged reads for an object store."""
        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return []
        shard = np.searchsorted(self.starts[1:], rows, side="right")
        pos = rows + shard
        offsets = self.offsets
        begin, end = offsets[pos], offsets[pos + 1]
        order = np.argsort((shard << 40) | begin, kind="stable")  # by (shard, offset): shards stay below 1 TiB
        names = self.names
        data = self.storage.read_ranges([names[s] for s in shard[order].tolist()], begin[order].tolist(),
                                        end[order].tolist())
        out: list[bytes] = [b""] * len(data)
        for k, blob in zip(order.tolist(), data):
            out[k] = blob
        return out

    def read_one(self, row: int) -> bytes:
        """Dataset row `row` alone (the scalar path of `read_rows`, without its array overhead)."""
        s = bisect.bisect_right(self._starts, row) - 1
        offsets = self.offsets
        return self.storage.read_ranges([self.names[s]], [int(offsets[row + s])], [int(offsets[row + s + 1])])[0]

    def open_stream(self, shard: int) -> BinaryIO:
        return self.storage.stream(self.names[shard], self.sizes[shard])

    def scan(self, shard: int, stream: BinaryIO | None = None) -> Iterator[bytes]:
        """Shard `shard` front to back, read as one stream (`stream`, if already opened): JSONL lines, or each
        record's tar members cut at the index's offsets (a tar shard's media need not fit in memory)."""
        with stream or self.open_stream(shard) as f:
            if self.form == "jsonl":
                yield from f
                return
            base = int(self.starts[shard]) + shard
            bounds = self.offsets[base:base + self.counts[shard] + 1].tolist()
            f.read(bounds[0])  # 0: a tar's first record starts the file
            for begin, end in zip(bounds, bounds[1:]):
                yield f.read(end - begin)

    def scan_all(self) -> Iterator[bytes]:
        """Every shard in order; the next shard's stream is opened (so, remotely, its first chunks requested)
        when the current one starts."""
        n = len(self.names)
        following = self.open_stream(0) if n else None
        try:
            for s in range(n):
                current, following = following, self.open_stream(s + 1) if s + 1 < n else None
                yield from self.scan(s, current)
        finally:
            if following is not None:
                following.close()


def decoder(form: Form) -> Callable[[bytes], Record]:
    """Stored bytes → `Record` for shards of `form` (tar records carry their media bytes in `Media.data`)."""
    return _decode_jsonl if form == "jsonl" else _decode_tar


_decode_jsonl = RECORD_DECODER.decode  # typed: the line's types are checked while it is parsed, in C


def _decode_tar(data: bytes) -> Record:
    record: Record | None = None
    blobs: dict[int, bytes] = {}
    for name, content in _tar_members(data):
        parts = name.split(".")
        if parts[-1] == "json" and len(parts) == 2:
            record = _decode_jsonl(content)
        else:
            blobs[int(parts[1])] = content
    assert record is not None, "tar sample without a .json member"
    for i, m in enumerate(record.media):
        m.data = blobs.get(i)
    return record


def _tar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of one record's tar members. `TarSink` writes plain USTAR headers, read
    here by slicing (`tarfile` costs more than the rest of decoding); any other header goes through `tarfile`."""
    pos, end = 0, len(data)
    while pos + 512 <= end and data[pos] != 0:  # a zero block: the end-of-archive marker after a shard's last record
        kind = data[pos + 156:pos + 157]
        if kind not in (b"0", b"\0") or data[pos + 257:pos + 262] != b"ustar":
            with tarfile.open(fileobj=io.BytesIO(data[pos:]), mode="r:") as tar:
                for member in tar:
                    content = tar.extractfile(member)
                    if content is not None:
                        yield member.name, content.read()
            return
        header = data[pos:pos + 512]
        name = header[:100].split(b"\0", 1)[0].decode()
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = f"{prefix.decode()}/{name}"
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        pos += 512
        yield name, data[pos:pos + size]
        pos += -(-size // 512) * 512
