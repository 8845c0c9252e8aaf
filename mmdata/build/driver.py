"""Run a builder into a dataset (a local folder or a URL prefix): units → shards (in worker processes), resume,
rejects, manifest.

The manifest (`dataset.json`) is written last: its existence means the build is complete. A build killed midway
leaves complete shards (with their `.done.json`) and no manifest; rerunning the same command skips those shards.
Where the output is, and how it is locked and replaced, is the `Destination`'s business (`mmdata.storage.output`):
`build` and `DatasetWriter` prepare it the one same way (`_prepare`), wherever it is.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import orjson

from mmdata.build.executors import make_executor
from mmdata.build.executors.base import ENGINES, Engine, Job, Todo, shared_paths, tidy
from mmdata.build.freshness import Provenance, jsonable
from mmdata.build.inputs import cache_dir, refuse_urls, stage_inputs
from mmdata.build.registry import Builder, get
from mmdata.build.writer import FORMATS, RESUME_HINT, Format, ShardConfig, ShardWriter
from mmdata.core.commands import STORAGE_OPTIONS_HELP, parse_storage_options
from mmdata.core.errors import InputError, NotFound, writing
from mmdata.core.options import opt
from mmdata.format.manifests import SCHEMA_VERSION, Manifest
from mmdata.format.names import BUILD, MANIFEST, MEDIA, REJECTS, SHARDS
from mmdata.format.shards import ShardResult, any_done, remove_shards_from
from mmdata.storage.base import Storage
from mmdata.storage.location import Location, as_location
from mmdata.storage.mediafiles import open_media_root
from mmdata.storage.output import Destination, open_destination

DEFAULT_SHARD_SIZE = 10_000


class BuildError(InputError):
    """A build cannot start (wrong output directory, bad options); the message says how to fix it."""


@dataclass(frozen=True)
class BuildSettings:
    """How a build runs and what it writes, beside the builder's own options: `mmdata build <name>`'s flags
    (`mmdata.core.flags`) and `build()`'s argument."""

    out: Location = opt(short="-o", help="Output dataset directory or URL (s3://bucket/prefix)")
    format: Format = opt("jsonl", help="jsonl (+ offset index), wds (webdataset tars) or both")
    workers: int = opt(1, short="-w", help="Worker processes (--engine local); the output does not depend on it")
    copy_media: bool = opt(False, help="Store media under <out>/media instead of referencing them in place")
    shard_size: int = opt(DEFAULT_SHARD_SIZE, help="Input items per shard")
    limit: int | None = opt(None, help="Read at most this many input items")
    overwrite: bool = opt(False, help="Replace an existing, different build in --out")
    # where units run (mmdata.build.executors); never changes what the build writes
    engine: Engine = opt("local", help="local: this machine's processes; ray: one Ray task per shard on a cluster "
                                       "(same output)")
    ray_address: str = opt("auto", help="--engine ray: the cluster, auto (the one `ray start` runs here) or HOST:PORT")
    storage_options: dict[str, Any] | None = opt(None, help=STORAGE_OPTIONS_HELP, metavar="JSON",
                                                 parse=parse_storage_options, repr=False, compare=False)  # never stored

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", as_location(self.out))
        if self.engine not in ENGINES:
            raise BuildError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.format not in FORMATS:
            raise BuildError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.workers < 1:
            raise BuildError(f"--workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise BuildError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.limit is not None and self.limit < 0:
            raise BuildError(f"--limit must be >= 0, got {self.limit}")


def _identity(builder: Builder, options: Any, settings: BuildSettings) -> dict[str, Any]:
    """What determines the shards' content: a rerun must match it to resume."""
    return {
        "builder": builder.name,
        "args": jsonable(dataclasses.asdict(options)),
        "format": settings.format,
        "copy_media": settings.copy_media or builder.generates_media,
        "shard_size": settings.shard_size,
        "limit": settings.limit,
    }


Replace = Literal["never", "builds", "anything"]  # what an output may hold for `_prepare` to replace it


def _prepare(dest: Destination, identity: dict[str, Any], replace: Replace, fix: str) -> None:
    """Make `dest.storage` the place to build into, holding the build's identity (`.build.json`): the output itself
    (new; resumed when it holds this same build and `replace` is "never"; emptied when it holds an attempt that never
    completed a shard, e.g. a typo in --input), or a replacement that `dest.commit()` puts in place once complete
    (an output with shards, or files that are not a build: on a local folder a kill then loses neither the old
    output nor the new). `replace` says what may be replaced: "never" (`build` without --overwrite), "builds"
    (`DatasetWriter`: any mmdata build, never resumed) or "anything" (--overwrite); else a `BuildError` ends with
    `fix`. Call inside `dest.exclusive`."""
    output = dest.storage
    output.check()
    if not output.empty():
        marked = output.exists(BUILD)
        if marked and replace == "never" and orjson.loads(output.read_bytes(BUILD)) == identity:
            return  # the same build: resume
        started = output.exists(MANIFEST) or any_done(output)
        if not marked or started:
            if replace == "never" or (not marked and replace == "builds"):
                what = "a different build" if marked else "files that are not an mmdata build"
                raise BuildError(f"{dest.where()}: output holds {what}; {fix}")
            dest.replace()
        else:  # nothing to keep
            output.clear()
    dest.storage.write_bytes(BUILD, orjson.dumps(identity, option=orjson.OPT_INDENT_2))


def _media_root(root: Location | None, flag: str, storage_options: dict[str, Any] | None) -> Location | None:
    try:
        return None if root is None else open_media_root(root, storage_options)
    except NotFound as e:
        raise BuildError(f"{flag} {e}") from None


def build(builder_name: str, options: Any, settings: BuildSettings, progress: bool = False) -> Manifest:
    """Build (or resume) a dataset and return its manifest."""
    dest = open_destination(settings.out, settings.storage_options)
    with writing(dest.where(), RESUME_HINT), dest.exclusive("mmdata build", MANIFEST):
        return _build(builder_name, options, settings, dest, progress)


def _build(builder_name: str, options: Any, settings: BuildSettings, dest: Destination, progress: bool) -> Manifest:
    builder = get(builder_name)
    identity = _identity(builder, options, settings)  # before staging: the manifest names the URLs
    if not builder.reads_urls:
        refuse_urls(builder.name, options)
    media_root = _media_root(builder.media_root(options), "--media-root", settings.storage_options)
    options = stage_inputs(options, cache_dir(dest), settings.storage_options)
    # Before planning: a wrong --out must fail before a builder starts converting or downloading anything.
    _prepare(dest, identity, "anything" if settings.overwrite else "never",
             "choose another --out or pass --overwrite")
    dest.discard_temp(("", SHARDS))
    storage = dest.storage
    with make_executor(settings.engine, settings.workers, settings.ray_address) as executor:
        # Before planning too: a worker that cannot see an input or --out fails the build before any work.
        executor.check_paths(shared_paths(options, dest.shared_folder()))
        units = list(builder.units(options, settings.shard_size, settings.limit))
        provenance = Provenance(options, units, storage, str(settings.out))
        if builder.start is not None:
            units = builder.start(options, settings.shard_size, settings.limit, units)
        cfg = ShardConfig(dest.target, FORMATS[settings.format], media_root, identity["copy_media"],
                          settings.storage_options)

        results: dict[int, ShardResult] = {}
        todo: list[Todo] = []
        for k, unit in enumerate(units):
            done = provenance.reusable(k)
            if done is not None:
                results[k] = done
            else:
                todo.append(Todo(k, unit, provenance.pending(k)))
        storage.close()
        if todo:
            # The dataset changes: until its new manifest is written, it is not complete.
            storage.remove(MANIFEST)
        remove_shards_from(storage, len(units))  # a shorter input leaves fewer shards
        ready = partial(builder.ready, options) if builder.ready is not None else None
        with _Progress(progress, len(units), len(results)) as bar:
            for r in executor.run(Job(builder.name, options, cfg), todo, ready):
                results[r.index] = r
                bar.advance(r)
    tidy(dest)
    if builder.finish is not None:
        builder.finish(options, storage)
    manifest = _finish(storage, identity, cfg, [results[k] for k in range(len(units))])
    dest.commit()
    return manifest


def _finish(storage: Storage, identity: dict[str, Any], cfg: ShardConfig, shards: list[ShardResult]) -> Manifest:
    rejects = b"".join(orjson.dumps(r) + b"\n" for s in shards for r in s.rejects)
    storage.write_bytes(REJECTS, rejects)
    tasks: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for s in shards:
        tasks.update(s.tasks)
        sources.update(s.sources)
    counts = {k: sum(getattr(s, k) for s in shards) for k in ("read", "written", "rejected")}
    assert counts["read"] == counts["written"] + counts["rejected"], counts
    media_root: str | None
    if cfg.copy_media:
        media_root = MEDIA
    else:
        media_root = str(cfg.media_root) if cfg.media_root is not None else None
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        builder=identity["builder"],
        args=identity["args"],
        formats=list(cfg.formats),
        shard_size=identity["shard_size"],
        media_root=media_root,
        counts=counts,
        tasks=dict(sorted(tasks.items())),
        sources=dict(sorted(sources.items())),
        shards=[s.entry() for s in shards],
    )
    manifest.save(storage)
    return manifest


class _Progress:
    """A rich progress bar over shards (or nothing, for library use and tests)."""

    def __init__(self, enabled: bool, total: int, already: int) -> None:
        self.enabled = enabled and total > 0
        self.total, self.already = total, already
        self.written = self.rejected = 0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("shards  {task.fields[info]}"), TimeRemainingColumn(),
                                transient=False, disable=not os.isatty(2) and "MMDATA_PROGRESS" not in os.environ)
            self.bar.start()
            self.task = self.bar.add_task("build", total=self.total, completed=self.already, info="")
        return self

    def advance(self, r: ShardResult) -> None:
        self.written += r.written
        self.rejected += r.rejected
        if self.enabled:
            self.bar.update(self.task, advance=1, info=f"{self.written} written, {self.rejected} rejected")

    def __exit__(self, *_: Any) -> None:
        if self.enabled:
            self.bar.stop()


class DatasetWriter:
    """Write records you already have into a dataset, without a builder:

        with mmdata.DatasetWriter("data/mine", media_root="/data/images", format="both") as w:
            for record in my_records():
                w.add(record)          # Record, or Reject(ref, reason); returns False if rejected
            w.add_many(more_records)   # the same, a batch at a time (faster for plain text records)
        # dataset.json is written here, on a clean exit only

    Same checks, layout and manifest as `mmdata build` (shards of `shard_size` records, media decoded once,
    rejects counted with their reason), into a local folder or a URL prefix (`storage_options`: its credentials),
    prepared the way a build prepares its --out. No resume: a previous dataset there is replaced once the new one is
    complete; an exception leaves no new manifest, and the next run writes the dataset anew.
    """

    def __init__(self, out: Location, *, media_root: Location | None = None, format: str = "jsonl",
                 copy_media: bool = False, shard_size: int = DEFAULT_SHARD_SIZE, name: str = "records",
                 storage_options: dict[str, Any] | None = None) -> None:
        settings = BuildSettings(out=out, format=format, shard_size=shard_size)  # validates the flags
        root = _media_root(media_root, "media_root", storage_options)
        self.dest = open_destination(settings.out, storage_options)
        self.name, self.shard_size, self.storage_options = name, settings.shard_size, storage_options
        self.identity = {"builder": name, "args": {"media_root": None if root is None else str(root)},
                         "format": format, "copy_media": copy_media, "shard_size": shard_size, "limit": None}
        self.cfg = ShardConfig(self.dest.target, FORMATS[format], root, copy_media, storage_options)
        self.results: list[ShardResult] = []
        self._shard: Any = None

    def __enter__(self) -> DatasetWriter:
        with ExitStack() as held:
            held.enter_context(self.dest.exclusive("mmdata DatasetWriter", MANIFEST))
            _prepare(self.dest, self.identity, "builds", "choose another out, or empty it")
            self.cfg = dataclasses.replace(self.cfg, out=self.dest.target)  # a replacement is written elsewhere
            self._held = held.pop_all()
        return self

    def add(self, item: Any) -> bool:
        written = self._open_shard().add(item)
        self._commit_if_full()
        return written

    def add_many(self, items: Sequence[Any]) -> int:
        """`add` on each item, in order, with the same result (a batch of plain text records is checked and encoded
        in a few whole-batch passes); returns how many were written."""
        done = written = 0
        while done < len(items):
            shard = self._open_shard()
            take = self.shard_size - shard.result.read
            before = shard.result.written
            shard.add_many(list(items[done:done + take]))
            written += shard.result.written - before
            done += take
            self._commit_if_full()
        return written

    def _open_shard(self) -> Any:
        if self._shard is None:
            self._shard = ShardWriter(self.cfg, len(self.results))
        return self._shard

    def _commit_if_full(self) -> None:
        if self._shard.result.read == self.shard_size:
            self.results.append(self._shard.commit())
            self._shard = None

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is not None:
                if self._shard is not None:
                    self._shard.__exit__(exc_type, None, None)
                return
            if self._shard is not None:
                self.results.append(self._shard.commit())
                self._shard = None
            self.manifest = _finish(self.dest.storage, self.identity, self.cfg, self.results)
            self.dest.commit()
        finally:
            self._held.close()
