"""Batches straight from the packed cache: no image decoding, no worker processes.

A :class:`BatchLoader` gathers uint8 rows from the memmap (sorted within a batch for locality),
one batch ahead in a background thread, and hands them over as tensors. Shuffling uses a local
generator seeded by ``seed + epoch``; under DDP each rank takes its own stride of the permutation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue

import numpy as np
import torch

from breastpath.data.cache import read_rows


class BatchLoader:
    """Iterate over ``(images_uint8_nhwc, labels, rows)`` batches of a cached split.

    Examples
    --------
    >>> import numpy as np
    >>> images = np.zeros((10, 50, 50, 3), np.uint8)
    >>> loader = BatchLoader(images, np.zeros(10, int), np.arange(10), batch_size=4)
    >>> [len(batch[1]) for batch in loader]
    [4, 4, 2]
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
        rows = self.rows
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            rows = rows[rng.permutation(len(rows))]
        if self.world_size > 1:
            per_rank = len(rows) // self.world_size
            rows = rows[self.rank : per_rank * self.world_size : self.world_size]
        return rows

    def __len__(self) -> int:
        n = len(self.rows) // self.world_size
        batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return min(batches, self.max_batches) if self.max_batches else batches

    def _batches(self) -> Iterator[np.ndarray]:
        order = self._order()
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]

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
