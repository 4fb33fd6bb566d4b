"""Score image files, in one process or sharded over ``torchrun`` processes.

``torchrun --nproc-per-node N -m breastpath predict CHECKPOINT FOLDER --out preds.csv``: every
rank builds the same file list, scores its contiguous shard
(:func:`~breastpath.data.loader.shard_bounds`), and the rows are gathered in rank order, which is
the file order of one process, so the merged CSV has the single-process rows in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from breastpath.data.loader import shard_bounds
from breastpath.inference.device import DistInfo

#: Columns of a prediction CSV.
HEADER = ["path", "probability", "label", "threshold", "error"]


def score_files(predictor: Any, files: Sequence[Path], *, chunk: int = 1024) -> list[list[Any]]:
    """One CSV row per file (:data:`HEADER`); an unreadable file gets its error in its row.

    Files are decoded and scored ``chunk`` at a time, so memory stays bounded.
    """
    rows: list[list[Any]] = []
    for start in range(0, len(files), chunk):
        part = list(files[start : start + chunk])
        threshold = predictor.threshold
        for path, result in zip(part, predictor.predict_sources(part), strict=True):
            if isinstance(result, Exception):
                rows.append([path, "", "", threshold, str(result)])
            else:
                rows.append([path, f"{result.probability:.6f}", result.label, threshold, ""])
    return rows


def score_files_sharded(
    predictor: Any, files: Sequence[Path], *, info: DistInfo, chunk: int = 1024
) -> list[list[Any]]:
    """Rows for all ``files`` (in their order) on every rank; each rank scores only its shard.

    With one process this is :func:`score_files`. ``files`` must be the same list on every rank.

    Examples
    --------
    >>> rows = score_files_sharded(predictor, files, info=distributed.env_info())  # doctest: +SKIP
    """
    start, stop = shard_bounds(len(files), info.rank, info.world_size)
    rows = score_files(predictor, files[start:stop], chunk=chunk)
    if not info.enabled:
        return rows
    import torch.distributed as dist

    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]
