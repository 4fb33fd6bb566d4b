"""A cohort over ``torchrun`` processes: who scores which slide, and waiting for the others.

``torchrun --nproc-per-node N -m breastpath slide COHORT --out OUT`` starts N processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. Every rank lists the same slides; after a first
barrier each one checks which are already done (their markers are per slide, so a cohort started
with one world size resumes under another), a second barrier makes sure no rank has written a
marker before every rank has looked, and the slides still to do are dealt out in turn
(:func:`shard`). Each rank writes its own slides' outputs and markers; rank 0 merges the table
after a last barrier. The barriers run over a gloo process group (CPU, whatever device scores
the tiles) with a long timeout, since ranks may finish hours apart.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TypeVar

from breastpath.inference.device import DistInfo, env_info

__all__ = [
    "BARRIER_TIMEOUT",
    "DistInfo",
    "barrier",
    "device_for",
    "env_info",
    "shard",
    "start",
    "stop",
]

T = TypeVar("T")
#: How long a rank waits at a barrier for the others (the slowest rank's whole share).
BARRIER_TIMEOUT = datetime.timedelta(days=7)


def shard(items: Sequence[T], rank: DistInfo) -> list[T]:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th one, from its rank on.

    Examples
    --------
    >>> shard(list("abcde"), DistInfo(1, 2)), shard(list("abcde"), DistInfo())
    (['b', 'd'], ['a', 'b', 'c', 'd', 'e'])
    """
    return list(items[rank.rank :: rank.world_size])


def device_for(name: str, rank: DistInfo) -> str:
    """The device this rank scores on: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun.

    Examples
    --------
    >>> device_for("cuda", DistInfo(3, 4, 1)), device_for("cpu", DistInfo(3, 4, 1))
    ('cuda:1', 'cpu')
    """
    if name == "auto":
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    return f"cuda:{rank.local_rank}" if name == "cuda" and rank.enabled else name


def start(rank: DistInfo) -> None:
    """Join the ranks' gloo process group (a no-op in one process)."""
    if not rank.enabled:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)


def barrier(rank: DistInfo) -> None:
    """Wait for every rank (a no-op in one process)."""
    from breastpath.inference.device import barrier as wait

    wait(rank)


def stop(rank: DistInfo) -> None:
    """Leave the process group (a no-op in one process)."""
    from breastpath.inference.device import teardown

    teardown(rank)
