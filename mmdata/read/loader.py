"""The training side of a mixture: a rank-sharding, resumable sampler and a loader that counts what it served.

The order is global and fixed: position p of epoch e is mixture sample p (epoch 0, and every epoch unless
`shuffle`); rank r of R takes positions start + r, start + r + R, … . A DataLoader over a map-style dataset draws
indices from the sampler in the main process and hands whole batches to its workers, so the batches come back in
sampler order whatever `num_workers` is: workers never overlap and never lose a sample, and the resume position
is simply "global samples consumed", valid for any number of workers (and any world size, ranks being in lockstep).

Nothing here imports torch at module level: `MixtureLoader` imports it when iterated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from mmdata.core.errors import InputError
from mmdata.core.schema import Record

T = TypeVar("T")


class MixtureSampler:
    """Indices for one rank, from a saved position onward. A `torch.utils.data.Sampler` by duck typing.

    `start` is the global position (samples consumed by all ranks together) in epoch `epoch`. With
    `drop_last=False` the union over ranks is exactly the epoch and the last ranks may get one sample fewer; a
    DDP trainer that needs equal step counts passes `drop_last=True` (at most world_size - 1 samples are left out).
    `order(epoch)`, when given, is the epoch's permutation instead of `shuffle`'s (e.g. length grouping); it must be
    a pure function of the epoch, so that a saved position means the same samples after a restart.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0,
                 epoch: int = 0, shuffle: bool = False, drop_last: bool = False,
                 order: Callable[[int], Sequence[int]] | None = None) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"rank {rank} / world_size {world_size}: need world_size >= 1 and 0 <= rank < "
                             "world_size")
        if length < 0 or not 0 <= start <= length:
            raise InputError(f"start {start} is outside the epoch of {length} samples; was the state saved for "
                             "another mixture?")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.start, self.epoch = start, epoch
        self.order_fn = order

    def _end(self) -> int:
        if self.drop_last:
            return self.start + (self.length - self.start) // self.world_size * self.world_size
        return self.length

    def positions(self) -> range:
        """This rank's remaining positions in the epoch (global positions, before any shuffle)."""
        return range(self.start + self.rank, self._end(), self.world_size)

    def order(self) -> np.ndarray | None:
        """The epoch's permutation of the samples, or None for the mixture's own order."""
        if self.order_fn is not None:
            order = np.asarray(self.order_fn(self.epoch), dtype=np.int64)
            if len(order) != self.length:
                raise ValueError(f"order({self.epoch}) gave {len(order)} indices for {self.length} samples")
            return order
        if not self.shuffle:
            return None
        return np.random.Generator(np.random.PCG64([self.seed, self.epoch])).permutation(self.length)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        positions = self.positions()
        if order is None:
            return iter(positions)
        return iter(order[positions.start:positions.stop:positions.step].tolist())

    def __len__(self) -> int:
        return len(self.positions())

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its beginning."""
        self.epoch, self.start = epoch, 0

    def advance(self, per_rank: int) -> None:
        """Mark `per_rank` more samples consumed on every rank (ranks step in lockstep)."""
        self.start = min(self.start + per_rank * self.world_size, self.length)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.start, "length": self.length, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["length"] != self.length:
            raise InputError(f"saved loader state is for {state['length']} samples, this mixture has "
                             f"{self.length}: resume with the same mixture (same recipe, seed and datasets)")
        if state["seed"] != self.seed:
            raise InputError(f"saved loader state has seed {state['seed']}, this loader {self.seed}")
        self.epoch, self.start = int(state["epoch"]), int(state["consumed"])
        if len(self) == 0:  # saved right after the epoch's last batch: the next sample is the next epoch's first
            self.set_epoch(self.epoch + 1)


class RecordSource(Protocol):
    """What `RecordDataset` reads: a `Dataset`, `View`, `Mixture` or `Selection` (any `Records`), or a
    `RecordList`."""

    def __len__(self) -> int: ...
    def get(self, i: int) -> tuple[Record, Any]: ...
    def get_many(self, positions: Sequence[int]) -> list[tuple[Record, Any]]: ...


def collate_list(batch: Sequence[T]) -> list[T]:
    """A DataLoader `collate_fn` that keeps a batch as the list of its items: records (`DataLoader(ds, ...)` over a
    dataset, view, mixture or selection) or `(record, dataset)` pairs (`RecordDataset`). torch's default collate
    stacks tensors and numbers and cannot batch a `Record`; tokenize or decode images in a `RecordDataset`
    transform (or a collate function of your own) to get tensors. A module-level function, so DataLoader workers
    started by `spawn` can unpickle it (a lambda cannot be)."""
    return list(batch)


class RecordList:
    """Records already in memory as a `RecordSource`; `image(record or i, j)` resolves their media (tests,
    benchmarks)."""

    def __init__(self, records: Sequence[Record], image: Callable[[Record, int], Any]) -> None:
        self.records, self._image = records, image

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> tuple[Record, RecordList]:
        return self.records[i], self

    def get_many(self, positions: Sequence[int]) -> list[tuple[Record, RecordList]]:
        return [(self.records[i], self) for i in positions]

    def image(self, x: Record | int, j: int) -> Any:
        return self._image(x if isinstance(x, Record) else self.records[x], j)


class RecordDataset(Generic[T]):
    """A map-style dataset for `torch.utils.data.DataLoader`: item `i` is sample `i` of a mixture (or dataset) as
    the pair `(record, dataset)` — `dataset` being the `Dataset` the record comes from, which resolves its images
    (`dataset.image(record, j)`) — or as `transform(record, dataset)`. Subclasses override `item`.

    A DataLoader batch is one `get_many` call: one batched read per source dataset, not one read per sample.
    """

    def __init__(self, source: RecordSource, transform: Callable[[Record, Any], T] | None = None) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def item(self, i: int, record: Record, dataset: Any) -> Any:
        """What position `i` yields, given its record and source dataset."""
        return (record, dataset) if self.transform is None else self.transform(record, dataset)

    def __getitem__(self, i: int) -> Any:
        return self.item(i, *self.source.get(i))

    def __getitems__(self, indices: list[int]) -> list[Any]:
        # torch's DataLoader fetches a whole batch through this when it exists.
        pairs = self.source.get_many(indices)
        if type(self).item is RecordDataset.item:  # not overridden: skip a method call per item on the hot path
            transform = self.transform
            return pairs if transform is None else [transform(record, dataset) for record, dataset in pairs]
        return [self.item(i, record, dataset) for i, (record, dataset) in zip(indices, pairs)]


class MixtureLoader:
    """Batches for one rank in mixture order; `state_dict()` is the exact position after the last batch yielded.

    Wraps a `torch.utils.data.DataLoader(data, batch_size, sampler=MixtureSampler(...), num_workers, ...)`; extra
    keyword arguments go to the DataLoader. Counting happens as batches are handed to the caller, not as the
    DataLoader prefetches, so a state saved after step k resumes at the first sample of step k + 1.
    """

    def __init__(self, data: Sequence[Any], *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = False, drop_last: bool = False, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None,
                 order: Callable[[int], Sequence[int]] | None = None, **dataloader_kwargs: Any) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size, self.num_workers, self.collate_fn = batch_size, num_workers, collate_fn
        self.kwargs = dataloader_kwargs
        self.sampler = MixtureSampler(len(data), rank=rank, world_size=world_size, seed=seed, shuffle=shuffle,
                                      drop_last=drop_last, order=order)

    def __len__(self) -> int:
        """Batches left in the current epoch on this rank."""
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        """The rest of the current epoch; the next `iter()` starts the next epoch."""
        from torch.utils.data import DataLoader

        remaining = len(self.sampler)
        loader = DataLoader(self.data, batch_size=self.batch_size, sampler=self.sampler,  # type: ignore[arg-type]
                            num_workers=self.num_workers, collate_fn=self.collate_fn, **self.kwargs)
        for batch in loader:
            n = min(self.batch_size, remaining)
            remaining -= n
            self.sampler.advance(n)
            yield batch
        self.sampler.set_epoch(self.sampler.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
