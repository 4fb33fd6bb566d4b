"""Multi-GPU / multi-node training through ``torchrun`` (DDP).

``torchrun --nproc-per-node 4 -m breastpath train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them. With no such variables everything runs in one process.

A DDP run computes what one process would (up to float32 summation order; note that torch's
channels-last CPU batch norm makes one process itself thread-count dependent at about 1e-3):

* ``batch_size`` is the **global** batch; each rank takes a contiguous shard of every global batch
  (:class:`breastpath.data.loader.BatchLoader`), so it must divide by the number of processes;
* batch norm uses the statistics of the global batch (:func:`sync_batchnorm`);
* augmentation is drawn for the whole global batch from a generator seeded alike on every rank,
  and each rank keeps its slice (:func:`pad_to_global`);
* the loss of a rank is its share of the global batch's (class-weighted) mean, scaled so that
  DDP's gradient averaging yields the gradient of that global mean (:func:`global_denominator`);
  the class weights come from the whole training split, the same on every rank;
* metrics are summed over ranks (:func:`all_reduce_sum`), validation is sharded and gathered
  (:func:`gather_rows`).

Dropout masks are still drawn per rank (the torch seed differs by rank on purpose): statistically
the same as one process, not bitwise.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from breastpath.inference.device import (
    DistInfo,
    all_reduce_sum,
    barrier,
    env_info,
    gather_rows,
    setup,
    teardown,
)

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "env_info",
    "gather_rows",
    "global_denominator",
    "pad_to_global",
    "setup",
    "sync_batchnorm",
    "teardown",
]

log = logging.getLogger(__name__)


def sync_batchnorm(model: nn.Module, *, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: ``SyncBatchNorm`` on GPUs, our layers elsewhere.

    ``nn.SyncBatchNorm`` is CUDA-only in torch 2.14 (it raises on CPU tensors), so on CPU/gloo
    the layers of :mod:`breastpath.train.syncbn` do the same with differentiable all-reduces.
    Returns the model to use (the same object on CPU).
    """
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm  # also converts timm's BatchNormAct2d

        return convert_sync_batchnorm(model)
    from breastpath.train.syncbn import globalize_batchnorm

    skipped = globalize_batchnorm(model)
    if skipped:
        log.warning(
            "%d batch-norm layer(s) of unsupported classes keep per-rank statistics: %s",
            len(skipped),
            ", ".join(skipped[:5]),
        )
    return model


def pad_to_global(images: torch.Tensor, shard: tuple[int, int, int]) -> torch.Tensor:
    """This rank's images at rows ``[start, stop)`` of a batch the size of the global batch.

    ``shard`` is ``(start, stop, total)`` (:meth:`BatchLoader.shard`). The other rows repeat our
    own images: they only exist so that random draws (one per row of the global batch, in order)
    are the same on every rank, and are dropped after augmentation, which treats every image on
    its own. In one process (``total == len(images)``) the batch is returned as is.
    """
    start, stop, total = shard
    if total == len(images):
        return images
    index = (torch.arange(total) - start) % max(stop - start, 1)
    return images[index]


def global_denominator(
    targets: torch.Tensor, weight: torch.Tensor | None, info: DistInfo
) -> torch.Tensor:
    """``[sum of target weights, count]`` of the **global** batch (weights 1 without ``weight``).

    The weighted mean cross-entropy of a batch is ``sum(w_y * loss) / sum(w_y)``; a rank that
    divides its sum by the global ``sum(w_y)`` contributes exactly its share of that mean.
    """
    count = torch.full((1,), float(len(targets)), device=targets.device)
    weights = weight[targets].sum().view(1) if weight is not None else count.clone()
    return all_reduce_sum(torch.cat([weights.float(), count]), info)
