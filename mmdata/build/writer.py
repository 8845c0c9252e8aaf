"""Write one shard: validate records, decode their media once, and store them as JSONL+index and/or a webdataset tar.

The files themselves (names, indexes, the `.done.json` written last) are `mmdata.format`'s; this module decides
what goes in them: which records are valid, which are rejected and why, and where their media go.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec
import orjson

from mmdata.core import rules
from mmdata.core.errors import writing
from mmdata.core.media import MediaError, decode
from mmdata.core.schema import Media, Record, RecordError, Reject, Turn
from mmdata.format.names import Form, media_name, shard_pattern
from mmdata.format.shards import ShardResult, write_done
from mmdata.format.sinks import SINKS
from mmdata.storage.base import open_storage
from mmdata.storage.location import Location, join
from mmdata.storage.mediafiles import local_file, read_media

RESUME_HINT = "free space (or make it writable) and rerun the same command: complete shards are kept"


_MEDIA_BATCH = 64 << 20  # media bytes held before they are stored (an object store uploads a batch concurrently)


Format = Literal["jsonl", "wds", "both"]  # what `--format` names: the forms a build writes
FORMATS: dict[str, tuple[Form, ...]] = {"jsonl": ("jsonl",), "wds": ("wds",), "both": ("jsonl", "wds")}


@dataclass(frozen=True)
class ShardConfig:
    """Everything a worker needs to write shards; plain data so it crosses process boundaries."""

    out: Location  # a local folder or a URL prefix
    formats: tuple[Form, ...]
    media_root: Location | None  # where the source's media live (in-place references resolve here; may be a URL)
    copy_media: bool  # store media under <out>/media (always true for builders that generate media)
    # Credentials for a URL `out`: handed to worker processes in memory, never written or shown.
    storage_options: dict[str, Any] | None = field(default=None, repr=False, compare=False)


class ShardWriter:
    """Writes one shard from a stream of `Record | Reject`. Use as a context manager; nothing is visible under the
    final names unless the block completes."""

    def __init__(self, cfg: ShardConfig, index: int, node: dict[str, Any] | None = None,
                 inputs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.result = ShardResult(index, node=node or {})
        self._inputs = inputs or {}  # or how to get them once the shard is written (they may be hashed meanwhile)
        self.storage = open_storage(cfg.out, cfg.storage_options)
        self._media: list[tuple[str, bytes, Path | None]] = []  # media to store: (name, bytes, local source)
        self._media_bytes = 0
        self.sinks = {fmt: SINKS[fmt](self.storage, index) for fmt in cfg.formats}
        self._sinks = list(self.sinks.values())
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

        A record may also come as a dict in `Record.to_dict()` form."""
        self.result.read += 1
        if type(item) is not Record:
            if isinstance(item, Reject):
                return self._reject(item.ref, item.reason)
            if isinstance(item, dict):
                item = Record.from_dict(item)
        generated: list[bool] = []
        blobs: list[bytes] = []
        try:
            item.validate()
            if item.media:
                generated = [m.data is not None for m in item.media]
                blobs = self._check_media(item)
        except (RecordError, MediaError) as e:
            return self._reject(item.meta.get("ref") or item.id, str(e))
        try:
            line = encode(item)
        except orjson.JSONEncodeError as e:
            return self._reject(item.meta.get("ref") or item.id, _unstorable(e))
        for sink in self._sinks:
            sink.add(line, item, blobs)
        if generated and self.cfg.copy_media and "jsonl" in self.cfg.formats:
            self._store_media(item, generated, blobs)
        self.result.written += 1
        self._tasks[item.task] += 1
        self._sources[item.source] += 1
        return True

    def add_many(self, items: list[Record | Reject]) -> None:
        """`add` on each item, in order, with the same outcome. Runs of valid media-free records with plain meta
        (text conversion's common case) are checked and encoded in a few whole-batch passes in C instead: the
        contract's batch check (`rules.RULES.plain_mask`), and `_plain_metas` for what msgspec writes as orjson does."""
        records = [x for x in items if type(x) is Record]
        plain = rules.RULES.plain_mask(records)
        metas = list(map(_META, records))
        if not _plain_metas(metas):  # msgspec writes other values than orjson would (floats), or refuses them
            plain = [p and q for p, q in zip(plain, _plain_each(metas))]
        if all(plain) and set(map(type, items)) <= {Record, Reject}:  # the usual batch
            if not records or self._write_plain(records):
                for x in items:
                    if type(x) is Reject:
                        self.add(x)  # rejects: in their order among themselves, as records are
                return
            plain = [False] * len(records)
        run: list[Record] = []  # consecutive plain records
        flags = iter(plain)
        for item in items:
            if type(item) is Record and next(flags):
                run.append(item)
                continue
            self._write_run(run)
            run = []
            self.add(item)
        self._write_run(run)

    def _write_run(self, records: list[Record]) -> None:
        if records and not self._write_plain(records):
            for record in records:
                self.add(record)

    def _write_plain(self, records: list[Record]) -> bool:
        """Write valid media-free records with plain meta (see `Rules.plain_mask`, `_plain`) in one encoding pass; False
        (nothing written) if msgspec cannot encode one of them (`add` then tells why)."""
        ids, sources, tasks, metas = (list(map(f, records)) for f in (_ID, _SOURCE, _TASK, _META))
        try:
            blob = _ENCODE_LINES(list(map(_Stored, ids, sources, tasks, repeat([]), map(_TURNS, records), metas)))
        except (TypeError, ValueError, OverflowError):
            return False
        for sink in self._sinks:
            sink.add_lines(blob, ids)
        n = len(records)
        self.result.read += n
        self.result.written += n
        for counter, values in ((self._tasks, tasks), (self._sources, sources)):
            if values.count(values[0]) == n:  # one task, one source: the usual batch
                counter[values[0]] += n
            else:
                counter.update(values)
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
        data, found = read_media(self.cfg.media_root, m.path, f"media[{i}] {m.path!r}", self.cfg.storage_options)
        if found != m.path:
            record.meta.setdefault("case_resolved", []).append({"from": m.path, "to": found})
            m.path = found
        return data

    def _store_media(self, record: Record, generated: list[bool], blobs: list[bytes]) -> None:
        for m, made, blob in zip(record.media, generated, blobs):
            # A source file under a local media root is linked rather than copied (a symlink's target, never the
            # link); generated media, and those read from a URL, are written.
            source = None if made else local_file(self.cfg.media_root, m.path, f"media {m.path!r}")
            self._media.append((media_name(m.path), blob, source))
            self._media_bytes += len(blob)
        if self._media_bytes > _MEDIA_BATCH:
            self._flush_media()

    def _flush_media(self) -> None:
        # Before the shard's .done.json, like every media file: a shard never counts done without its media.
        if self._media:
            self.storage.put_files(self._media)
            self._media, self._media_bytes = [], 0

    def commit(self) -> ShardResult:
        self._flush_media()
        for fmt, sink in self.sinks.items():
            self.result.files[fmt] = sink.commit()
        self.result.tasks = dict(sorted(self._tasks.items()))
        self.result.sources = dict(sorted(self._sources.items()))
        self.result.inputs = self._inputs() if callable(self._inputs) else self._inputs
        write_done(self.storage, self.result)
        return self.result


class _Stored(msgspec.Struct, gc=False):
    """A media-free record's fields in their stored order (`Record.to_dict`), for msgspec to encode."""

    id: str
    source: str
    task: str
    media: list[Media]
    conversations: list[Turn]
    meta: dict[str, Any]


_ENCODER = msgspec.json.Encoder()


_ENCODE, _ENCODE_LINES = _ENCODER.encode, _ENCODER.encode_lines


_ID, _SOURCE, _TASK, _TURNS, _META = map(attrgetter, ("id", "source", "task", "conversations", "meta"))


def encode(record: Record) -> bytes:
    """A valid record's stored line: `orjson.dumps(record.to_dict())`, byte for byte.

    A media-free record whose meta holds only strings, 64-bit integers, booleans and nulls is encoded by msgspec
    straight from the struct (the same bytes: msgspec and orjson differ only in how they write floats, and in what
    they refuse); any other record, or one msgspec cannot encode, takes orjson, which also raises the error a
    reject reports."""
    if not record.media and _plain(record.meta):
        try:
            return _ENCODE(_Stored(record.id, record.source, record.task, record.media, record.conversations,
                                   record.meta))
        except (TypeError, ValueError, OverflowError):
            pass
    return orjson.dumps(record.to_dict())


# What msgspec writes exactly as orjson does, read by `_plain` (one meta) and `_plain_metas` (a batch): a dict with
# string keys whose values are of these types, integers within orjson's range.
_PLAIN = frozenset((str, type(None), bool, int))


_INT_MIN, _INT_END = -(2**63), 2**64


def _plain(meta: dict[str, Any]) -> bool:
    """Whether msgspec encodes this meta as orjson does (a test holds `_plain_metas` to it)."""
    if type(meta) is not dict:
        return False
    for k, v in meta.items():
        t = type(v)
        if type(k) is not str or t not in _PLAIN or (t is int and not _INT_MIN <= v < _INT_END):
            return False
    return True


def _plain_each(metas: list[dict[str, Any]]) -> list[bool]:
    """`_plain` of each meta: runs of `_RUN` judged at once by `_plain_metas`, one meta at a time in runs that fail."""
    out: list[bool] = []
    for at in range(0, len(metas), _RUN):
        run = metas[at:at + _RUN]
        out += [True] * len(run) if _plain_metas(run) else list(map(_plain, run))
    return out


_RUN = 32


def _plain_metas(metas: list[dict[str, Any]]) -> bool:
    """`_plain` of every meta (of at least one), in a few passes over the whole batch."""
    if set(map(type, metas)) != {dict} or not set(map(type, chain.from_iterable(metas))) <= {str}:
        return False
    values = list(chain.from_iterable(map(dict.values, metas)))
    kinds = set(map(type, values))
    if not kinds <= _PLAIN:
        return False
    if int in kinds:
        ints = [v for v in values if type(v) is int]
        return min(ints) >= _INT_MIN and max(ints) < _INT_END
    return True


def _unstorable(e: Exception) -> str:
    return f"cannot be stored as JSON ({e}): an integer beyond 64 bits, nesting deeper than 254 levels or a " \
           "lone surrogate in a string"


_TUNE_LOCK = threading.Lock()


_tune_users = 0


_tune_saved: tuple[tuple[int, int, int], float] | None = None


@contextmanager
def _tuned_for_batches() -> Iterator[None]:
    """While shards are written: the cyclic GC's youngest generation collected every 50,000 new containers instead
    of 700 (a batch holds ~10k short-lived records, turns and dicts, which the default traverses over and over),
    and the GIL handed over within 0.5 ms instead of 5 (the threads writing files, hashing and fingerprinting would
    otherwise wait up to 5 ms for each step between their C calls). Threads writing shards share one setting."""
    global _tune_users, _tune_saved
    with _TUNE_LOCK:
        if _tune_users == 0:
            _tune_saved = gc.get_threshold(), sys.getswitchinterval()
            gc.set_threshold(max(_tune_saved[0][0], 50_000), *_tune_saved[0][1:])
            sys.setswitchinterval(min(_tune_saved[1], 0.0005))
        _tune_users += 1
    try:
        yield
    finally:
        with _TUNE_LOCK:
            _tune_users -= 1
            if _tune_users == 0 and _tune_saved is not None:
                gc.set_threshold(*_tune_saved[0])
                sys.setswitchinterval(_tune_saved[1])


def write_shard(cfg: ShardConfig, index: int, items: Iterable[Record | Reject | list[Record | Reject]],
                node: dict[str, Any] | None = None,
                inputs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> ShardResult:
    """Write shard `index`; its `.done.json` records `node` (where) and `inputs` (the fingerprints of what it read,
    so a rerun can trust it even if the driver that asked for it died before seeing it finish; a callable is
    called once the records are written)."""
    with writing(join(cfg.out, shard_pattern(index)), RESUME_HINT), ShardWriter(cfg, index, node, inputs) as w, \
            _tuned_for_batches():
        for item in items:
            if type(item) is list:
                w.add_many(item)
            else:
                w.add(item)
    return w.result
