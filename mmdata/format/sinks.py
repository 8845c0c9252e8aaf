"""Writing shards: `NNNNNN.jsonl` + `.idx` (`JsonlSink`) and `NNNNNN.tar` + `.tar.idx` (`TarSink`, a webdataset tar
with deterministic member metadata), each hashed as it is written for the manifest's checksums."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from mmdata.core.lines import newlines
from mmdata.core.media import decode as decode_media
from mmdata.core.schema import Record
from mmdata.format.names import data_name, index_name
from mmdata.format.shards import ShardFile
from mmdata.storage.base import StagedFile, Storage


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
