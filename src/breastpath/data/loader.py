"""Batches straight from the packed cache: no image decoding, no worker processes.

A :class:`BatchLoader` gathers uint8 rows from the memmap (sorted within a batch for locality),
one batch ahead in a background thread, and hands them over as tensors. Shuffling uses a local
generator seeded by ``seed + epoch``.

Under DDP ``batch_size`` is the **global** batch: every rank walks the same permutation in the
same global batches, and global batch ``i`` is cut into ``world_size`` contiguous shards, rank
``r`` taking shard ``r`` (:func:`shard_bounds`). Concatenating the ranks' shards in rank order
gives exactly the batch one process would see, which is what makes a DDP run equal a
single-process run (see :mod:`breastpath.train.distributed`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue

import numpy as np
import torch

from breastpath.data.cache import read_rows


def shard_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``total`` items.

    The first ``total % world_size`` ranks get one item more (``np.array_split``).

    Examples
    --------
    >>> [shard_bounds(10, r, 4) for r in range(4)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class BatchLoader:
    """Iterate over ``(images_uint8_nhwc, labels, rows)`` batches of a cached split.

    With ``world_size > 1`` each item is this rank's shard of a global batch of ``batch_size``
    rows; :meth:`shard` says where the shard sits in its global batch.

    Examples
    --------
    >>> import numpy as np
    >>> images = np.zeros((10, 50, 50, 3), np.uint8)
    >>> loader = BatchLoader(images, np.zeros(10, int), np.arange(10), batch_size=4)
    >>> [len(batch[1]) for batch in loader]
    [4, 4, 2]
    >>> shards = BatchLoader(images, np.zeros(10, int), np.arange(10), batch_size=4, rank=1,
    ...                      world_size=2)
    >>> [batch[2].tolist() for batch in shards]
    [[2, 3], [6, 7], [9]]
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        max_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        shard_bounds(0, rank, world_size)  # validates rank and world_size
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.max_batches = max_batches
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of this epoch (call before iterating)."""
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        """The epoch's order of all rows: the same on every rank."""
        rows = self.rows
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            rows = rows[rng.permutation(len(rows))]
        return rows

    def __len__(self) -> int:
        """Global batches per epoch (every rank yields this many shards).

        Under DDP a last partial batch with fewer rows than ranks is dropped, so that no rank
        ever gets an empty shard.
        """
        n = len(self.rows)
        batches = n // self.batch_size
        remainder = n - batches * self.batch_size
        if remainder and not self.drop_last and remainder >= self.world_size:
            batches += 1
        return min(batches, self.max_batches) if self.max_batches else batches

    def global_size(self, index: int) -> int:
        """Rows in global batch ``index``."""
        return min(self.batch_size, len(self.rows) - index * self.batch_size)

    def shard(self, index: int) -> tuple[int, int, int]:
        """``(start, stop, total)``: this rank's rows ``[start, stop)`` of global batch ``index``
        of ``total`` rows."""
        total = self.global_size(index)
        return (*shard_bounds(total, self.rank, self.world_size), total)

    def _batches(self) -> Iterator[np.ndarray]:
        order = self._order()
        for i in range(len(self)):
            start, stop, _ = self.shard(i)
            offset = i * self.batch_size
            yield order[offset + start : offset + stop]

    def _gather(self, batch_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        block = read_rows(self.images, batch_rows)
        return (torch.from_numpy(block), torch.from_numpy(self.labels[batch_rows]), batch_rows)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        queue: Queue = Queue(maxsize=2)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch_rows in self._batches():
                    if stop.is_set():
                        return
                    queue.put(self._gather(batch_rows))
                queue.put(None)
            except BaseException as exc:  # surfaced in the consumer
                queue.put(exc)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                item = queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                while not queue.empty():
                    queue.get_nowait()
                thread.join(timeout=0.05)
