"""Locations: a local path or a URL, joined and related without a URL ever passing through `Path`."""

from __future__ import annotations

from pathlib import Path

from mmdata.storage.base import open_storage
from mmdata.storage.local import LocalStorage
from mmdata.storage.location import as_location, basename, is_url, join, relative, resolve


def test_urls_stay_strings_and_paths_become_paths(tmp_path: Path) -> None:
    assert as_location("s3://b/x/") == "s3://b/x" and as_location(str(tmp_path)) == tmp_path
    assert is_url("s3://b/x") and not is_url(tmp_path) and not is_url("data/x")
    assert join("s3://b/mix/m", "../../ds/a") == "s3://b/ds/a" and join(tmp_path, "a") == tmp_path / "a"
    assert resolve("s3://b/recipes", "../ds") == "s3://b/ds" and resolve(tmp_path, "s3://c/d") == "s3://c/d"
    assert resolve(tmp_path / "r", "../ds") == (tmp_path / "ds").resolve()
    assert relative("s3://b/ds/a", "s3://b/mix/m") == "../../ds/a"
    assert relative("s3://other/ds", "s3://b/mix") == "s3://other/ds"  # another bucket: kept whole
    assert relative("s3://b/ds", tmp_path) == "s3://b/ds" and basename("s3://b/ds/cambrian/") == "cambrian"
    assert isinstance(open_storage(tmp_path), LocalStorage)


def test_local_listing_clear_and_delete(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path / "out")
    assert s.empty() and s.list("", "") == []
    s.write_bytes("a.json", b"{}")
    s.write_bytes("shards/000000.done.json", b"{}")
    assert s.list("", ".json") == ["a.json"] and s.list("shards", ".done.json") == ["shards/000000.done.json"]
    s.remove("a.json")
    s.remove("a.json")  # absent: no error
    assert not s.exists("a.json") and not s.empty()
    s.clear()
    assert s.empty()
