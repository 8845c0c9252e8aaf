"""Reading the CC12M/CC3M TSV: captions hold `"` quotes that break CSV readers, `<PERSON>`, HTML entities, non-ASCII,
even tabs, so each line is split here on the tab next to the URL, into `rows.parquet` (line, url, caption, issue):
img2dataset's input. A line that cannot be used keeps its row, with the `issue` and no URL, so it becomes a reject."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmdata.core.schema import IMAGE

_ROWS_SCHEMA = pa.schema([("line", pa.int64()), ("url", pa.string()), ("caption", pa.string()),
                          ("issue", pa.string())])


def count_rows(tsv: Path, limit: int | None) -> int:
    """The rows `convert_tsv` will write: every line but a header, at most `limit`."""
    n = -header_lines(tsv)
    with open(tsv, "rb") as f:
        for _ in f:
            if limit is not None and n >= limit:
                break
            n += 1
    return n


def is_header(raw: bytes) -> bool:
    """`url<TAB>caption` (either order, any case): the header img2dataset's recipe prepends, as its TSV reader
    needs column names. The released file has none."""
    fields = raw.decode("utf-8", "replace").lstrip("\ufeff").strip().split("\t")
    return sorted(f.strip().lower() for f in fields) == ["caption", "url"]


def header_lines(tsv: Path) -> int:
    """1 when the TSV starts with a header line (skipped: neither read nor rejected), else 0."""
    with open(tsv, "rb") as f:
        return int(is_header(f.readline().rstrip(b"\r\n")))


def convert_tsv(tsv: Path, out: Path, columns: str, limit: int | None, batch: int = 200_000) -> int:
    """Every TSV line → one parquet row (line, url, caption, issue); bad lines get an `issue` and no URL.
    `line` is the file's own line number; a header line is skipped, and `limit` counts data lines."""
    n = line = 0
    cols: dict[str, list[Any]] = {k: [] for k in _ROWS_SCHEMA.names}
    with open(tsv, "rb") as f, pq.ParquetWriter(out, _ROWS_SCHEMA) as writer:
        for raw in f:
            line += 1
            raw = raw.rstrip(b"\r\n")
            if line == 1 and is_header(raw):
                continue
            if limit is not None and n >= limit:
                break
            n += 1
            url, caption, issue = parse_line(raw, columns, first=line == 1)
            for k, v in zip(_ROWS_SCHEMA.names, (line, url, caption, issue), strict=True):
                cols[k].append(v)
            if len(cols["line"]) >= batch:
                writer.write_table(pa.table(cols, schema=_ROWS_SCHEMA))
                cols = {k: [] for k in _ROWS_SCHEMA.names}
        writer.write_table(pa.table(cols, schema=_ROWS_SCHEMA))
    return n


def parse_line(raw: bytes, columns: str, first: bool = False) -> tuple[str, str, str | None]:
    """(url, caption, issue). A line with an issue gets url "" so img2dataset fetches nothing for it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return "", "", f"not valid UTF-8 ({e.reason} at byte {e.start})"
    if first:
        text = text.lstrip("\ufeff")
    if "\t" not in text:
        return "", "", "no tab: expected url<TAB>caption (CC3M: caption<TAB>url with --columns caption-url)"
    # URLs never hold a tab, captions may: split on the tab next to the URL.
    url, caption = text.split("\t", 1) if columns == "url-caption" else text.rsplit("\t", 1)[::-1]
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        hint = " (check --columns: CC12M is url-caption, CC3M caption-url)" if " " in url else ""
        return "", caption, f"URL {url[:80]!r} is not http(s){hint}"
    if not caption.strip():
        return "", caption, "empty caption: nothing to generate from"
    if IMAGE in caption:
        return "", caption, f"caption contains the media placeholder {IMAGE}"
    return url, caption, None
