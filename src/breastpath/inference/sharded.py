"""Score image files, in one process or sharded over ``torchrun`` processes.

``torchrun --nproc-per-node N -m breastpath predict CHECKPOINT FOLDER --out preds.csv``: every
rank builds the same file list, scores its contiguous shard
(:func:`~breastpath.data.loader.shard_bounds`), and the rows are gathered in rank order, which is
the file order of one process, so the merged CSV has the single-process rows in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from breastpath.data.loader import shard_bounds
from breastpath.inference.device import DistInfo

#: Columns of a prediction CSV. ``assessed`` is 1 when the image passed the input-quality gate
#: (:mod:`breastpath.inference.quality`) and got a label; 0 leaves ``label`` empty (``reason``
#: says why; ``probability`` is then the model's raw output, not a cancer probability), except
#: under ``allow_non_tissue`` where the label is given and ``reason`` starts with ``forced:``.
#: An assessed image larger than the model's input also gets its tiles' verdict (the model's
#: verdict rule over its assessed tiles, as the API gives it): ``tile_verdict``, ``tile_extent``
#: (share of assessed tiles called cancer), ``tiles_assessed`` and ``tiles``.
HEADER = [
    "path",
    "probability",
    "label",
    "assessed",
    "tissue_fraction",
    "looks_like_he",
    "reason",
    "tile_verdict",
    "tile_extent",
    "tiles_assessed",
    "tiles",
    "threshold",
    "error",
]


def prediction_row(path: Any, result: Any, threshold: float) -> list[Any]:
    """The :data:`HEADER` row of one file: a Prediction or the error it raised."""
    if isinstance(result, Exception):
        return [path, "", "", "", "", "", "", "", "", "", "", threshold, str(result)]
    quality = result.quality or {}
    tiles = result.tiles or {}
    return [
        path,
        f"{result.probability:.6f}",
        result.label or "",
        int(result.assessed),
        "" if not quality else f"{quality['tissue_fraction']:.4f}",
        "" if not quality else int(quality["looks_like_he"]),
        ("forced: " if result.forced else "") + str(quality.get("reason", "")),
        tiles.get("label") or "",
        "" if tiles.get("extent") is None else f"{tiles['extent']:.4f}",
        tiles.get("assessed_count", ""),
        tiles.get("count", ""),
        threshold,
        "",
    ]


def score_files(
    predictor: Any,
    files: Sequence[Path],
    *,
    chunk: int = 1024,
    allow_non_tissue: bool = False,
    progress: Callable[[int], None] | None = None,
    magnification: str | None = None,
    allow_magnification: bool = False,
) -> list[list[Any]]:
    """One CSV row per file (:data:`HEADER`); an unreadable file (or one at another
    magnification than the model's, see :meth:`Predictor.predict_sources`) gets its error in its
    row.

    Files are decoded and scored ``chunk`` at a time, so memory stays bounded; ``progress`` is
    called with the number of files done after each chunk. Images the quality gate flags get
    no label unless ``allow_non_tissue`` (research only).
    """
    rows: list[list[Any]] = []
    for start in range(0, len(files), chunk):
        part = list(files[start : start + chunk])
        results = predictor.predict_sources(
            part,
            allow_non_tissue=allow_non_tissue,
            tiles=True,
            magnification=magnification,
            allow_magnification=allow_magnification,
        )
        for path, result in zip(part, results, strict=True):
            rows.append(prediction_row(path, result, predictor.threshold))
        if progress is not None:
            progress(len(part))
    return rows


def summarise_rows(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Counts for the closing line of ``predict``: files, scored (assessed), at or above the
    threshold, not assessed by reason, unreadable.

    Examples
    --------
    >>> ok = ["a.png", "0.9", "IDC", 1, "0.9", 1, "ok"] + [""] * 4 + [0.5, ""]
    >>> flat = ["b.png", "0.2", "", 0, "1.0", 1, "flat"] + [""] * 4 + [0.5, ""]
    >>> bad = ["c.png"] + [""] * 10 + [0.5, "broken"]
    >>> summarise_rows([ok, flat, bad])
    {'files': 3, 'assessed': 1, 'above_threshold': 1, 'not_assessed': {'flat': 1}, 'errors': 1}
    """
    out: dict[str, Any] = {"files": len(rows), "assessed": 0, "above_threshold": 0}
    reasons: dict[str, int] = {}
    errors = 0
    for row in rows:
        if row[-1]:
            errors += 1
        elif row[3] == 1:
            out["assessed"] += 1
            out["above_threshold"] += int(float(row[1]) >= float(row[-2]))
        else:
            reason = str(row[6]) or "not assessed"
            reasons[reason] = reasons.get(reason, 0) + 1
    return {**out, "not_assessed": reasons, "errors": errors}


def score_files_sharded(
    predictor: Any,
    files: Sequence[Path],
    *,
    info: DistInfo,
    chunk: int = 1024,
    allow_non_tissue: bool = False,
    progress: Callable[[int], None] | None = None,
    magnification: str | None = None,
    allow_magnification: bool = False,
) -> list[list[Any]]:
    """Rows for all ``files`` (in their order) on every rank; each rank scores only its shard.

    With one process this is :func:`score_files`. ``files`` must be the same list on every rank.

    Examples
    --------
    >>> rows = score_files_sharded(predictor, files, info=distributed.env_info())  # doctest: +SKIP
    """
    start, stop = shard_bounds(len(files), info.rank, info.world_size)
    rows = score_files(
        predictor,
        files[start:stop],
        chunk=chunk,
        allow_non_tissue=allow_non_tissue,
        progress=progress,
        magnification=magnification,
        allow_magnification=allow_magnification,
    )
    if not info.enabled:
        return rows
    import torch.distributed as dist

    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]
