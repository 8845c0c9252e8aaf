"""Which input files a build unit reads, and whether they changed since its shard was written.

A build's inputs are the existing files its options name (`--input`, `--labels`, …; folders and media are not
fingerprinted). A unit feeds from the inputs whose path appears in it and from those no unit names (a labels file);
a unit naming none feeds from all. Each input a unit reads is fingerprinted by size, mtime and the sha256 of the
bytes it reads: the span's bytes for a JSON/JSONL span (so an edit or an append rebuilds only the shards whose
span changed), the whole file otherwise. A shard's `.done.json` records its unit and these fingerprints: when
either differs on a rerun, the shard is rebuilt. A sha256 is computed once per new (size, mtime): a rerun over
unchanged inputs only calls `stat`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from mmdata.format.integrity import check_shard
from mmdata.format.names import done_name
from mmdata.format.shards import ShardResult, read_done, write_done
from mmdata.storage.base import Storage

_CHUNK = 1 << 22


log = logging.getLogger(__name__)


def input_files(options: Any) -> list[Path]:
    """The existing files named by `options` (a dataclass), in field order, without repeats."""
    found: dict[str, Path] = {}
    for value in _leaves(dataclasses.asdict(options)):
        if isinstance(value, Path) and value.is_file():
            found.setdefault(str(value), value)
    return list(found.values())


def fingerprint(path: Path, span: tuple[int, int] | None = None, known: Iterable[dict[str, Any]] = ()
                ) -> dict[str, Any]:
    """{size, mtime_ns, sha256[, span]} of `path`, or of its bytes `span` = [start, end) only. The sha256 is taken
    from a `known` fingerprint of the same size, mtime and span instead of reading the file again."""
    st = path.stat()
    where = list(span) if span is not None else None
    for k in known:
        if (k.get("size"), k.get("mtime_ns"), k.get("span")) == (st.st_size, st.st_mtime_ns, where) and k.get("sha256"):
            return dict(k)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = st.st_size
        if span is not None:
            f.seek(span[0])
            left = span[1] - span[0]
        while left > 0 and (chunk := f.read(min(_CHUNK, left))):
            sha.update(chunk)
            left -= len(chunk)
    fp: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha.hexdigest()}
    if where is not None:
        fp["span"] = where
    return fp


def fingerprint_spans(inputs: dict[str, Any]) -> dict[str, Any]:
    """`Provenance.pending(k)` with each span not yet hashed replaced by its fingerprint (run where the unit runs)."""
    files = {p: fp if "sha256" in fp else fingerprint(Path(p), tuple(fp["span"])) for p, fp in inputs["files"].items()}
    return {**inputs, "files": files}


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same bytes were read: a touched file is unchanged, and so is a span of a file grown after it."""
    if a.get("span") != b.get("span") or a.get("sha256") != b.get("sha256"):
        return False
    return a.get("span") is not None or a.get("size") == b.get("size")


def describe(unit: Any) -> Any:
    """A unit as plain data (its dataclass fields, else its repr)."""
    return jsonable(dataclasses.asdict(unit)) if dataclasses.is_dataclass(unit) else repr(unit)


def unit_digest(described: Any) -> str:
    """A stable name for what a unit reads."""
    return hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()


Feeds = dict[str, "tuple[int, int] | None"]  # input path → the byte span a unit reads of it (None: all of it)


def unit_inputs(described: list[Any], inputs: list[Path]) -> list[Feeds]:
    """Per unit, the inputs it reads: those whose path it names (only the bytes [start, end) of a `{path, start,
    end}` span, e.g. `mmdata.build.sources.Span`) plus those no unit names (a labels file read by every unit); all of
    them for a unit that names none."""
    spelled = {name: str(p) for p in inputs for name in (str(p), str(p.resolve()))}
    named: list[Feeds] = []
    for d in described:
        mine: Feeds = {}
        for node in _nodes(d):
            if isinstance(node, dict) and node.get("path") in spelled and \
                    isinstance(node.get("start"), int) and isinstance(node.get("end"), int):
                mine.setdefault(spelled[node["path"]], (node["start"], node["end"]))
            elif isinstance(node, str) and node in spelled:
                mine[spelled[node]] = None
        named.append(mine)
    every = {str(p): None for p in inputs}
    shared = {p: None for p in every if not any(p in mine for mine in named)}
    return [{**mine, **shared} if mine else dict(every) for mine in named]


def _nodes(value: Any) -> Iterable[Any]:
    """Every dict, list item and leaf of `value`, a span dict before its fields."""
    yield value
    if isinstance(value, dict):
        if {"path", "start", "end"} <= value.keys():
            return  # a span: its path is not also a whole-file reference
        for v in value.values():
            yield from _nodes(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _nodes(v)


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def jsonable(value: Any) -> Any:
    """Paths as strings, tuples as lists: the value as JSON can hold it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


class Provenance:
    """Per shard of a build: may its `.done.json` be trusted (same unit, same inputs, files intact)? And what to
    record in the `.done.json` of a shard just written."""

    def __init__(self, options: Any, units: list[Any], storage: Storage, where: str) -> None:
        self.storage, self.where = storage, where
        inputs = input_files(options)
        described = [describe(u) for u in units]
        self.digests = [unit_digest(d) for d in described]
        self.feeds = unit_inputs(described, inputs)
        self.done = [read_done(storage, k) for k in range(len(units))]
        self.known: dict[str, list[dict[str, Any]]] = {}
        for d in self.done:
            for path, fp in (d.inputs.get("files", {}) if d is not None else {}).items():
                self.known.setdefault(path, []).append(fp)
        self.prints: dict[tuple[str, tuple[int, int] | None], dict[str, Any]] = {}

    def _print(self, path: str, span: tuple[int, int] | None) -> dict[str, Any]:
        # Lazy: only shards that have a .done.json to check, and whole files, are fingerprinted in the driver.
        if (path, span) not in self.prints:
            self.prints[path, span] = fingerprint(Path(path), span, self.known.get(path, ()))
        return self.prints[path, span]

    def wanted(self, k: int) -> dict[str, Any]:
        return {"unit": self.digests[k], "files": {p: self._print(p, span) for p, span in self.feeds[k].items()}}

    def pending(self, k: int) -> dict[str, Any]:
        """What shard k's `.done.json` will record, with its spans still to be hashed by the worker that reads them
        (`fingerprint_spans`): a fresh build then hashes its input in parallel, not serially before any work
        starts. Whole files (a labels file every unit reads) are hashed once, here."""
        files = {p: {"span": list(span)} if span is not None else self._print(p, None)
                 for p, span in self.feeds[k].items()}
        return {"unit": self.digests[k], "files": files}

    def reusable(self, k: int) -> ShardResult | None:
        """Shard k's result if it can be kept as is, else None (it is rebuilt; a warning says why)."""
        done = self.done[k]
        if done is None:
            return None
        want = self.wanted(k)
        why = _why_stale(done.inputs, want)
        if why is None:
            problems = check_shard(self.storage, done.files, done.written)
            why = f"its files no longer match its {done_name(k)} ({problems[0]})" if problems else None
        if why is not None:
            log.warning("%s: rebuilding shard %d: %s", self.where, k, why)
            return None
        if done.inputs != want:  # touched, same bytes: remember the new mtime, to skip hashing next time
            self.record(done)
        return done

    def record(self, result: ShardResult) -> ShardResult:
        result.inputs = self.wanted(result.index)
        write_done(self.storage, result)
        return result


def _why_stale(have: dict[str, Any], want: dict[str, Any]) -> str | None:
    if not have:
        return "it was written without input fingerprints (by an older mmdata)"
    for path, fp in want["files"].items():
        old = have.get("files", {}).get(path)
        if old is None or not same_content(old, fp):
            return f"input {path} changed since the shard was written"
    if have.get("unit") != want["unit"]:
        return "the input items it holds changed (an input or the plan changed)"
    return None
