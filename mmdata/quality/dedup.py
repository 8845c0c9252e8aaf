"""`mmdata dedup INPUT... --out VIEW`: drop duplicate records within and across datasets, views and mixtures.

Two records are duplicates when every criterion asked for holds:
- images (`--images`): the same number of media, and media k of one matches media k of the other — by identical
  bytes (`exact`: sha256), or by perceptual hash within Hamming distance D (`phash:D`, identical bytes included);
- text (`--text`): the conversations (roles and words, whitespace and case ignored) are identical (`exact`), or
  their estimated Jaccard similarity over 3-word shingles is at least J (`minhash:J`).
`none` switches a criterion off. So by default the same question about a re-encoded copy of the same image is a
duplicate, and a different question about the same image is not.

Keep rule: positions are numbered in input order (inputs as given on the command line, records in each input's
order); a record is removed when it duplicates an earlier record that is kept, and `removed.jsonl` names that
record. The first of any group of duplicates is therefore always kept, and the result depends on nothing else.

Scale: candidates come from keys, never from all pairs. Each record gets one key per (MinHash LSH band, pHash
chunk): with the 64-bit pHash cut into D+1 chunks, two hashes within distance D agree on at least one chunk, and two
texts at Jaccard ≥ J share a band with high probability. Records sharing a key are verified with the full
signatures. Memory is a few arrays of 8 bytes per record and per band, whatever the corpus: no Python object per
record, no in-memory LSH index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mmdata.format.manifests import ViewManifest
from mmdata.quality.options import DedupOptions
from mmdata.quality.selection import Inputs, Removal
from mmdata.quality.signatures import SignatureParams
from mmdata.storage.location import Location

_PAIR_BATCH = 1 << 16  # candidate pairs verified at a time (bounds the signature rows in memory)


# ---------------------------------------------------------------------------------------------- keys
_MULT = np.random.default_rng(20261201).integers(1, 2**63, size=256, dtype=np.uint64) | np.uint64(1)


def _mix(*parts: np.ndarray) -> np.ndarray:
    """One 64-bit key from several uint64 arrays (a collision only adds a candidate; candidates are verified)."""
    out = np.zeros(len(parts[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k, p in enumerate(parts):
            out = (out ^ p.astype(np.uint64)) * _MULT[k]
            out ^= out >> np.uint64(29)
    return out


def band_layout(jaccard: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + false negatives at `jaccard` (datasketch's rule)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(jaccard, num_perm, 0.5, 0.5)


def _chunks(distance: int) -> list[tuple[int, int]]:
    """(shift, bits) of the D+1 pieces of a 64-bit hash (pigeonhole: within distance D, one piece is equal)."""
    n = distance + 1
    sizes = [64 // n + (1 if k < 64 % n else 0) for k in range(n)]
    shifts = np.cumsum([0, *sizes[:-1]]).tolist()
    return list(zip(shifts, sizes))


# ---------------------------------------------------------------------------------------------- dedup
class _Signatures:
    """Per-position signature arrays of the inputs (gathered from the per-shard cache)."""

    def __init__(self, inputs: Inputs, opts: DedupOptions, params: SignatureParams) -> None:
        self.inputs = inputs
        sigs = inputs.sigs
        self.text_key = inputs.gather([s.column("text_key") for s in sigs])
        media = [s.media() for s in sigs]
        self.media_start = [m[0] for m in media]
        self.media_sha, self.media_phash, self.media_ok = ([m[k] for m in media] for k in (1, 2, 3))
        count = [np.diff(m[0]) for m in media]
        self.n_media = inputs.gather(count)
        first = [np.minimum(m[0][:-1], max(len(m[1]) - 1, 0)) for m in media]
        # the first media's value, or `fill` for a record without media
        pick = lambda arrays, fill: [np.where(c > 0, a[f], fill) if len(a) else np.full(len(f), fill, a.dtype)  # noqa: E731
                                     for a, f, c in zip(arrays, first, count)]
        self.first_sha = inputs.gather(pick(self.media_sha, 0))
        self.first_phash = inputs.gather(pick(self.media_phash, 0))
        self.first_ok = inputs.gather(pick(self.media_ok, False), fill=False)
        self.bands: list[np.ndarray] = []
        if opts.text_mode == "minhash":
            b, r = band_layout(opts.jaccard, params.num_perm)
            per_dataset = []
            for s in sigs:  # one shard's signatures in memory at a time, each band a 64-bit key
                parts = []
                for sh in s.shards:
                    mh = sh.minhash()
                    parts.append(np.stack([_mix(*(mh[:, k * r + i] for i in range(r))) for k in range(b)], axis=1))
                per_dataset.append(np.concatenate(parts) if parts else np.zeros((0, b), np.uint64))
            self.bands = [inputs.gather([keys[:, k] for keys in per_dataset]) for k in range(b)]

    def minhash(self, positions: np.ndarray) -> np.ndarray:
        inputs = self.inputs
        out = None
        base, row = inputs.base[positions], inputs.row[positions]
        for d, s in enumerate(inputs.sigs):
            where = np.flatnonzero(base == d)
            if where.size:
                rows = s.minhash_rows(row[where])
                if out is None:
                    out = np.empty((len(positions), rows.shape[1]), dtype=np.uint32)
                out[where] = rows
        assert out is not None
        return out

    def media(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d, r = int(self.inputs.base[p]), int(self.inputs.row[p])
        lo, hi = self.media_start[d][r], self.media_start[d][r + 1]
        return self.media_sha[d][lo:hi], self.media_phash[d][lo:hi], self.media_ok[d][lo:hi]


def _text_parts(sig: _Signatures, opts: DedupOptions) -> list[np.ndarray]:
    if opts.text_mode == "exact":
        return [sig.text_key]
    if opts.text_mode == "minhash":
        return sig.bands
    return [np.zeros(len(sig.text_key), np.uint64)]


def _image_parts(sig: _Signatures, opts: DedupOptions) -> list[np.ndarray]:
    count = sig.n_media.astype(np.uint64)
    if opts.image_mode == "none":
        return [np.zeros(len(count), np.uint64)]
    if opts.image_mode == "exact":
        return [_mix(count, sig.first_sha)]
    # A first image that does not decode can only match by its bytes: every chunk key is its sha.
    parts = []
    for shift, bits in _chunks(opts.distance):
        piece = (sig.first_phash >> np.uint64(shift)) & np.uint64((1 << bits) - 1)
        parts.append(_mix(count, np.where(sig.first_ok, piece, sig.first_sha), np.full(len(count), shift, np.uint64)))
    return parts


def candidate_pairs(keys: Iterator[np.ndarray], star: bool) -> np.ndarray:
    """Pairs (i < j) of positions that share a key, packed as i << 32 | j, unique and sorted. With `star` (keys
    that decide equality outright), each position is paired with the first of its key only."""
    found = []
    for key in keys:
        order = np.argsort(key, kind="stable")
        sk = key[order]
        edge = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        starts, ends = np.concatenate([[0], edge]), np.concatenate([edge, [len(sk)]])
        multi = np.flatnonzero(ends - starts > 1)
        if not multi.size:
            continue
        sizes = (ends - starts)[multi]
        pairs = (sizes == 2) | star
        if star:  # every member of the run with the run's first (lowest position, as the sort is stable)
            lo = np.repeat(order[starts[multi]], sizes - 1)
            hi = order[np.concatenate([np.arange(s + 1, e) for s, e in zip(starts[multi], ends[multi])])]
            found.append((lo.astype(np.uint64) << np.uint64(32)) | hi.astype(np.uint64))
            continue
        two = starts[multi][pairs]
        a, b = order[two], order[two + 1]
        found.append((np.minimum(a, b).astype(np.uint64) << np.uint64(32)) | np.maximum(a, b).astype(np.uint64))
        for s, e in zip(starts[multi][~pairs].tolist(), ends[multi][~pairs].tolist()):
            members = np.sort(order[s:e])
            i, j = np.triu_indices(len(members), 1)
            found.append((members[i].astype(np.uint64) << np.uint64(32)) | members[j].astype(np.uint64))
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)


def _verify(sig: _Signatures, opts: DedupOptions, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(holds, text similarity) of each candidate pair."""
    same_text = sig.text_key[i] == sig.text_key[j]
    sim = same_text.astype(np.float64)
    ok = np.ones(len(i), dtype=bool)
    if opts.text_mode == "exact":
        ok &= same_text
    elif opts.text_mode == "minhash":
        sim = np.maximum(sim, (sig.minhash(i) == sig.minhash(j)).mean(axis=1))
        ok &= sim >= opts.jaccard
    if opts.image_mode != "none":
        ok &= sig.n_media[i] == sig.n_media[j]
        for k in np.flatnonzero(ok).tolist():
            ok[k] = _media_distance(sig, int(i[k]), int(j[k]), opts) is not None
    return ok, sim


def _media_distance(sig: _Signatures, p: int, q: int, opts: DedupOptions) -> int | None:
    """The largest pHash distance over corresponding media (0 for identical bytes), None if a pair fails."""
    (sa, pa, oa), (sb, pb, ob) = sig.media(p), sig.media(q)
    if len(sa) != len(sb):
        return None
    worst = 0
    for k in range(len(sa)):
        if sa[k] == sb[k]:
            continue
        if opts.image_mode == "exact" or not (oa[k] and ob[k]):
            return None
        d = int(np.bitwise_count(pa[k] ^ pb[k]))
        if d > opts.distance:
            return None
        worst = max(worst, d)
    return worst


def find_duplicates(inputs: Inputs, opts: DedupOptions, params: SignatureParams) -> list[Removal]:
    sig = _Signatures(inputs, opts, params)
    star = opts.text_mode != "minhash" and opts.image_mode != "phash"
    keys = (_mix(t, im) for t in _text_parts(sig, opts) for im in _image_parts(sig, opts))
    pairs = candidate_pairs(keys, star)
    verified_i, verified_j, sims = [], [], []
    for lo in range(0, len(pairs), _PAIR_BATCH):
        batch = pairs[lo:lo + _PAIR_BATCH]
        i, j = (batch >> np.uint64(32)).astype(np.int64), (batch & np.uint64(0xFFFFFFFF)).astype(np.int64)
        ok, sim = _verify(sig, opts, i, j)
        verified_i.append(i[ok])
        verified_j.append(j[ok])
        sims.append(sim[ok])
    if not verified_i:
        return []
    vi, vj, vs = np.concatenate(verified_i), np.concatenate(verified_j), np.concatenate(sims)
    order = np.lexsort((vi, vj))  # by j, then i: each j meets its earliest kept duplicate first
    removed_by = np.full(len(inputs), -1, dtype=np.int64)
    removals = []
    for i, j, s in zip(vi[order].tolist(), vj[order].tolist(), vs[order].tolist()):
        if removed_by[j] >= 0 or removed_by[i] >= 0:
            continue
        removed_by[j] = i
        reason, kind = _reason(sig, opts, i, j, s)
        removals.append(Removal(j, reason, kind, {"position": i}))
    return removals


def _reason(sig: _Signatures, opts: DedupOptions, i: int, j: int, sim: float) -> tuple[str, str]:
    inputs = sig.inputs
    if inputs.base[i] == inputs.base[j] and inputs.row[i] == inputs.row[j]:
        return "the same record again", "repeated record"
    parts, kinds = [], []
    if opts.text_mode != "none":
        exact = sig.text_key[i] == sig.text_key[j]
        parts.append("identical text" if exact else f"text Jaccard ≈ {sim:.2f}")
        kinds.append("identical text" if exact else "near-identical text")
    if opts.image_mode != "none" and sig.n_media[i] > 0:
        d = _media_distance(sig, i, j, opts)
        same = bool(np.all(sig.media(i)[0] == sig.media(j)[0]))
        parts.append("identical media bytes" if same else f"pHash distance {d}")
        kinds.append("identical media" if same else "near-identical images")
    return ", ".join(parts), " + ".join(kinds)


def dedup(paths: list[Path], out: Location, opts: DedupOptions, params: SignatureParams | None = None,
          storage_options: dict[str, Any] | None = None) -> ViewManifest:
    """Write the view of `paths` without duplicates to `out`, a folder or a URL (see the module docstring for the
    rules)."""
    params = params or SignatureParams()
    inputs = Inputs(paths)
    inputs.load_signatures(opts.cache, params, opts.workers)
    removals = find_duplicates(inputs, opts, params)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "workers"}
    return inputs.write(out, "dedup", {**settings, "num_perm": params.num_perm, "shingle": params.shingle}, removals,
                        storage_options)
