"""Files put in place atomically: written under a temporary name beside their final one (`temp_path`), then renamed;
a copy of a local file is a hard link when the filesystem allows."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import socket
from pathlib import Path

from mmdata.core.media import NAME_MAX


def place(src: Path, dst: Path) -> None:
    """Put a copy of `src` at `dst`: a hard link when the filesystem allows (free), else a byte copy."""
    if dst.exists() and os.path.samefile(src, dst):
        return  # the same image referenced by several records
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)  # rename() between two links of one file is a no-op that leaves `tmp`


def write_bytes(data: bytes, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)  # left only when writing failed (a full disk)


def temp_path(path: Path) -> Path:
    """Where to write `path` before renaming it into place: `<name>.<host>.<pid>.tmp` beside it. The host is in the
    name because two attempts at one shard on two machines of a shared filesystem can have the same PID. A name too
    long for the filesystem is replaced by its hash (only the final name is ever read)."""
    tail = f".{_host()}.{os.getpid()}.tmp"
    name = path.name
    if len((name + tail).encode("utf-8", "surrogateescape")) > NAME_MAX:
        name = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return path.with_name(name + tail)


def is_temp(name: str) -> bool:
    """Whether `name` is one `temp_path` gives: a file being written, or left by a killed writer."""
    return name.endswith(".tmp")


@functools.cache
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
