"""Split views: a prepared folder with other split assignments, sharing the image bytes.

Cross-validation trains one model per fold on the same cache with different patients held out.
A *view* is a folder that :func:`~breastpath.data.cache.open_prepared` reads like any prepared
folder: its ``images.u8`` is a hard link (or, across file systems, a symbolic link) to the
source's, and its ``index.csv``, ``splits.csv``, ``meta.json`` and ``summary.json`` carry the new
splits. Channel mean/std are recomputed on the view's training rows, so no statistic leaks
from held-out patients. No image is copied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.data.cache import (
    IMAGES_FILE,
    INDEX_FIELDS,
    PreparedData,
    channel_stats,
    open_prepared,
)
from breastpath.data.splits import SPLIT_NAMES
from breastpath.errors import CacheError
from breastpath.io import write_csv, write_json

__all__ = ["write_split_view"]


def _link_images(source: Path, target: Path) -> str:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
        return "hardlink"
    except OSError:
        os.symlink(source.resolve(), target)
        return "symlink"


def write_split_view(
    data: PreparedData | str | Path,
    out_dir: str | Path,
    split_of_patient: Mapping[str, str],
    *,
    split_info: dict[str, Any] | None = None,
) -> Path:
    """Write a view of ``data`` in which patient ``p``'s images belong to ``split_of_patient[p]``.

    Parameters
    ----------
    data
        A prepared folder (or an opened one).
    out_dir
        Folder of the view; created, and rewritten when it exists.
    split_of_patient
        ``patient -> "train" | "val" | "test"`` for every patient of ``data``.
    split_info
        Recorded as ``meta["split"]`` (how the splits were made); default: the source's, marked
        as a view.

    Returns
    -------
    Path
        ``out_dir``, ready for :func:`~breastpath.data.cache.open_prepared`.

    Raises :class:`~breastpath.errors.CacheError` for a cache stain-normalized to a target
    fitted on its training patients (a view may hold them out); a fixed target fitted elsewhere
    (``prepare --stain-target``) is fine.

    Examples
    --------
    >>> write_split_view("prepared", "fold0", {"a": "train", "b": "test"})  # doctest: +SKIP
    """
    source = data if isinstance(data, PreparedData) else open_prepared(data)
    fitted_on = source.meta.get("stain_info", {}).get("fitted_on", "train")
    if source.meta.get("stain") and fitted_on == "train":
        raise CacheError(
            f"{source.root}: the cache is stain-normalized to a target fitted on its own training "
            "split, which would see the held-out patients of other splits; make views of a cache "
            "prepared without --stain, or with a fixed --stain-target"
        )
    missing = sorted(set(source.patients.tolist()) - set(split_of_patient))
    if missing:
        raise CacheError(f"no split given for patient(s) {', '.join(missing[:5])}")
    unknown = sorted(set(split_of_patient.values()) - set(SPLIT_NAMES))
    if unknown:
        raise CacheError(f"unknown split name(s) {unknown}; use {', '.join(SPLIT_NAMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # incomplete until meta.json is back
    link = _link_images(source.root / IMAGES_FILE, out / IMAGES_FILE)

    rows = [{**row, "split": split_of_patient[row["patient"]]} for row in source.rows]
    write_csv(out / "index.csv", rows, INDEX_FIELDS)
    write_csv(out / "splits.csv", rows, ["path", "patient", "label", "label_name", "split"])
    split_of = np.array([row["split"] for row in rows])
    mean, std = channel_stats(source.images, np.flatnonzero(split_of == "train"))
    info = split_info or {**source.meta.get("split", {}), "view_of": source.root.name}
    meta = {**source.meta, "split": info, "mean": mean, "std": std}
    write_json(out / "summary.json", _summary(source, split_of, link=link))
    write_json(out / "meta.json", meta)
    return out


def _summary(source: PreparedData, split_of: np.ndarray, *, link: str) -> dict[str, Any]:
    per_split = {}
    for name in SPLIT_NAMES:
        chosen = split_of == name
        per_split[name] = {
            "images": int(chosen.sum()),
            "patients": len(set(source.patients[chosen].tolist())),
            "classes": {
                c: int((source.labels[chosen] == i).sum()) for i, c in enumerate(source.class_names)
            },
        }
    return {
        "view_of": source.root.name,
        "images_link": link,
        "images": len(split_of),
        "patients": len(set(source.patients.tolist())),
        "class_names": source.class_names,
        "splits": per_split,
    }
