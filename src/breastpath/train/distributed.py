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
import os
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (one process without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; pick this process's device."""
    info = env_info()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not info.enabled:
        return info, torch.device(device)
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl")
        return info, torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return info, torch.device(device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


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


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no gradient); returns it. A no-op in one process."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


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


def gather_rows(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (lengths may differ)."""
    if not info.enabled:
        return tensor
    import torch.distributed as dist

    length = torch.tensor([len(tensor)], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(info.world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(int(n) for n in lengths))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[: int(n)] for part, n in zip(parts, lengths, strict=True)])
