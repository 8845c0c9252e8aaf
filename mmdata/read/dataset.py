"""Read a built dataset lazily: `mmdata.open(path or URL)` → `len`, `[i]`, slices, iteration, `to_pandas()`, media
(the shape every dataset-like object shares: `mmdata.read.records`).

Opening reads the manifest only; the first random read loads the shards' uint64 offset indexes (8 bytes a record).
`[i]` is one slice of a memory-mapped shard (locally) or one ranged GET (on object storage), for JSONL shards and
webdataset tars alike; the shard format itself is `mmdata.format`'s, the backends `mmdata.storage`'s: media are
read through a `Storage` too (the dataset's own for media stored with it, one over the media root otherwise).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from mmdata.core.errors import DamagedData, InputError, NotFound, UserError
from mmdata.core.media import to_rgb
from mmdata.core.schema import Record
from mmdata.format.manifests import INDEX_DTYPE, Manifest, read_manifest
from mmdata.format.names import MANIFEST, MEDIA, Form, media_name
from mmdata.format.reader import ShardReader, decoder
from mmdata.read.frame import records_frame
from mmdata.read.records import Records, Selection
from mmdata.storage.base import Storage, open_storage
from mmdata.storage.location import Location, as_location, basename, join


class MediaUnreachable(UserError):
    """A JSONL dataset's media root (a local folder of the machine that built it) is not here. Not an `OSError`:
    a trainer that skips unreadable images must stop on this instead of skipping every record."""


# What damaged stored bytes raise while decoding (bad JSON or tar, a record that no longer validates).
DAMAGE = (ValueError, KeyError, TypeError, AssertionError, IndexError, EOFError, tarfile.TarError)


@dataclass(frozen=True)
class ShardBytes:
    """One shard file of the form being read, for tools that read it without mmdata's reader (webdataset, a bare
    loop): record `k` of the shard is bytes `[offsets[k], offsets[k + 1])` of the file at `location`."""

    location: Location  # a local path or a URL
    records: int
    bytes: int
    offsets: np.ndarray  # records + 1 byte offsets, the last one the file's size


class Dataset(Records):
    """A built dataset. Records come from the JSONL shards when present, else from the webdataset tars (whose
    records carry their media bytes in `Media.data`); `form` picks one of a `--format both` build."""

    def __init__(self, root: Location, form: Form | None = None, *, storage_options: dict[str, Any] | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.root = as_location(root)
        self.storage = open_storage(self.root, storage_options, cache_dir)
        raw = read_manifest(self.storage, pin=True)  # a rebuild after this is an error, never a silent mix
        self.manifest = Manifest.parse(raw, self.storage.where(MANIFEST))
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        if cache_dir is not None:  # blocks of a rebuilt dataset are filed apart from the old ones
            self.storage.cache_key = self.manifest_sha256  # type: ignore[attr-defined]
        if form is not None and form not in self.manifest.formats:
            raise InputError(f"{self.root}: form {form!r} was not built (formats: {', '.join(self.manifest.formats)})")
        self.form: Form = form or ("jsonl" if "jsonl" in self.manifest.formats else "wds")
        self.media_root = self.manifest.resolve_media_root(self.root)
        self.shards = ShardReader(self.storage, self.manifest.shards, self.form)
        self.decode = decoder(self.form)  # stored bytes -> Record
        self._media_root_storage: Storage | None = None  # opened on first use

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: Any) -> Any:
        if type(i) is not int:  # a slice, positions, a mask (a `Selection`), or a numpy integer
            return self._select(i)
        data = self.raw(i)
        try:
            return self.decode(data)
        except DAMAGE as e:
            raise self.damaged(i % len(self), e) from None

    def __iter__(self) -> Iterator[Record]:
        decode = self.decode
        for row, data in enumerate(self.shards.scan_all()):  # rows in order: shard after shard, each streamed
            try:
                record = decode(data)
            except DAMAGE as e:
                raise self.damaged(row, e) from None
            yield record

    def raw(self, i: int) -> bytes:
        """The stored bytes of record `i` (its JSON line, or its tar members), undecoded."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record index {i} out of range for a dataset of {n} records")
        return self.shards.read_one(i % n)

    def raw_many(self, rows: Sequence[int] | np.ndarray) -> list[bytes]:
        """The stored bytes of records `rows` (any order, repeats allowed), in that order: one batched read."""
        return self.shards.read_rows(rows)

    def located_rows(self, rows: Sequence[int] | np.ndarray) -> list[tuple[bytes, Dataset]]:
        """`raw_many`, each with the dataset that decodes it (this one): what a view reads from its sources."""
        return [(data, self) for data in self.raw_many(rows)]

    def get(self, i: int) -> tuple[Record, Dataset]:
        """Record `i` and the dataset it comes from (this one), like `Mixture.get`."""
        return self[i], self

    _get = get

    def get_many(self, rows: Sequence[int]) -> list[tuple[Record, Dataset]]:
        """`get` for a batch of rows, read in one batch."""
        n = len(self)
        if len(rows) and not -n <= min(rows) <= max(rows) < n:
            raise IndexError(f"a row of {list(rows)!r} is out of range for a dataset of {n} records")
        decode = self.decode
        rows = np.asarray(rows, dtype=np.int64) % max(n, 1)
        try:
            return [(decode(data), self) for data in self.raw_many(rows)]
        except DAMAGE:  # find which one, for the message
            for i in rows.tolist():
                self[i]
            raise

    def damaged(self, i: int, e: Exception) -> DamagedData:
        """Record `i` cannot be read back because of `e`: which file and record, and what to do."""
        s = int(np.searchsorted(self.shards.starts, i, side="right")) - 1
        return DamagedData(f"{join(self.root, self.shards.names[s])}: record {i - int(self.shards.starts[s])} (dataset "
                           f"row {i}) cannot be read ({type(e).__name__}: {e})", self.root)

    def _selection(self, positions: np.ndarray) -> Selection:
        index = np.empty(len(positions), dtype=INDEX_DTYPE)
        index["dataset"] = 0
        index["row"] = positions
        return Selection([self], [basename(self.root)], index, labelled=False)

    def bases(self) -> list[Dataset]:
        return [self]

    def shard_files(self) -> list[ShardBytes]:
        """Where the records' bytes are: each shard file of the form read, with its records' byte offsets (the
        offset indexes are read on the first call). For tools that read the files themselves."""
        reader, offsets = self.shards, self.shards.offsets
        return [ShardBytes(join(self.root, name), count, size, offsets[start + s:start + s + count + 1].copy())
                for s, (name, count, size, start) in enumerate(zip(reader.names, reader.counts, reader.sizes,
                                                                   reader.starts.tolist()))]

    def flat(self) -> tuple[list[Dataset], np.ndarray]:
        """The datasets holding these records (this one) and, per position, (dataset, row): like `View.flat`."""
        index = np.empty(len(self), dtype=INDEX_DTYPE)
        index["dataset"] = 0
        index["row"] = np.arange(len(self), dtype=np.uint64)
        return [self], index

    def close(self) -> None:
        """Release the memory-mapped shards (they are mapped again on demand)."""
        self.storage.close()

    # ---------------------------------------------------------------- media
    @property
    def _stored_media(self) -> bool:
        """Whether media are stored with the dataset (`media/` under its root, written by its build)."""
        return self.manifest.media_root == MEDIA

    @property
    def media_key(self) -> tuple[str, str]:
        """How this dataset finds a record's media by path: datasets with equal keys find every path alike."""
        if self._stored_media:
            return "stored", self.storage.where(MEDIA)
        return ("root", str(self.media_root)) if self.media_root is not None else ("none", "")

    def _media_file(self, path: str) -> tuple[Storage, str]:
        """The storage holding media `path`, and its name there."""
        if self._stored_media:  # through the dataset's storage: checked to be the opened build's (`Storage.pin`)
            return self.storage, media_name(path)
        if self.media_root is None:
            raise NotFound(f"{self.root}: dataset has no media root")
        if self._media_root_storage is None:
            self._media_root_storage = open_storage(self.media_root)
        return self._media_root_storage, path

    def _holder(self, record: Record, j: int) -> Dataset:
        return self  # whichever dataset it was read from: the caller chose this one

    def _media_path(self, record: Record, j: int) -> Location:
        if self.media_root is None:
            raise NotFound(f"{self.root}: dataset has no media root")
        return join(self.media_root, record.media[j].path)

    def check_media(self) -> None:
        """Raise `MediaUnreachable` if this dataset's media are referenced under a media root (a folder of the
        machine that built it, or a URL prefix) that is not reachable from here."""
        root = self.media_root
        if self.form == "jsonl" and root is not None and not self._stored_media \
                and not self._media_file("")[0].reachable():
            raise MediaUnreachable(
                f"{self.root}: its media are referenced in place under {root}, a folder of the machine that built "
                "it (or a prefix since emptied), which is not reachable here; rebuild it with --copy-media (media "
                "stored with the dataset) or --format wds (media inside the shards), or make that folder reachable "
                "at the same path")

    def _open_media(self, record: Record, j: int, whole: bool) -> bytes | BinaryIO:
        """Media `j` of `record`: its bytes (`whole`), or a file to parse; a miss under a root that is not
        reachable is `MediaUnreachable`."""
        m = record.media[j]
        if m.data is not None:
            return m.data if whole else io.BytesIO(m.data)
        storage, name = self._media_file(m.path)
        try:
            return storage.read_bytes(name) if whole else storage.open_file(name)
        except FileNotFoundError:
            self.check_media()
            raise

    def _media_bytes(self, record: Record, j: int) -> bytes:
        return self._open_media(record, j, whole=True)  # type: ignore[return-value]

    def _image(self, record: Record, j: int) -> Image.Image:
        f = self._open_media(record, j, whole=False)
        assert not isinstance(f, bytes)
        with f, Image.open(f) as im:
            return to_rgb(im)

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        return records_frame(self, limit)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "decode": None}  # a msgspec decoder does not pickle: a spawned worker makes its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, decode=decoder(state["form"]))

    def __repr__(self) -> str:
        m = self.manifest
        return f"Dataset({str(self.root)!r}, builder={m.builder!r}, records={len(self)}, form={self.form!r})"
