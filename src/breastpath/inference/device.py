"""Where inference and training run: device choice and the ``torchrun`` process group.

``torchrun --nproc-per-node N -m breastpath ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them. With no such variables everything runs in one process
and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; any other name as given.

    Examples
    --------
    >>> select_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
    device = str(select_device(device))
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


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no gradient); returns it. A no-op in one process."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


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
