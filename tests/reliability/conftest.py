"""Helpers for the reliability suite: build a generated source in-process and read what came out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

import mmdata
from mmdata.build.driver import BuildSettings, build
from mmdata.build.registry import get


def run_build(name: str, out: Path, fmt: str = "jsonl", copy_media: bool = False, **options: Any
              ) -> tuple[Any, dict[str, str]]:
    """Build with builder `name`; (the opened dataset, {ref: reason} of the rejects). `read == written + rejected`
    is checked on the way."""
    manifest = build(name, get(name).options(**options), BuildSettings(out=out, format=fmt, copy_media=copy_media))
    c = manifest.counts
    assert c["read"] == c["written"] + c["rejected"], c
    rejects = [orjson.loads(line) for line in (out / "rejects.jsonl").read_bytes().splitlines()]
    assert len(rejects) == c["rejected"]
    return mmdata.open(out), {r["ref"]: r["reason"] for r in rejects}


def turns(question: str = "<image>\nWhat is it?", answer: str = "A thing.") -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def write_jsonl(path: Path, items: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path
