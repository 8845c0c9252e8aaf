"""Read a built dataset lazily: `mmdata.open(path or URL)` → `len`, `[i]`, iteration, `to_pandas()`, images.

Opening reads the manifest only; the first random read loads the shards' uint64 offset indexes (8 bytes a record).
`[i]` is one slice of a memory-mapped shard (locally) or one ranged GET (on object storage), for JSONL shards and
webdataset tars alike; the shard format itself is `mmdata.format`'s, the backends `mmdata.storage`'s.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmdata.core.errors import DamagedData, InputError, NotFound, UserError
from mmdata.core.media import to_rgb
from mmdata.core.schema import Record
from mmdata.format.manifests import INDEX_DTYPE, Manifest, read_manifest
from mmdata.format.names import MANIFEST, MEDIA, Form, media_name
from mmdata.format.reader import ShardReader, decoder
from mmdata.read.frame import records_frame
from mmdata.storage.base import open_storage
from mmdata.storage.location import Location, as_location, is_url, join


class MediaUnreachable(UserError):
    """A JSONL dataset's media root (a local folder of the machine that built it) is not here. Not an `OSError`:
    a trainer that skips unreadable images must stop on this instead of skipping every record."""


# What damaged stored bytes raise while decoding (bad JSON or tar, a record that no longer validates).
DAMAGE = (ValueError, KeyError, TypeError, AssertionError, IndexError, EOFError, tarfile.TarError)


class Dataset(Sequence[Record]):
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

    # ---------------------------------------------------------------- sequence protocol
    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> Record:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("slices are not supported; use itertools.islice or a list of indices")
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
        return DamagedData(f"{self.root / self.shards.names[s]}: record {i - int(self.shards.starts[s])} (dataset "
                           f"row {i}) cannot be read ({type(e).__name__}: {e})", self.root)

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

    def media_path(self, record: Record, j: int) -> Location:
        if self.media_root is None:
            raise NotFound(f"{self.root}: dataset has no media root")
        return join(self.media_root, record.media[j].path)

    def check_media(self) -> None:
        """Raise `MediaUnreachable` if this dataset's media live in a local folder that is not here."""
        root = self.media_root
        if self.form == "jsonl" and root is not None and not is_url(root) and not Path(root).is_dir():
            raise MediaUnreachable(
                f"{self.root}: its media are referenced in place under {root}, a folder of the machine that built "
                "it, which is not reachable here; rebuild it with --copy-media (media stored with the dataset) or "
                "--format wds (media inside the shards), or mount that folder at the same path")

    def media_bytes(self, record: Record, j: int) -> bytes:
        """The encoded bytes of media `j` of `record` (from the tar, the dataset's own media, or the media root)."""
        m = record.media[j]
        if m.data is not None:
            return m.data
        if self._stored_media:  # through the dataset's storage: checked to be the opened build's (`Storage.pin`)
            return self.storage.read_bytes(media_name(m.path))
        path = self.media_path(record, j)
        if not is_url(path):
            self.check_media()
            return Path(path).read_bytes()
        assert self.media_root is not None
        return open_storage(self.media_root).read_bytes(m.path)

    def image(self, record: Record, j: int) -> Image.Image:
        """Media `j` of `record` as shown, in 8-bit RGB (from the tar bytes or the media root): EXIF rotation
        applied, 16-bit and float samples scaled rather than clipped."""
        m = record.media[j]
        src: Any
        if m.data is None and not is_url(self.media_root or "") and not self._stored_media:
            self.check_media()
            src = self.media_path(record, j)  # a local file of the source's: opened, not read whole
        else:
            src = io.BytesIO(self.media_bytes(record, j))
        with Image.open(src) as im:
            return to_rgb(im)

    # ---------------------------------------------------------------- inspection
    def to_pandas(self, limit: int | None = None) -> Any:
        return records_frame(self, limit)

    def __repr__(self) -> str:
        m = self.manifest
        return f"Dataset({str(self.root)!r}, builder={m.builder!r}, records={len(self)}, form={self.form!r})"
