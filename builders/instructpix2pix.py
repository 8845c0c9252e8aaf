"""InstructPix2Pix → `edit` records: human `<image> {instruction}` (source image, input) → gpt `<image>` (edited
image, the generation target), as MetaMorph trains it.

Where to get it, in either form (`--input` takes a parquet file, a directory of parquet shards or a release
directory; the form is detected):
- HF parquet `timbrooks/instructpix2pix-clip-filtered` (262 shards, 313,010 rows): `original_prompt`,
  `original_image {bytes, path}`, `edit_prompt`, `edited_prompt`, `edited_image`; the small sample set names the
  input column `input_image`. Images are read in small batches and written out by the writer (files or tar members).
- the original release (`instruct-pix2pix/data/clip-filtered-dataset`): `seeds.json` = `[[folder, [seed, …]], …]`,
  `<folder>/prompt.json` (`input` or `caption`, `edit`, `output`), `<folder>/{seed}_0.jpg` (before),
  `{seed}_1.jpg` (after), `<folder>/metadata.jsonl` (per-seed CLIP scores). A single release directory is the media
  root, so its images are hard-linked into the output, not copied.

Captions are kept as released (mojibake included); text that is not UTF-8 is decoded as cp1252 and noted in meta.
Empty instructions, missing or undecodable images are rejects with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from builders._common import edit_record, input_labels
from mmdata.build import Builder, inside, loads_strict
from mmdata.core.errors import InputError, NotFound
from mmdata.core.media import MediaError
from mmdata.core.options import opt
from mmdata.core.schema import Media, Record, RecordError, Reject

BATCH_ROWS = 32  # two ~50 KB images a row: ~3 MB of bytes in memory per batch
INPUT_COLUMNS = ("original_image", "input_image")
CAPTIONS = {"original_prompt": "input_caption", "edited_prompt": "output_caption"}


@dataclass
class InstructPix2PixOptions:
    input: list[Path] = opt(help="Parquet file, directory of parquet shards, or release directory with seeds.json "
                                 "(repeat for several)", factory=list)


@dataclass(frozen=True)
class ParquetUnit:
    path: str
    label: str
    input_column: str
    row_groups: tuple[int, ...]
    first_row: int  # row number (in the file) of the first row of the first row group
    count: int  # rows to read (fewer than the row groups hold when --limit cuts)


@dataclass(frozen=True)
class ReleaseUnit:
    root: str
    label: str
    in_place: bool  # the root is the build's media root: paths are relative to it and files get hard-linked
    seeds: tuple[tuple[str, str], ...]  # (folder, seed)


def decode_text(raw: Any, meta: dict[str, Any], field: str) -> Any:
    """Bytes as UTF-8, or else cp1252 (never a crash: these captions are real data); a fallback is noted in `meta`.
    Anything else (null, a number from a column of another type) comes back as is, for the caller to judge."""
    if not isinstance(raw, bytes):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        meta.setdefault("not_utf8", []).append(field)
        return raw.decode("cp1252", errors="replace")


# ---------------------------------------------------------------- planning
def detect(path: Path) -> tuple[str, list[Path]]:
    """("release", [dir]) or ("parquet", files); the form is read from the disk, never flagged."""
    if path.is_file():
        return "parquet", [path]
    if path.is_dir():
        if (path / "seeds.json").is_file():
            return "release", [path]
        files = sorted(path.rglob("*.parquet"))
        if files:
            return "parquet", files
        raise InputError(f"{path}: no seeds.json and no *.parquet inside; expected a parquet file, a directory of "
                         "parquet shards or an InstructPix2Pix release directory")
    raise NotFound(f"{path}: input not found")


def _release_roots(options: InstructPix2PixOptions) -> list[Path]:
    return [p for p in options.input if Path(p).is_dir() and (Path(p) / "seeds.json").is_file()]


def media_root(options: InstructPix2PixOptions) -> Path | None:
    roots = _release_roots(options)
    return Path(roots[0]) if len(roots) == 1 else None


def _input_column(pf: pq.ParquetFile, path: Path) -> str:
    names = pf.schema_arrow.names
    found = [c for c in INPUT_COLUMNS if c in names]
    missing = [c for c in ("edit_prompt", "edited_image") if c not in names] + ([] if found else [INPUT_COLUMNS[0]])
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}"
                         f"{' (or ' + repr(INPUT_COLUMNS[1]) + ')' if missing[0] == INPUT_COLUMNS[0] else ''}; "
                         f"columns found: {', '.join(names)}")
    return found[0]


def units(options: InstructPix2PixOptions, shard_size: int, limit: int | None) -> list[ParquetUnit | ReleaseUnit]:
    if not options.input:
        raise InputError("instructpix2pix: give at least one --input")
    forms = [(p, *detect(Path(p))) for p in options.input]
    files = [f for _, _, fs in forms for f in fs]
    labels = iter(input_labels(files))
    root = media_root(options)
    out: list[ParquetUnit | ReleaseUnit] = []
    left = limit
    for _, form, paths in forms:
        for path in paths:
            label = next(labels)
            if left == 0:
                return out
            if form == "parquet":
                new = _parquet_units(path, label, shard_size, left)
            else:
                new = _release_units(path, label, root is not None and Path(root) == path, shard_size, left)
            out.extend(new)
            if left is not None:
                left -= sum(u.count if isinstance(u, ParquetUnit) else len(u.seeds) for u in new)
    return out


def _parquet_units(path: Path, label: str, shard_size: int, left: int | None) -> list[ParquetUnit]:
    """Whole row groups per unit (about `shard_size` rows), so a unit reads only its own part of the file."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    column = _input_column(pf, path)
    cap = math.inf if left is None else left
    out: list[ParquetUnit] = []
    groups: list[int] = []
    first = row = count = total = 0
    for g in range(pf.metadata.num_row_groups):
        if total + count >= cap:
            break
        if not groups:
            first = row
        groups.append(g)
        n = pf.metadata.row_group(g).num_rows
        row += n
        count += n
        if count >= shard_size or total + count >= cap:
            take = int(min(count, cap - total))
            out.append(ParquetUnit(str(path), label, column, tuple(groups), first, take))
            total += take
            groups, count = [], 0
    if groups:
        out.append(ParquetUnit(str(path), label, column, tuple(groups), first, count))
    return out


def _release_units(root: Path, label: str, in_place: bool, shard_size: int, left: int | None
                   ) -> list[ReleaseUnit]:
    try:
        entries = json.loads((root / "seeds.json").read_bytes())
    except ValueError as e:
        raise InputError(f"{root / 'seeds.json'}: invalid JSON ({e})") from None
    if not isinstance(entries, list):
        raise InputError(f"{root / 'seeds.json'}: expected a list of [folder, [seed, ...]], got "
                         f"{type(entries).__name__}")
    pairs: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            raise InputError(f"{root / 'seeds.json'}[{i}]: expected [folder, [seed, ...]], got {entry!r}")
        pairs.extend((str(entry[0]), str(s)) for s in entry[1])
    if left is not None:
        pairs = pairs[:left]
    return [ReleaseUnit(str(root), label, in_place, tuple(pairs[i:i + shard_size]))
            for i in range(0, len(pairs), shard_size)]


# ---------------------------------------------------------------- reading
def records(options: InstructPix2PixOptions, unit: ParquetUnit | ReleaseUnit) -> Iterator[Record | Reject]:
    if isinstance(unit, ParquetUnit):
        yield from _parquet_records(unit)
    else:
        yield from _release_records(unit)


def _parquet_records(unit: ParquetUnit) -> Iterator[Record | Reject]:
    pf = pq.ParquetFile(unit.path)
    schema = pf.schema_arrow
    extra = [f.name for f in schema if f.name not in (*INPUT_COLUMNS, "edited_image", "edit_prompt", *CAPTIONS)
             and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    columns = [unit.input_column, "edited_image", "edit_prompt", *[c for c in CAPTIONS if c in schema.names], *extra]
    name = Path(unit.path).name
    row = unit.first_row
    left = unit.count
    batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=list(unit.row_groups), columns=columns)
    while left > 0:
        try:
            batch = next(batches)
            cols = {c: _pylist(batch.column(c)) for c in columns}
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as e:
            # A damaged page or row group: the rest of this unit cannot be read, but every row is still counted.
            for r in range(row, row + left):
                yield Reject(f"{name} row {r}", f"unreadable parquet data in row groups {list(unit.row_groups)}: {e}")
            return
        for i in range(min(batch.num_rows, left)):
            yield _parquet_record(unit, name, row + i, {c: v[i] for c, v in cols.items()})
        row += batch.num_rows
        left -= batch.num_rows


def _pylist(array: pa.Array) -> list[Any]:
    # Strings come out as bytes so that one invalid UTF-8 caption cannot fail the whole batch.
    if pa.types.is_string(array.type):
        return array.cast(pa.binary()).to_pylist()
    if pa.types.is_large_string(array.type):
        return array.cast(pa.large_binary()).to_pylist()
    return array.to_pylist()


def _parquet_record(unit: ParquetUnit, name: str, row: int, values: dict[str, Any]) -> Record | Reject:
    ref = f"{name} row {row}"
    meta: dict[str, Any] = {"ref": ref}
    blobs: list[bytes] = []
    for column in (unit.input_column, "edited_image"):
        blob = _image_bytes(values[column])
        if not blob:
            return Reject(ref, f"column {column!r}: no image bytes ({_describe(values[column])})")
        blobs.append(blob)
    for column, key in CAPTIONS.items():
        if column in values:
            meta[key] = decode_text(values[column], meta, column)
    for column, value in values.items():
        if column not in (unit.input_column, "edited_image", "edit_prompt", *CAPTIONS) and value is not None:
            meta.setdefault("scores", {})[column] = value
    instruction = decode_text(values["edit_prompt"], meta, "edit_prompt")
    base = f"instructpix2pix/{unit.label}/{row:07d}"
    before = Media(path=f"{base}_0.{_ext(blobs[0])}", data=blobs[0])
    after = Media(path=f"{base}_1.{_ext(blobs[1])}", data=blobs[1])
    try:
        return edit_record(f"{unit.label}:{row}", "instructpix2pix", instruction, before, after, meta, "edit_prompt")
    except RecordError as e:
        return Reject(ref, str(e))


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, bytes) else None


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"bytes is {'empty' if value.get('bytes') == b'' else 'null'}, path {value.get('path')!r}"
    return "null" if value is None else f"{type(value).__name__} value"


def _ext(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data.startswith(b"\x89PNG"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "img"


def _release_records(unit: ReleaseUnit) -> Iterator[Record | Reject]:
    root = Path(unit.root)
    folder_name: str | None = None
    prompt: dict[str, Any] | str = {}
    scores: dict[str, dict[str, Any]] = {}
    for folder, seed in unit.seeds:
        if folder != folder_name:  # seeds of one folder are consecutive: read its files once
            folder_name = folder
            try:
                prompt, scores = _read_folder(inside(root, folder, f"seed folder {folder!r}"))
            except MediaError as e:
                prompt, scores = str(e), {}
        yield _release_record(unit, root, folder, seed, prompt, scores)


def _read_folder(folder: Path) -> tuple[dict[str, Any] | str, dict[str, dict[str, Any]]]:
    """(prompt.json as a dict, or why it is unusable; metadata.jsonl rows by seed)."""
    meta: dict[str, Any] = {}
    try:
        text = decode_text((folder / "prompt.json").read_bytes(), meta, "prompt.json")
        prompt = loads_strict(text or "")
        if not isinstance(prompt, dict):
            raise ValueError(f"expected an object, got {type(prompt).__name__}")
        prompt.update({"_" + k: v for k, v in meta.items()})
    except FileNotFoundError:
        return f"{folder / 'prompt.json'}: file not found", {}
    except (ValueError, RecursionError) as e:
        return f"{folder / 'prompt.json'}: invalid JSON ({e})", {}
    scores: dict[str, dict[str, Any]] = {}
    path = folder / "metadata.jsonl"
    if path.is_file():
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                row = loads_strict(line)
                if not isinstance(row, dict):
                    raise TypeError(f"expected an object, got {type(row).__name__}")
                scores[str(row["seed"])] = {k: v for k, v in row.items() if k != "seed"}
            except (ValueError, KeyError, TypeError, RecursionError):
                # Scores are optional: a broken line is noted on the folder's records, not fatal.
                scores.setdefault("_invalid_lines", {})[str(n)] = line.decode("utf-8", "replace")[:200]
    return prompt, scores


def _release_record(unit: ReleaseUnit, root: Path, folder: str, seed: str, prompt: dict[str, Any] | str,
                    scores: dict[str, dict[str, Any]]) -> Record | Reject:
    ref = f"{Path(unit.root).name}/{folder}/{seed}"
    if isinstance(prompt, str):
        return Reject(ref, prompt)
    media: list[Media] = []
    for k in (0, 1):
        rel = f"{folder}/{seed}_{k}.jpg"
        try:
            inside(root, rel, f"image {rel!r}")  # a seed holding `/` or `..` is refused by name, before any open
        except MediaError as e:
            return Reject(ref, str(e))
        src = root / folder / f"{seed}_{k}.jpg"
        if unit.in_place:  # under the media root: the writer reads, checks and hard-links the file itself
            if not src.is_file():
                return Reject(ref, f"{src}: {'source' if k == 0 else 'edited'} image not found")
            media.append(Media(path=rel))
            continue
        try:
            data = src.read_bytes()
        except FileNotFoundError:
            return Reject(ref, f"{src}: {'source' if k == 0 else 'edited'} image not found")
        except OSError as e:
            return Reject(ref, f"{src}: cannot be read ({e.strerror or e})")
        media.append(Media(path=f"instructpix2pix/{unit.label}/{rel}", data=data))
    meta: dict[str, Any] = {"ref": ref, "folder": folder, "seed": seed,
                            "input_caption": prompt.get("input", prompt.get("caption")),
                            "output_caption": prompt.get("output")}
    if "_not_utf8" in prompt:
        meta["not_utf8"] = prompt["_not_utf8"]
    if seed in scores:
        meta["scores"] = scores[seed]
    if "_invalid_lines" in scores:
        meta["metadata_invalid_lines"] = sorted(int(n) for n in scores["_invalid_lines"])
    try:
        return edit_record(f"{unit.label}:{folder}/{seed}", "instructpix2pix", prompt.get("edit"), media[0],
                           media[1], meta, "edit")
    except RecordError as e:
        return Reject(ref, str(e))


BUILDER = Builder(
    name="instructpix2pix",
    help="InstructPix2Pix (HF parquet shards or the seeds.json release) → edit records, edited image as target.",
    options=InstructPix2PixOptions,
    units=units,
    records=records,
    media_root=media_root,
    generates_media=True,
    reads_urls=False,
)
