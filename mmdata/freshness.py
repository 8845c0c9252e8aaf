"""Which input files a build unit reads, and whether they changed since its shard was written.

A build's inputs are the existing files its options name (`--input`, `--labels`, …; folders and media are not
fingerprinted). Each is fingerprinted by size, mtime and sha256; the sha256 is computed once per new (size, mtime)
pair, so a rerun over unchanged inputs only calls `stat`. A unit feeds from the inputs whose path appears in it (a
JSON span names its file) and from those no unit names (a labels file); a unit naming none feeds from all. A
shard's `.done.json` records its unit and its inputs' fingerprints: when either differs on a rerun, that shard is
rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from mmdata.integrity import check_shard
from mmdata.layout import ShardResult, done_name, read_done, write_done
from mmdata.storage import Storage

_CHUNK = 1 << 22
log = logging.getLogger(__name__)


def input_files(options: Any) -> list[Path]:
    """The existing files named by `options` (a dataclass), in field order, without repeats."""
    found: dict[str, Path] = {}
    for value in _leaves(dataclasses.asdict(options)):
        if isinstance(value, Path) and value.is_file():
            found.setdefault(str(value), value)
    return list(found.values())


def fingerprint(path: Path, known: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """{size, mtime_ns, sha256} of `path`; the sha256 is taken from a `known` fingerprint of the same size and
    mtime instead of reading the file again."""
    st = path.stat()
    for k in known:
        if k.get("size") == st.st_size and k.get("mtime_ns") == st.st_mtime_ns and k.get("sha256"):
            return dict(k)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha.hexdigest()}


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """A touched file with the same bytes is unchanged."""
    return a.get("size") == b.get("size") and a.get("sha256") == b.get("sha256")


def describe(unit: Any) -> Any:
    """A unit as plain data (its dataclass fields, else its repr)."""
    return jsonable(dataclasses.asdict(unit)) if dataclasses.is_dataclass(unit) else repr(unit)


def unit_digest(described: Any) -> str:
    """A stable name for what a unit reads."""
    return hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()


def unit_inputs(described: list[Any], inputs: list[Path]) -> list[list[str]]:
    """Per unit, the inputs it reads: those whose path it names plus those no unit names (a labels file read by
    every unit); all of them for a unit that names none."""
    spellings = {str(p): {str(p), str(p.resolve())} for p in inputs}
    named = []
    for d in described:
        strings = {v for v in _leaves(d) if isinstance(v, str)}
        named.append({p for p, names in spellings.items() if names & strings})
    shared = set(spellings) - set().union(*named)
    return [[p for p in spellings if p in mine or p in shared] if mine else list(spellings) for mine in named]


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
        known: dict[str, list[dict[str, Any]]] = {}
        for d in self.done:
            for path, fp in (d.inputs.get("files", {}) if d is not None else {}).items():
                known.setdefault(path, []).append(fp)
        self.prints = {str(p): fingerprint(p, known.get(str(p), ())) for p in inputs}

    def wanted(self, k: int) -> dict[str, Any]:
        return {"unit": self.digests[k], "files": {p: self.prints[p] for p in self.feeds[k]}}

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
