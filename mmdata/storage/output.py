"""Where one writer puts what it makes (a built dataset, a mixture, a view): a `Destination`, opened from a location (a
local folder or a URL prefix) by `open_destination`. This module alone knows how an output is kept safe on each kind
of location; every writer above the storage layer drives the same calls, whatever the location:

    dest = open_destination(out, storage_options)
    with dest.exclusive("mmdata mix", MIXTURE):   # one writer at a time; a half-done replacement is finished or undone
        if not dest.storage.empty():
            dest.replace()                         # from here on, `dest.storage` is where the replacement goes
        ...                                        # write through `dest.storage` (workers open `dest.target` themselves)
        dest.commit()                              # the complete replacement becomes the output

A local folder (`FolderDestination`) is locked by a flock sibling, and a replacement is built in a staging sibling and
swapped in by two renames, so a kill never loses both the old output and the new one (`mmdata.storage.outdir`).
A URL prefix (`PrefixDestination`) has no lock yet (issue 29 adds a lease: `PrefixDestination.exclusive` is its one
place) and no rename: a replacement is written into the prefix itself, emptied first.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from mmdata.storage.base import Storage
from mmdata.storage.files import is_temp
from mmdata.storage.local import LocalStorage
from mmdata.storage.location import Location, as_location, is_url
from mmdata.storage.objectstore import FsspecStorage
from mmdata.storage.outdir import clear_temp_files, locked, recover, staging, swap_in


class Destination(Protocol):
    location: Location  # the output, absolute: what a manifest relates the locations it names to
    storage: Storage  # where writes go: the output itself, or its replacement once `replace()` was called

    @property
    def target(self) -> Location:
        """The location of `storage`, for worker processes that open it themselves."""
        ...

    def where(self, name: str = "") -> str: ...  # for messages, as the user gave it (never a credential)

    def exclusive(self, what: str, complete: str) -> AbstractContextManager[None]:
        """Hold the output for one writer (`what` names it to a second one) for the block, after finishing or undoing
        the replacement a killed writer left halfway (`complete`: the file that marks a finished output)."""
        ...

    def replace(self) -> None:
        """From now on write a complete replacement of the output (in `storage`, empty), which `commit` puts in place.
        Call inside `exclusive`."""
        ...

    def commit(self) -> None:
        """Put the replacement (if one is being written) in place of the output."""
        ...

    def holds_only(self, names: tuple[str, ...]) -> bool:
        """Whether the output holds nothing at its top but `names` (and the temporary files of killed writers)."""
        ...

    def discard(self, folder: str) -> None:
        """Remove `folder` of `storage` and everything under it (e.g. markers of units in progress)."""
        ...

    def discard_temp(self, folders: tuple[str, ...]) -> None:
        """Delete the temporary files killed writers left in `folders` of `storage` ("" is its top). Call inside
        `exclusive`, where no live writer owns one."""
        ...

    def shared_folder(self) -> Path | None:
        """The local folder other machines writing here must see at the same path (None: each reaches it itself)."""
        ...

    def local_cache(self, name: str) -> Path:
        """A local folder for a cache that belongs with this output (`name` names it)."""
        ...


def open_destination(location: Location, options: dict[str, Any] | None = None) -> Destination:
    """The destination at `location`. `options` (credentials, endpoint) only apply to a URL and stay in memory."""
    location = as_location(location)
    if is_url(location):
        return PrefixDestination(str(location), options)
    return FolderDestination(Path(location))


def _holds_only(storage: Storage, names: tuple[str, ...]) -> bool:
    return all(n in names or is_temp(n) for n in storage.list("", ""))


class FolderDestination:
    """A local folder: flock sibling, staging sibling swapped in (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root  # as given: messages name it so
        self.location: Location = root.resolve()
        self.storage: LocalStorage = LocalStorage(root)

    @property
    def target(self) -> Path:
        return self.storage.root

    def where(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    @contextlib.contextmanager
    def exclusive(self, what: str, complete: str) -> Iterator[None]:
        with locked(self.root, what):
            recover(self.root, complete)
            yield

    def replace(self) -> None:
        new = staging(self.root)  # `recover` removed any older one
        new.mkdir(parents=True, exist_ok=True)
        self.storage = LocalStorage(new)

    def commit(self) -> None:
        if self.storage.root != self.root:
            self.storage.close()
            swap_in(self.storage.root, self.root)
            self.storage = LocalStorage(self.root)

    def holds_only(self, names: tuple[str, ...]) -> bool:
        return _holds_only(self.storage, names)

    def discard(self, folder: str) -> None:
        shutil.rmtree(self.storage.root / folder, ignore_errors=True)

    def discard_temp(self, folders: tuple[str, ...]) -> None:
        clear_temp_files(self.storage.root, folders)

    def shared_folder(self) -> Path:
        return self.storage.root.resolve()

    def local_cache(self, name: str) -> Path:
        return Path(self.location).parent / f".{name}"


class PrefixDestination:
    """A URL prefix: no lock yet, no rename; a replacement is written into the emptied prefix (module docstring)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.location: Location = url
        self.storage: FsspecStorage = FsspecStorage(url, options)

    @property
    def target(self) -> str:
        return self.storage.url

    def where(self, name: str = "") -> str:
        return self.storage.where(name)

    @contextlib.contextmanager
    def exclusive(self, what: str, complete: str) -> Iterator[None]:
        # Issue 29: a lease on the prefix, taken here. Until then: one writer per prefix (DATA.md says so). Nothing
        # to recover: a replacement is written in place, never swapped.
        yield

    def replace(self) -> None:
        self.storage.clear()

    def commit(self) -> None:
        pass  # the replacement was written in place

    def holds_only(self, names: tuple[str, ...]) -> bool:
        return _holds_only(self.storage, names)

    def discard(self, folder: str) -> None:
        for name in self.storage.list(folder, ""):
            self.storage.remove(name)

    def discard_temp(self, folders: tuple[str, ...]) -> None:
        pass  # an upload is staged in a local temporary file, never under the prefix

    def shared_folder(self) -> None:
        return None  # every node reaches the store by itself

    def local_cache(self, name: str) -> Path:
        return Path.home() / ".cache" / "mmdata" / name
