"""Builder inputs given as URLs (`--input s3://bucket/key.jsonl`): staged to a local cache before planning.

Builders read their input files with plain `open`, so each URL-valued input file is fetched once to
`<cache>/<key>/<file name>`, where the key hashes the URL with the object's ETag and size: a rerun reuses the copy
and a changed object lands under a new path, which freshness sees as a changed input (its fingerprint is over the
copy's bytes). The build plans and runs from the copies; the manifest keeps the URLs. The cache is `$MMDATA_CACHE`
/inputs, else `.inputs/` next to a local `--out`, else `~/.cache/mmdata/inputs`.

A URL `--media-root` is not staged: the writer reads each media file through the storage
(`mmdata.storage.mediafiles.read_media`).
Builders that open media themselves with local-only tools declare `Builder.reads_urls = False` and refuse URLs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from mmdata.core.errors import InputError
from mmdata.storage.base import open_storage
from mmdata.storage.files import temp_path
from mmdata.storage.location import basename, is_url
from mmdata.storage.output import Destination


def cache_dir(out: Destination) -> Path:
    if os.environ.get("MMDATA_CACHE"):
        return Path(os.environ["MMDATA_CACHE"]) / "inputs"
    return out.local_cache("inputs")


def _flag(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def urls(options: Any, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(flag, URL) for every URL-valued option (a single value or a list item) but the fields in `skip`: the one
    place a builder's options are asked "local or URL?" (builders open their input files locally)."""
    found = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if f.name not in skip and is_url(v):
                found.append((_flag(f), v))
    return found


def refuse_urls(builder: str, options: Any) -> None:
    """One clear error for a builder that can only open local files (decord, folders of frames or parquet)."""
    found = urls(options)
    if found:
        flag, url = found[0]
        raise InputError(f"mmdata build {builder}: {flag} {url}: this builder opens its files locally and cannot "
                         f"read a URL; download it (aws s3 cp --recursive / sync) or mount the bucket (s3fs, "
                         f"mountpoint-s3) and pass the local path")


def stage_inputs(options: Any, cache: Path, storage_options: dict[str, Any] | None = None) -> Any:
    """`options` with each URL-valued field except `media_root` (read file by file) replaced by its local copy."""
    copies = {url: stage(url, cache, storage_options) for _, url in urls(options, skip=("media_root",))}
    if not copies:
        return options

    def local(v: Any) -> Any:
        return copies.get(v, v) if isinstance(v, str) else v

    changes: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if f.name == "media_root":
            continue
        if isinstance(value, (list, tuple)) and any(isinstance(v, str) and v in copies for v in value):
            changes[f.name] = type(value)(map(local, value))
        elif isinstance(value, str) and value in copies:
            changes[f.name] = copies[value]
    return dataclasses.replace(options, **changes)


def stage(url: str, cache: Path, storage_options: dict[str, Any] | None = None) -> Path:
    """The local copy of the object at `url`, fetched unless a copy of this ETag and size is there already."""
    parent, name = url.rstrip("/").rsplit("/", 1)
    store = open_storage(parent, storage_options)
    info = store.info(name)  # type: ignore[attr-defined]
    if info.get("type") != "file":
        raise InputError(f"{url}: not an object (a prefix?); a URL input must name one file; download a folder "
                         f"first or mount the bucket")
    tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")
    key = hashlib.sha256(f"{url}\0{tag}\0{info.get('size')}".encode()).hexdigest()[:20]
    dst = cache / key / basename(url)
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(dst)
        try:
            with store.stream(name, int(info["size"])) as src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 22)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return dst
