"""Locations: a local path or a URL (`s3://bucket/prefix`, any fsspec protocol), and the helpers that join and relate
locations of either kind. Nothing else in mmdata looks at a location's scheme."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

Location = str | Path  # a local path, or a URL kept as a string (`Path` would fold `s3://` into `s3:/`)


def is_url(location: Location) -> bool:
    return isinstance(location, str) and "://" in location


def as_location(location: Location) -> Location:
    """A URL as its string (without a trailing '/'), anything else as a `Path`."""
    return location.rstrip("/") if is_url(location) else Path(location)  # type: ignore[union-attr]


def join(location: Location, name: str) -> Location:
    """`name` ('/'-separated, may hold '..') under `location`."""
    if is_url(location):
        scheme, path = str(location).split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(path, name))}"
    return Path(location) / name


def resolve(base: Location, location: Location) -> Location:
    """`location` as given when it is a URL or absolute, else relative to `base` (made absolute when local)."""
    if is_url(location):
        return as_location(location)
    if is_url(base):
        return join(base, str(location)) if not Path(location).is_absolute() else Path(location)
    return (Path(base) / Path(location).expanduser()).resolve()


def relative(location: Location, start: Location) -> str:
    """`location` relative to `start` when both are on one filesystem (one bucket), else `location` itself."""
    if is_url(location) != is_url(start):
        return str(location)
    if not is_url(location):
        return os.path.relpath(location, start)
    (s1, p1), (s2, p2) = (str(x).split("://", 1) for x in (location, start))
    if s1 != s2 or p1.split("/", 1)[0] != p2.split("/", 1)[0]:
        return str(location)
    return posixpath.relpath(p1, p2)


def basename(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]
