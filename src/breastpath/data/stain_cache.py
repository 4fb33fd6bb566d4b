"""Stain-normalize a packed cache to a target fitted on training images only, or to a fixed
target fitted elsewhere (``--stain-target``).

``breastpath prepare --stain vahadane`` fits the target on a seeded sample of the **training**
split (validation and test images never shape it), then normalizes every cached image in
chunks. The fitted target goes into ``meta.json`` (key ``stain``), from there into every
checkpoint trained on the cache, and from the checkpoint into the
:class:`~breastpath.inference.predictor.Predictor`, so evaluate, predict, serve and slide scoring
normalize new images the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from breastpath.errors import CacheError, StainError


def sample_rows(rows: np.ndarray, *, count: int, seed: int) -> np.ndarray:
    """A seeded sample of ``count`` rows (all of them when there are fewer), sorted."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) <= count:
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=count, replace=False))


def fit_stain_target(
    images: np.ndarray, rows: np.ndarray, *, method: str, count: int = 256, seed: int = 0
) -> Any:
    """Fit a ``method`` normalizer on a seeded sample of ``images[rows]`` (the training rows).

    Raises :class:`~breastpath.errors.CacheError` when there are no rows or the sample holds no
    usable tissue.
    """
    from breastpath.stain import get_normalizer

    if len(rows) == 0:
        raise CacheError("cannot fit a stain target: the training split is empty")
    chosen = sample_rows(rows, count=count, seed=seed)
    try:
        return get_normalizer(method, seed=seed).fit(np.asarray(images[chosen]))
    except StainError as exc:
        raise CacheError(
            f"cannot fit the {method} stain target on training images: {exc}"
        ) from None


def normalize_images(
    images: np.ndarray,
    normalizer: Any,
    *,
    chunk: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Normalize a writable ``(N, H, W, 3)`` array in place, in chunks; return how many images
    were left unchanged (no tissue, a single colour)."""
    from breastpath.stain import StainWarning

    unchanged = 0
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StainWarning)
            out, ok = normalizer.transform(block, return_status=True)
        images[start : start + chunk] = out
        unchanged += int(np.size(ok) - np.count_nonzero(ok))
        if progress is not None:
            progress(len(block))
    return unchanged


def stain_step(
    method: str,
    *,
    count: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> Callable[[np.ndarray, np.ndarray], dict]:
    """The ``process`` hook of :func:`breastpath.data.cache.write_cache` for ``--stain``."""

    def process(images: np.ndarray, split_of: np.ndarray) -> dict:
        train_rows = np.flatnonzero(split_of == "train")
        normalizer = fit_stain_target(images, train_rows, method=method, count=count, seed=seed)
        unchanged = normalize_images(images, normalizer, progress=progress)
        return {
            "stain": normalizer.to_dict(),
            "stain_info": {
                "method": method,
                "fitted_on": "train",
                "sample": int(min(count, len(train_rows))),
                "seed": seed,
                "unchanged": unchanged,
            },
        }

    return process


def fixed_target_step(
    normalizer: Any, *, source: str, progress: Callable[[int], None] | None = None
) -> Callable[[np.ndarray, np.ndarray], dict]:
    """The ``process`` hook of :func:`breastpath.data.cache.write_cache` for ``--stain-target``:
    every image normalized to a target fitted elsewhere (``source`` names it)."""

    def process(images: np.ndarray, split_of: np.ndarray) -> dict:
        unchanged = normalize_images(images, normalizer, progress=progress)
        return {
            "stain": normalizer.to_dict(),
            "stain_info": {
                "method": normalizer.method,
                "fitted_on": "target file",
                "target": source,
                "unchanged": unchanged,
            },
        }

    return process
