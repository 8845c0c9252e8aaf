"""Records → training samples → batches.

- `ConversationDataset` is `mmdata.RecordDataset` over a mixture (or dataset, or `RecordList`): each item
  arrives as (record, the dataset it came from), and that dataset resolves the record's images. Its `length(i)` is
  the exact expanded length (text + (N + 2) per image), known from the text alone, before any image is loaded:
  truncation drops whole trailing exchanges, never part of an image.
- A sample that cannot be used (labels cannot be built, an image will not load) raises in `on_error="raise"` mode
  (tests) and becomes a `Skipped(index, id, reason)` in `on_error="skip"` mode (training): the collator passes
  skips up in `batch["skipped"]`, so the loop counts them in the main process even with dataloader workers.
- `Collator` pads with an explicit pad id, stacks images in placeholder order with one generation-target flag each;
  text-only samples add no image at all. With `packed=True` each item is a pack (a list of samples, see
  `trainer.packing`) laid out in one row, with `position_ids` restarting at 0 for every sample.
- With a `FeatureStore` (`trainer.features`), items carry the cached, already reduced image features instead of
  pixels: no image is decoded and the tower does not run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from mmdata import RecordDataset, RecordSource
from mmdata.core.errors import InputError
from mmdata.core.schema import Record
from trainer.templates import IGNORE_INDEX, ConversationEncoder, Encoded, LabelError

_CHUNK = 1024  # records per batched read when computing lengths


@dataclass
class Sample:
    id: str
    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long, IGNORE_INDEX where unsupervised
    pixel_values: torch.Tensor | None  # (n_images, 3, H, W) in placeholder order; None for text-only
    image_is_target: list[bool]
    dropped_turns: int = 0
    image_features: torch.Tensor | None = None  # (n_images, N, D) from a feature cache, instead of pixel_values

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Skipped:
    index: int
    id: str
    reason: str


class ConversationDataset(RecordDataset["Sample | Skipped"]):
    """Training samples of a mixture (or dataset): item `i` is record `i` tokenized, with the images its source
    dataset resolves. A DataLoader batch is one batched read of the records (`RecordDataset.__getitems__`)."""

    def __init__(self, source: RecordSource, *, tokenizer: Any, processor: Callable[[Image.Image], torch.Tensor],
                 template: str, num_image_tokens: int, max_length: int,
                 on_error: Literal["raise", "skip"] = "raise", features: Any = None) -> None:
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r}; expected 'raise' or 'skip'")
        super().__init__(source)
        self.processor = processor
        self.features = features  # a trainer.features.FeatureStore: cached image features replace pixels
        self.encoder = ConversationEncoder(template, tokenizer, num_image_tokens)
        self.max_length, self.on_error = max_length, on_error

    @classmethod
    def for_model(cls, source: RecordSource, model: Any, *, max_length: int,
                  on_error: Literal["raise", "skip"] = "raise", features: Any = None) -> ConversationDataset:
        """Template, tokenizer, processor and N taken from a built/loaded `UnifiedModel`, so they cannot disagree."""
        return cls(source, tokenizer=model.tokenizer, processor=model.processor, template=model.config.template,
                   num_image_tokens=model.num_image_tokens, max_length=max_length, on_error=on_error,
                   features=features)

    def encode(self, i: int, record: Record | None = None) -> Encoded:
        """Text only (no image decoded): ids, labels, image flags, after truncation to max_length."""
        return self._encode(record if record is not None else self.source.get(i)[0])

    def _encode(self, r: Record) -> Encoded:
        return self.encoder.encode([(t.role, t.value) for t in r.conversations], record_id=r.id,
                                   max_length=self.max_length)

    def record_length(self, record: Record) -> int:
        """Exact expanded length of `record` after truncation; 0 when its labels cannot be built (a skip)."""
        try:
            return len(self._encode(record))
        except LabelError:
            return 0

    def checked(self, lengths: np.ndarray) -> np.ndarray:
        """`lengths` as they are; in on_error="raise" mode a 0 raises that sample's LabelError instead."""
        if self.on_error == "raise" and (zero := np.flatnonzero(lengths == 0)).size:
            self.encode(int(zero[0]))
        return lengths

    def length(self, i: int) -> int:
        """Exact expanded length of item i (0 for a sample that will be skipped)."""
        n = self.record_length(self.source.get(i)[0])
        if n == 0 and self.on_error == "raise":
            self.encode(i)  # raises the LabelError
        return n

    def lengths(self) -> list[int]:
        """All lengths, from batched reads of the records (text only, no image I/O). Tokenizes every record:
        `trainer.lengths.expanded_lengths` computes them once and caches them instead."""
        out = np.empty(len(self), dtype=np.uint32)
        for lo in range(0, len(self), _CHUNK):
            records = self.source.get_many(range(lo, min(lo + _CHUNK, len(self))))
            out[lo:lo + len(records)] = [self.record_length(r) for r, _ in records]
        return self.checked(out).tolist()

    def item(self, i: int, record: Record, dataset: Any) -> Sample | Skipped:
        r = record
        try:
            enc = self.encode(i, r)
        except LabelError as e:
            if self.on_error == "raise":
                raise
            return Skipped(i, r.id, f"labels: {e}")
        if self.features is not None and enc.image_is_target:
            return self._with_features(i, enc, r, dataset)
        pixels = []
        for j in range(len(enc.image_is_target)):  # kept images are a prefix of media: truncation drops the tail
            try:
                image = dataset.image(r, j)
            except (OSError, ValueError) as e:  # missing / corrupt file; programming errors still propagate
                if self.on_error == "raise":
                    raise InputError(f"record {r.id!r}: media[{j}] ({r.media[j].path}) does not load: {e}") from e
                return Skipped(i, r.id, f"image {j} ({r.media[j].path}): {type(e).__name__}: {e}")
            pixels.append(self.processor(image))
        return Sample(
            id=r.id,
            input_ids=torch.tensor(enc.input_ids, dtype=torch.long),
            labels=torch.tensor(enc.labels, dtype=torch.long),
            pixel_values=torch.stack(pixels) if pixels else None,
            image_is_target=enc.image_is_target,
            dropped_turns=enc.dropped_turns,
        )

    def _with_features(self, i: int, enc: Encoded, r: Record, dataset: Any) -> Sample | Skipped:
        n = len(enc.image_is_target)
        try:
            feats = self.features.load(r, dataset, n)
        except (OSError, ValueError) as e:  # not cached, or the image failed when the cache was built
            if self.on_error == "raise":
                raise
            return Skipped(i, r.id, f"features: {type(e).__name__}: {e}")
        return Sample(id=r.id, input_ids=torch.tensor(enc.input_ids, dtype=torch.long),
                      labels=torch.tensor(enc.labels, dtype=torch.long), pixel_values=None,
                      image_is_target=enc.image_is_target, dropped_turns=enc.dropped_turns, image_features=feats)


class Collator:
    """Right-pads to the longest row (optionally to a multiple); `batch["input_ids"]` is (0, 0) if all skipped.

    `packed=False`: one item = one sample = one row. `packed=True`: one item = one pack (a list of samples), laid
    out back to back in one row; `position_ids` restart at 0 for each sample (and for the padding tail, which so
    forms a segment of its own), which is how the model keeps attention inside samples. The first label of every
    sample is ignored (it always is unpacked: nothing precedes it), so no token is trained to predict the next
    sample.
    """

    def __init__(self, pad_token_id: int, *, pad_to_multiple_of: int | None = None, packed: bool = False) -> None:
        if not isinstance(pad_token_id, int):
            raise TypeError(f"pad_token_id must be an int, got {pad_token_id!r}; pass model.pad_token_id")
        self.pad_token_id, self.multiple, self.packed = pad_token_id, pad_to_multiple_of, packed

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        packs = [list(p) for p in items] if self.packed else [[s] for s in items]
        rows = [[s for s in p if isinstance(s, Sample)] for p in packs]
        rows = [r for r in rows if r]
        skipped = [s for p in packs for s in p if isinstance(s, Skipped)]
        samples = [s for r in rows for s in r]
        width = max((sum(len(s) for s in r) for r in rows), default=0)
        if self.multiple and width:
            width = math.ceil(width / self.multiple) * self.multiple
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            o = 0
            for s in row:
                n = len(s)
                ids[b, o:o + n], labels[b, o:o + n], mask[b, o:o + n] = s.input_ids, s.labels, 1
                if self.packed:
                    labels[b, o] = IGNORE_INDEX
                positions[b, o:o + n] = torch.arange(n)
                o += n
            positions[b, o:] = torch.arange(width - o)
        pixels = [s.pixel_values for s in samples if s.pixel_values is not None]
        feats = [s.image_features for s in samples if s.image_features is not None]
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values": torch.cat(pixels) if pixels else None,
            "image_features": torch.cat(feats) if feats else None,
            "image_is_target": torch.tensor([f for s in samples for f in s.image_is_target], dtype=torch.bool),
            "ids": [s.id for s in samples],
            "skipped": skipped,
            "dropped_turns": sum(s.dropped_turns for s in samples),
        }
        if self.packed:
            batch["position_ids"] = positions
        return batch


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Shuffled, then sorted by length inside mega-batches (LLaVA's scheme), so batches carry little padding.

    Each consecutive run of `batch_size * world_size` indices has similar lengths; deterministic per (seed, epoch).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, world_size: int = 1, seed: int = 0,
                 mega_batch_mult: int = 50) -> None:
        self.lengths, self.seed, self.epoch = list(lengths), seed, 0
        self.group = batch_size * world_size
        self.mega = self.group * mega_batch_mult

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        """The whole epoch's order: a pure function of (seed, epoch), so a loader resumes it from a sample count."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        return [j for i in range(0, len(order), self.mega)
                for j in sorted(order[i: i + self.mega], key=lambda j: -self.lengths[j])]

    def __iter__(self) -> Iterator[int]:
        yield from self.order(self.epoch)
