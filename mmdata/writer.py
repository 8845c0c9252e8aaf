"""Write one shard: validate records, decode their media once, and store them as JSONL+index and/or a webdataset tar.

A shard is written under temporary names and renamed when complete; its `.done.json` (counts, checksums, rejects)
is written last, so its existence means "this shard is complete" and a rerun skips it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from mmdata.media import MediaError, decode, inside, place, read_media, write_bytes
from mmdata.schema import Record, RecordError, Reject, validate_dict
from mmdata.storage_errors import writing

RESUME_HINT = "free space (or make it writable) and rerun the same command: complete shards are kept"

Format = Literal["jsonl", "wds"]
FORMATS: dict[str, tuple[Format, ...]] = {"jsonl": ("jsonl",), "wds": ("wds",), "both": ("jsonl", "wds")}


@dataclass(frozen=True)
class ShardConfig:
    """Everything a worker needs to write shards; plain data so it crosses process boundaries."""

    out: Path
    formats: tuple[Format, ...]
    media_root: Path | None  # where the source's media live (in-place references resolve here)
    copy_media: bool  # store media under <out>/media (always true for builders that generate media)


@dataclass
class ShardResult:
    index: int
    read: int = 0
    written: int = 0
    rejected: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    rejects: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("index", "read", "written", "rejected", "files", "tasks", "sources",
                                               "rejects")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardResult:
        return cls(**d)


def shard_name(index: int) -> str:
    return f"{index:06d}"


def done_path(out: Path, index: int) -> Path:
    return out / "shards" / f"{shard_name(index)}.done.json"


class _Hashing:
    """A binary file that hashes what it writes and knows its size (for the manifest's checksums)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        self.f = open(self.tmp, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def commit(self) -> dict[str, Any]:
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"name": f"shards/{self.path.name}", "bytes": self.size, "sha256": self.sha.hexdigest()}

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails again
            self.f.close()
        self.tmp.unlink(missing_ok=True)


def _write_index(path: Path, offsets: list[int]) -> None:
    idx = _Hashing(path)
    try:
        idx.write(np.asarray(offsets, dtype="<u8").tobytes())
        idx.commit()
    except BaseException:
        idx.abort()
        raise


class JsonlSink:
    """`NNNNNN.jsonl`, one record per line, and `NNNNNN.idx`: little-endian uint64 byte offset of each line."""

    _FLUSH = 1 << 22  # buffer ~4 MiB of lines: one write and one hash update instead of thousands

    def __init__(self, shards: Path, name: str) -> None:
        self.data = _Hashing(shards / f"{name}.jsonl")
        self.offsets: list[int] = []
        self.idx_path = shards / f"{name}.idx"
        self.buffer: list[bytes] = []
        self.size = 0  # bytes added so far, buffered or written

    def add(self, line: bytes, record: Record, blobs: list[bytes]) -> None:
        self.add_line(line, record.id)

    def add_line(self, line: bytes, rid: str) -> None:
        self.offsets.append(self.size)
        self.buffer.append(line)
        self.size += len(line) + 1
        if self.size - self.data.size > self._FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.buffer.append(b"")
            self.data.write(b"\n".join(self.buffer))
            self.buffer = []

    def commit(self) -> dict[str, Any]:
        self._flush()
        _write_index(self.idx_path, self.offsets)
        return self.data.commit()

    def abort(self) -> None:
        self.data.abort()


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_EXT = re.compile(r"[a-z0-9]{1,10}")


class TarSink:
    """A webdataset tar: `<key>.json` + `<key>.<i>.<ext>` per record, with deterministic member metadata, and a
    `NNNNNN.tar.idx` of uint64 offsets of each record's first member, for random access."""

    def __init__(self, shards: Path, name: str) -> None:
        self.data = _Hashing(shards / f"{name}.tar")
        self.tar = tarfile.open(fileobj=self.data, mode="w", format=tarfile.USTAR_FORMAT)  # type: ignore[arg-type]
        self.offsets: list[int] = []
        self.idx_path = shards / f"{name}.tar.idx"

    def add(self, line: bytes, record: Record, blobs: list[bytes]) -> None:
        key = self.add_line(line, record.id)
        for i, (m, blob) in enumerate(zip(record.media, blobs)):
            ext = m.path.rsplit(".", 1)[-1].lower() if "." in m.path.rsplit("/", 1)[-1] else "img"
            if not _EXT.fullmatch(ext):  # a tar member name holds 100 bytes: the decoded format's name instead
                ext = decode(blob, m.path).ext
            self._member(f"{key}.{i}.{ext}", blob)

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

    def commit(self) -> dict[str, Any]:
        self.tar.close()  # writes the end-of-archive blocks, leaves the file object open
        _write_index(self.idx_path, self.offsets)
        return self.data.commit()

    def abort(self) -> None:
        self.data.abort()


_SINKS = {"jsonl": JsonlSink, "wds": TarSink}


class ShardWriter:
    """Writes one shard from a stream of `Record | Reject`. Use as a context manager; nothing is visible under the
    final names unless the block completes."""

    def __init__(self, cfg: ShardConfig, index: int) -> None:
        self.cfg = cfg
        self.result = ShardResult(index)
        shards = cfg.out / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        self.sinks = {fmt: _SINKS[fmt](shards, shard_name(index)) for fmt in cfg.formats}
        self._tasks: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:  # a full disk at the last write: no temp file is left behind either
            self.abort()
            raise

    def abort(self) -> None:
        for sink in self.sinks.values():
            sink.abort()

    def add(self, item: Record | dict[str, Any] | Reject) -> bool:
        """Write a record (True) or record why not (False). Counts every input exactly once.

        A record may also come as a dict in `Record.to_dict()` form: media-free ones are validated and written
        without building objects (text-heavy sources are otherwise bound by object construction).
        """
        self.result.read += 1
        if isinstance(item, Reject):
            return self._reject(item.ref, item.reason)
        if isinstance(item, dict):
            if not item["media"]:
                return self._add_dict(item)
            item = Record.from_dict(item)
        try:
            item.validate()
            generated = [m.data is not None for m in item.media]
            blobs = self._check_media(item)
        except (RecordError, MediaError) as e:
            return self._reject(item.meta.get("ref") or item.id, str(e))
        try:
            line = orjson.dumps(item.to_dict())
        except orjson.JSONEncodeError as e:
            return self._reject(item.meta.get("ref") or item.id, _unstorable(e))
        for sink in self.sinks.values():
            sink.add(line, item, blobs)
        if self.cfg.copy_media and "jsonl" in self.cfg.formats:
            self._store_media(item, generated)
        self.result.written += 1
        self._tasks[item.task] += 1
        self._sources[item.source] += 1
        return True

    def _add_dict(self, d: dict[str, Any]) -> bool:
        try:
            validate_dict(d)
        except RecordError as e:
            return self._reject(d["meta"].get("ref") or d["id"], str(e))
        try:
            line = orjson.dumps(d)
        except orjson.JSONEncodeError as e:
            return self._reject(d["meta"].get("ref") or d["id"], _unstorable(e))
        for sink in self.sinks.values():
            sink.add_line(line, d["id"])
        self.result.written += 1
        self._tasks[d["task"]] += 1
        self._sources[d["source"]] += 1
        return True

    def _reject(self, ref: str, reason: str) -> bool:
        self.result.rejected += 1
        self.result.rejects.append({"ref": ref, "reason": reason})
        return False

    def _check_media(self, record: Record) -> list[bytes]:
        """Decode every media entry once; fill in width/height (as shown); resolve letter-case mismatches against
        the disk; note in meta what serving changes (an EXIF rotation, samples reduced to 8 bits)."""
        blobs: list[bytes] = []
        notes = []
        for i, m in enumerate(record.media):
            if m.data is None:
                m.data = self._read_source(record, i)
            info = decode(m.data, f"media[{i}] {m.path!r}")
            m.width, m.height = info.width, info.height
            if info.notes():
                notes.append({"media": i, **info.notes()})
            blobs.append(m.data)
        if notes:
            record.meta["media_notes"] = notes
        return blobs

    def _read_source(self, record: Record, i: int) -> bytes:
        m = record.media[i]
        data, found = read_media(self.cfg.media_root, m.path, f"media[{i}] {m.path!r}")
        if found != m.path:
            record.meta.setdefault("case_resolved", []).append({"from": m.path, "to": found})
            m.path = found
        return data

    def _store_media(self, record: Record, generated: list[bool]) -> None:
        media_dir = self.cfg.out / "media"
        for m, made in zip(record.media, generated):
            dst = media_dir / m.path
            if not made:  # a source file: linked (or copied), never re-encoded
                assert self.cfg.media_root is not None
                place(inside(self.cfg.media_root, m.path, f"media {m.path!r}"), dst)  # a symlink's target, never the link
            else:
                # Written in place, not via temp + rename: a media file only counts once the shard's .done.json
                # exists, and a rerun of an unfinished shard rewrites the same paths.
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(m.data)

    def commit(self) -> ShardResult:
        for fmt, sink in self.sinks.items():
            self.result.files[fmt] = sink.commit()
        self.result.tasks = dict(sorted(self._tasks.items()))
        self.result.sources = dict(sorted(self._sources.items()))
        done = done_path(self.cfg.out, self.result.index)
        write_bytes(orjson.dumps(self.result.to_dict()), done)
        return self.result


def _unstorable(e: Exception) -> str:
    return f"cannot be stored as JSON ({e}): an integer beyond 64 bits, nesting deeper than 254 levels or a " \
           "lone surrogate in a string"


def write_shard(cfg: ShardConfig, index: int, items: Iterable[Record | Reject]) -> ShardResult:
    with writing(cfg.out / "shards" / f"{shard_name(index)}.*", RESUME_HINT), ShardWriter(cfg, index) as w:
        for item in items:
            w.add(item)
    return w.result
