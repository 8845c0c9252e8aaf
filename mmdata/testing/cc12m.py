"""A CC12M test world: a TSV in the released format served by a loopback HTTP server, with the failures
real crawls meet (dead links, HTML instead of an image, truncated JPEGs, slow hosts) and the captions that
break naive readers.

Everything is generated from a seed; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mmdata.testing.webserver import Route, Served, serve

Expect = Literal["ok", "missing", "not_image", "truncated", "slow", "bad_row"]

_WORDS = ("a dog", "the old bridge", "two cyclists", "a red kite", "fresh bread", "city lights",
          "a quiet lake", "the mountain trail", "a wooden table", "colourful umbrellas", "an empty street",
          "morning fog")
_PLACES = ("in Paris", "at night", "near the sea", "under the rain", "on a sunny day", "in the garden")
# The quirks CC12M captions really have (DATA.md, cc12m): <PERSON>, quotes, HTML entities, non-ASCII, long, tabs.
_QUIRKS = (
    "<PERSON> walking {w} {p}",
    '"{w}" {p} -- quote of the day',
    "{w} &amp; friends {p}",
    "café façade with {w} {p} — 日本語 ✓",
    "portrait of <PERSON> and <PERSON> with {w}",
    'she said "hello" to {w} {p}',
    "{w}\twith a tab inside the caption",
    "{w} {p}",
)


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the TSV
    url: str
    caption: str
    expect: Expect


@dataclass
class World:
    tsv: Path
    rows: list[Row]
    server: Served
    timeout: int  # seconds: the `slow` rows answer later than this

    def count(self, expect: Expect) -> int:
        return sum(r.expect == expect for r in self.rows)


def caption(i: int, rng: np.random.Generator) -> str:
    w, p = _WORDS[rng.integers(len(_WORDS))], _PLACES[rng.integers(len(_PLACES))]
    if i % 97 == 13:
        return " ".join([w.split()[-1]] * 256)  # CC12M captions run up to 256 words
    return _QUIRKS[i % len(_QUIRKS)].format(w=w, p=p)


def image_bytes(rng: np.random.Generator, width: int, height: int, fmt: str = "JPEG") -> bytes:
    """A smooth gradient with a little noise: photo-like size and decode cost, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(0.2, 1.0, 3)
    diagonal = (x + y) / (width + height)
    base = np.stack([x / width * 255 * a, y / height * 255 * b, diagonal * 255 * c], axis=-1)
    noise = rng.normal(0, 6, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def routes(n_ok: int, seed: int = 0, *, n_missing: int = 0, n_not_image: int = 0, n_truncated: int = 0,
           n_slow: int = 0, slow_delay: float = 4.0,
           size: tuple[int, int] = (160, 120)) -> dict[str, tuple[Route | None, Expect]]:
    """Paths to serve (in TSV order, shuffled by `seed`) with what a download of each should give."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Route | None, Expect]] = []
    for i in range(n_ok):
        w = int(size[0] * rng.uniform(0.6, 1.4))
        h = int(size[1] * rng.uniform(0.6, 1.4))
        fmt = "PNG" if i % 10 == 7 else "JPEG"
        ext = "png" if fmt == "PNG" else "jpg"
        out.append((f"/img/{i}.{ext}", Route(image_bytes(rng, w, h, fmt),
                                             content_type=f"image/{fmt.lower()}"), "ok"))
    out += [(f"/gone/{i}.jpg", None, "missing") for i in range(n_missing)]  # unrouted: the server says 404
    page = Route(b"<html><body>Moved</body></html>", content_type="text/html")
    out += [(f"/page/{i}.jpg", page, "not_image") for i in range(n_not_image)]
    for i in range(n_truncated):
        data = image_bytes(rng, 64, 48)  # a transfer cut in half: the header parses, the decode fails
        out.append((f"/cut/{i}.jpg", Route(data[: len(data) // 2]), "truncated"))
    slow = Route(image_bytes(rng, 32, 32), delay=slow_delay)
    out += [(f"/slow/{i}.jpg", slow, "slow") for i in range(n_slow)]
    order = rng.permutation(len(out))
    return {out[k][0]: (out[k][1], out[k][2]) for k in order}


def write_tsv(path: Path, served: Served, paths: dict[str, tuple[Route | None, Expect]], seed: int = 0,
              bad_rows: bool = True,
              columns: Literal["url-caption", "caption-url"] = "url-caption", header: bool = False) -> list[Row]:
    """The released format: no header, `url<TAB>caption` per line (CC3M: `caption<TAB>url`), UTF-8. `header`:
    the `url<TAB>caption` line img2dataset's recipe prepends (rows then start at line 2)."""
    rng = np.random.default_rng(seed + 1)
    rows: list[Row] = []
    lines: list[str] = ["\t".join(columns.split("-"))] if header else []

    def add(url: str, cap: str, expect: Expect, raw: str | None = None) -> None:
        if raw is None:
            raw = f"{url}\t{cap}" if columns == "url-caption" else f"{cap}\t{url}"
        lines.append(raw)
        rows.append(Row(len(lines), url, cap, expect))

    for i, (p, (_, expect)) in enumerate(paths.items()):
        add(served.url(p), caption(i, rng), expect)
        if bad_rows and i == 5:
            add("", "", "bad_row", raw="this line has no tab at all")
            add("file:///etc/hostname", "a local file must never be read", "bad_row")
            add(served.url("/img/0.jpg"), "   ", "bad_row")  # blank caption: nothing to generate from
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


@contextlib.contextmanager
def world(directory: Path, n_ok: int = 200, seed: int = 0, *, n_missing: int = 20, n_not_image: int = 5,
          n_truncated: int = 3, n_slow: int = 2, timeout: int = 2, bad_rows: bool = True,
          columns: Literal["url-caption", "caption-url"] = "url-caption",
          size: tuple[int, int] = (160, 120), header: bool = False) -> Iterator[World]:
    """Generate the images and `cc12m.tsv` under `directory` and serve them while inside the `with`."""
    paths = routes(n_ok, seed, n_missing=n_missing, n_not_image=n_not_image, n_truncated=n_truncated,
                   n_slow=n_slow, slow_delay=timeout + 2.0, size=size)
    with serve({p: r for p, (r, _) in paths.items() if r is not None}) as served:
        tsv = directory / ("cc12m.tsv" if columns == "url-caption" else "cc3m.tsv")
        rows = write_tsv(tsv, served, paths, seed, bad_rows, columns, header)
        yield World(tsv, rows, served, timeout)


@contextlib.contextmanager
def demo_source(dir: Path) -> Iterator[list[str]]:
    """~30 images and a small TSV on a loopback server; yields `mmdata build cc12m` arguments (all but
    --out)."""
    with world(Path(dir), n_ok=30, n_missing=3, n_not_image=1, n_truncated=1, n_slow=0) as w:
        yield ["--input", str(w.tsv), "--download-dir", str(Path(dir) / "cc12m_img2dataset"),
               "--image-size", "64", "--processes", "1", "--threads", "8", "--timeout", "2"]


def write_img2dataset_folder(folder: Path, sizes: list[tuple[int, int] | None], *, resize_mode: str,
                             image_size: int = 64, per_shard: int = 4, config: bool = False) -> list[str]:
    """What `img2dataset --input_format tsv --output_format webdataset` writes for a TSV whose data rows have
    these original sizes (None: a dead link), resized by img2dataset's own `Resizer`: per shard `NNNNN.tar`
    (`{key}.jpg/.txt/.json`, successes only), `NNNNN.parquet` (every row, with `status`, sizes) and
    `NNNNN_stats.json` (with the run's `config` when `config`, as newer img2dataset versions write). Returns the
    captions, in TSV order (line 2 onwards: img2dataset's TSV input starts with a `url<TAB>caption` header)."""
    import json
    import math
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from img2dataset.resizer import Resizer

    resizer = Resizer(image_size, resize_mode, False)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(1, math.ceil(math.log10(per_shard)))
    captions = [f"photo number {i} {_WORDS[i % len(_WORDS)]}" for i in range(len(sizes))]
    for shard in range(-(-len(sizes) // per_shard)):
        rows: list[dict[str, object]] = []
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                n = shard * per_shard + i
                if n >= len(sizes):
                    break
                key = f"{shard:05d}{i:0{digits}d}"
                row: dict[str, object] = {"url": f"http://127.0.0.1:9/img/{n}.jpg", "caption": captions[n],
                                          "key": key, "status": "failed_to_download",
                                          "error_message": "HTTP Error 404: Not Found", "width": None,
                                          "height": None, "original_width": None, "original_height": None}
                size = sizes[n]
                if size is not None:
                    data, w, h, ow, oh, err = resizer(io.BytesIO(image_bytes(rng, *size)))
                    assert err is None, err
                    row.update(status="success", error_message=None, width=w, height=h, original_width=ow,
                               original_height=oh)
                    for ext, payload in (("jpg", data), ("txt", captions[n].encode()),
                                         ("json", json.dumps(row).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
                rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{shard:05d}.parquet")
        stats: dict[str, object] = {"count": len(rows), "successes": sum(r["status"] == "success" for r in rows)}
        if config:
            stats["config"] = {"resize_mode": resize_mode, "image_size": image_size}
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
    return captions
