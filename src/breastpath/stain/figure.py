"""A side-by-side figure: original images and the same images normalized by each method."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from breastpath.errors import StainError


def normalize_with_each(
    images: Sequence[np.ndarray],
    target: Any,
    *,
    methods: Sequence[str] = ("reinhard", "macenko", "vahadane"),
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """``{method: [normalized image, ...]}`` with every method fitted on ``target``.

    ``target`` is one image, a batch or a list of images. Images whose stains cannot be separated
    come back unchanged (as :meth:`~breastpath.stain.StainNormalizer.transform` does).
    """
    from breastpath.stain import StainWarning, get_normalizer

    out: dict[str, list[np.ndarray]] = {}
    for method in methods:
        normalizer = get_normalizer(method, seed=seed).fit(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StainWarning)
            out[method] = [np.asarray(normalizer.transform(image)) for image in images]
    return out


def comparison_figure(
    images: Sequence[np.ndarray],
    target: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    methods: Sequence[str] = ("reinhard", "macenko", "vahadane"),
    seed: int = 0,
    cell_inches: float = 2.2,
) -> Any:
    """A matplotlib figure: one row per image (original, then each method), target at the top.

    Raises :class:`~breastpath.errors.StainError` when ``images`` is empty or the target has no
    usable tissue.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not images:
        raise StainError("no images to compare")
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    normalized = normalize_with_each(images, target, methods=methods, seed=seed)
    columns = ["original", *methods]
    rows = len(images) + 1
    fig, axes = plt.subplots(
        rows,
        len(columns),
        figsize=(cell_inches * len(columns), cell_inches * rows),
        squeeze=False,
    )
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(target)
    axes[0, 0].set_title("target", fontsize=9)
    for r, image in enumerate(images, start=1):
        panels = [image, *(normalized[m][r - 1] for m in methods)]
        for c, (panel, title) in enumerate(zip(panels, columns, strict=True)):
            axes[r, c].imshow(panel)
            if r == 1:
                axes[r, c].set_title(title, fontsize=9)
        axes[r, 0].text(
            -0.04,
            0.5,
            names[r - 1],
            transform=axes[r, 0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
            rotation=90,
        )
    fig.tight_layout()
    return fig
