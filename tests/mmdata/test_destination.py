"""One output abstraction for every writer (`mmdata.storage.output.Destination`): the same calls give the same files on
a local folder and on a bucket (a real S3 server on the loopback), every writer (build, `DatasetWriter`, mix, dedup
and decontamination views) drives the same calls whatever its location, and nothing above the storage layer asks
"local or URL?" again."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pytest

import mmdata
import mmdata.build.driver as driver
import mmdata.mix.planner as planner
import mmdata.quality.selection as selection
from builders.cambrian import CambrianOptions
from mmdata.build.driver import BuildError, BuildSettings, DatasetWriter, build
from mmdata.core.schema import Media, Record, Turn
from mmdata.format.names import BUILD, INDEX, MANIFEST, REMOVED
from mmdata.mix.planner import mix
from mmdata.quality.dedup import DedupOptions, dedup
from mmdata.storage.location import Location
from mmdata.storage.output import Destination, open_destination
from mmdata.testing.llava import World
from mmdata.testing.s3 import S3Server

pytest.importorskip("s3fs")
ROOT = Path(__file__).resolve().parents[2]
BUCKET = "mmdata-dest"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        server.bucket(BUCKET)
        yield server


def _files(where: Location) -> dict[str, bytes]:
    """Every file under `where` (a folder or a URL) by relative name, read afresh; `.done.json` without the node
    that wrote it (the one thing two identical builds differ in)."""
    if isinstance(where, Path):
        found = {p.relative_to(where).as_posix(): p.read_bytes() for p in sorted(where.rglob("*")) if p.is_file()}
    else:
        fs, root = fsspec.core.url_to_fs(where, use_listings_cache=False)  # one client (S3Server drops it after)
        found = {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}
    return {k: orjson.dumps({**orjson.loads(v), "node": None}) if k.endswith(".done.json") else v
            for k, v in sorted(found.items())}


def _places(tmp_path: Path, name: str) -> tuple[Path, str]:
    """The same output name on local disk and in the bucket (a prefix of its own per test)."""
    return tmp_path / name, f"s3://{BUCKET}/{tmp_path.name}/{name}"


# ---------------------------------------------------------------- the Destination API, on both kinds of location
def _one_writer_then_a_replacement(where: Location) -> tuple[object, ...]:
    dest = open_destination(where)
    with dest.exclusive("test writer", "done"):
        fresh = dest.storage.empty()
        dest.storage.put_files([("media/a.jpg", b"A", None), ("media/b/c.png", b"C", None)])
        dest.storage.write_bytes(".running/000000.json", b"{}")
        dest.storage.write_bytes("done", b"1")
        dest.discard(".running")
        dest.discard_temp(("", "media"))
        dest.commit()
    first = _files(where)
    with dest.exclusive("test writer", "done"):
        holds = dest.holds_only(("done", "media")), dest.holds_only(("done",))
        dest.replace()
        replacing = dest.storage.empty()  # the replacement starts empty
        dest.storage.write_bytes("done", b"2")
        dest.commit()
    return fresh, first, holds, replacing, _files(where)


def test_the_same_calls_give_the_same_files_on_a_folder_and_a_bucket(s3: S3Server, tmp_path: Path) -> None:
    folder, prefix = _places(tmp_path, "out")
    want_first = {"done": b"1", "media/a.jpg": b"A", "media/b/c.png": b"C"}
    assert _one_writer_then_a_replacement(folder) == _one_writer_then_a_replacement(prefix) == \
        (True, want_first, (True, False), True, {"done": b"2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, staging or old sibling left


def test_a_folder_keeps_its_output_whole_until_the_replacement_is_committed(tmp_path: Path) -> None:
    dest = open_destination(tmp_path / "out")
    with dest.exclusive("test writer", "done"):
        dest.storage.write_bytes("done", b"old")
        dest.commit()
        dest.replace()
        dest.storage.write_bytes("done", b"new")
        assert (tmp_path / "out" / "done").read_bytes() == b"old" and dest.target != tmp_path / "out"
        dest.commit()
    assert (tmp_path / "out" / "done").read_bytes() == b"new" and dest.target == tmp_path / "out"


def test_a_local_source_is_linked_and_a_bucket_gets_its_bytes(s3: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "src.jpg"
    src.write_bytes(b"JPEG")
    folder, prefix = _places(tmp_path, "out")
    for where in (folder, prefix):
        open_destination(where).storage.put_files([("media/x.jpg", b"JPEG", src)])
        assert _files(where) == {"media/x.jpg": b"JPEG"}
    assert (folder / "media" / "x.jpg").stat().st_ino == src.stat().st_ino


def test_where_workers_and_caches_find_an_output(s3: S3Server, tmp_path: Path) -> None:
    folder, prefix = _places(tmp_path, "out")
    local, remote = open_destination(folder), open_destination(prefix + "/")
    assert local.shared_folder() == folder.resolve() and remote.shared_folder() is None
    assert local.local_cache("inputs") == tmp_path.resolve() / ".inputs"
    assert remote.local_cache("inputs") == Path.home() / ".cache" / "mmdata" / "inputs"
    assert remote.location == remote.target == prefix and local.location == folder.resolve()


# ---------------------------------------------------------------- a build's output, prepared one way
IDENTITY = {"builder": "t", "shard_size": 2}
OTHER = {"builder": "t", "shard_size": 3}
_DONE = "shards/000000.done.json"
STATES: dict[str, dict[str, bytes]] = {
    "empty": {},
    "same": {BUILD: orjson.dumps(IDENTITY), "shards/000000.jsonl": b"half"},
    "same, started": {BUILD: orjson.dumps(IDENTITY), _DONE: b'{"node":null}'},
    "other": {BUILD: orjson.dumps(OTHER), "shards/000000.jsonl": b"half"},
    "other, started": {BUILD: orjson.dumps(OTHER), _DONE: b'{"node":null}'},
    "other, complete": {BUILD: orjson.dumps(OTHER), MANIFEST: b"{}"},
    "foreign": {"notes.txt": b"mine"},
}
# state → (without --overwrite, DatasetWriter, --overwrite): what `_prepare` does
EXPECTED = {
    "empty": ("new", "new", "new"),
    "same": ("resume", "clear", "clear"),
    "same, started": ("resume", "replace", "replace"),
    "other": ("clear", "clear", "clear"),
    "other, started": ("a different build", "replace", "replace"),
    "other, complete": ("a different build", "replace", "replace"),
    "foreign": ("files that are not an mmdata build", "files that are not an mmdata build", "replace"),
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("kind", ["folder", "bucket"])
def test_an_output_is_resumed_emptied_replaced_or_refused_alike_everywhere(
        s3: S3Server, tmp_path: Path, state: str, kind: str) -> None:
    ours = orjson.dumps(IDENTITY, option=orjson.OPT_INDENT_2)
    for mode, want in zip(("never", "builds", "anything"), EXPECTED[state]):
        folder, prefix = _places(tmp_path, mode)
        where: Location = prefix if kind == "bucket" else folder
        dest = open_destination(where)
        for name, data in STATES[state].items():
            dest.storage.write_bytes(name, data)
        with dest.exclusive("test", MANIFEST):
            before = dest.target
            try:
                driver._prepare(dest, IDENTITY, mode, "FIX")  # type: ignore[arg-type]
            except BuildError as e:
                assert str(e) == f"{dest.where()}: output holds {want}; FIX", mode
                assert _files(where) == STATES[state], mode  # untouched
                continue
            replaced = dest.target != before
            staged = _files(where)  # the output, while the new build is written
            dest.commit()
        got = _files(where)
        if want == "resume":
            assert got == STATES[state], mode
        else:
            assert got == {BUILD: ours}, mode
        # Only a folder builds a replacement beside the output (an object store has no rename)...
        assert replaced == (want == "replace" and kind == "folder"), mode
        # ... so there the old output stays whole until the new one is complete.
        assert staged == (STATES[state] if replaced or want == "resume" else {BUILD: ours}), mode


# ---------------------------------------------------------------- every writer drives the same calls
_CALLS = {"where", "exclusive", "replace", "commit", "holds_only", "discard", "discard_temp", "shared_folder",
          "local_cache"}


class _Spy:
    """A `Destination` that logs which of its methods a writer calls."""

    def __init__(self, dest: Destination, log: list[str]) -> None:
        self._dest, self._log = dest, log

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._dest, name)
        if name not in _CALLS:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append(name)
            return value(*args, **kwargs)
        return call


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], object]], list[str]]:
    """`spied(write)`: the Destination calls `write()` makes (through whichever writer module it uses)."""
    log: list[str] = []

    def opened(location: Location, options: dict[str, Any] | None = None) -> Destination:
        return _Spy(open_destination(location, options), log)  # type: ignore[return-value]

    for module in (driver, planner, selection):
        monkeypatch.setattr(module, "open_destination", opened)

    def run(write: Callable[[], object]) -> list[str]:
        log.clear()
        write()
        return list(log)
    return run


def _same_calls(spied: Callable[[Callable[[], object]], list[str]], folder: Path, prefix: str,
                write: Callable[[Location], object], must: set[str]) -> None:
    here, there = spied(lambda: write(folder)), spied(lambda: write(prefix))
    assert here == there and must <= set(here), (here, there)


def test_a_build_and_its_overwrite_take_the_same_path_to_a_folder_and_a_bucket(
        s3: S3Server, llava_world: World, tmp_path: Path, spied: Any) -> None:
    folder, prefix = _places(tmp_path, "ds")
    options = CambrianOptions(input=[llava_world.jsonl], media_root=llava_world.media_root)
    for shard_size, must in ((7, {"exclusive", "commit", "discard", "discard_temp"}), (5, {"replace"})):
        settings = {"format": "both", "copy_media": True, "shard_size": shard_size, "overwrite": True}
        _same_calls(spied, folder, prefix, lambda out: build("cambrian", options, BuildSettings(out=out, **settings)),
                    must)
        assert _files(folder) == _files(prefix)


def _records(n: int, image: str | None = None) -> list[Record]:
    return [Record(id=f"r{i}", source="mine", task="vqa" if image else "text",
                   conversations=[Turn("human", ("<image>\n" if image else "") + f"q{i % 3}"), Turn("gpt", f"a{i % 3}")],
                   media=[Media(path=image)] if image else []) for i in range(n)]


def test_a_dataset_writer_takes_the_same_path_to_a_folder_and_a_bucket(
        s3: S3Server, llava_world: World, tmp_path: Path, spied: Any) -> None:
    folder, prefix = _places(tmp_path, "mine")

    def write(out: Location, n: int) -> None:
        with DatasetWriter(out, media_root=llava_world.media_root, format="both", copy_media=True,
                           shard_size=3) as w:
            w.add_many(_records(n, "coco/000000.jpg"))

    for n, must in ((5, {"exclusive", "commit"}), (4, {"replace"})):  # the second replaces the first
        _same_calls(spied, folder, prefix, lambda out: write(out, n), must)
        files = _files(folder)
        assert files == _files(prefix) and "media/coco/000000.jpg" in files
        assert [r.id for r in mmdata.open(prefix)] == [r.id for r in mmdata.open(folder)] == [f"r{i}" for i in range(n)]


def test_a_mix_and_a_view_take_the_same_path_to_a_folder_and_a_bucket(
        s3: S3Server, tmp_path: Path, spied: Any) -> None:
    with DatasetWriter(tmp_path / "d", shard_size=4) as w:
        w.add_many(_records(10))  # texts repeat every 3 records: 7 duplicates
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nseed: 1\nsize: 6\nsources:\n  - {{path: {tmp_path / 'd'}, weight: 1}}\n")
    mixed = _places(tmp_path, "m")
    for must in ({"exclusive", "holds_only", "commit"}, {"replace"}):
        _same_calls(spied, *mixed, lambda out: mix(recipe, out), must)
        assert _files(mixed[0])[INDEX] == _files(mixed[1])[INDEX]

    opts = DedupOptions(images="none", text="exact", workers=1, cache=tmp_path / "cache")
    view = _places(tmp_path, "v")
    for must in ({"exclusive", "holds_only", "commit"}, {"replace"}):
        _same_calls(spied, *view, lambda out: dedup([tmp_path / "d"], out, opts), must)
        here, there = _files(view[0]), _files(view[1])
        assert here[INDEX] == there[INDEX] and here[REMOVED] == there[REMOVED] and here[REMOVED].count(b"\n") == 7
    assert [r.id for r in mmdata.open(view[1])] == [r.id for r in mmdata.open(view[0])] == ["r0", "r1", "r2"]


# ---------------------------------------------------------------- no "local or URL?" above the storage layer
_WRITERS = ("build", "mix", "quality", "format")
_BACKENDS = {"is_url", "LocalStorage", "FsspecStorage", "FolderDestination", "PrefixDestination", "locked",
             "recover", "staging", "swap_in", "clear_temp_files"}
_ALLOWED = {("mmdata/build/inputs.py", "is_url")}  # `urls`: the one place a builder's options are checked for URLs


def test_no_writer_above_the_storage_layer_picks_a_backend() -> None:
    found = set()
    for package in _WRITERS:
        for path in sorted((ROOT / "mmdata" / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmdata.storage"):
                    found |= {(rel, a.name) for a in node.names if a.name in _BACKENDS}
                elif isinstance(node, ast.Import):
                    found |= {(rel, a.name) for a in node.names if a.name.startswith("mmdata.storage")}
    assert found == _ALLOWED
