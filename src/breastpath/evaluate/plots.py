"""Evaluation figures written as PNG files.

Each function draws one figure, writes it to ``path`` (atomically: a temporary file in the same
folder, then :func:`os.replace`) and returns the path. Figures are built with
:class:`matplotlib.figure.Figure` and rendered by the Agg canvas directly: nothing goes through
``pyplot``, so no global figure is left open and the caller's matplotlib backend is untouched.
The PNG size in pixels is the figure size times :data:`DPI` (no tight bounding box).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath.errors import ConfigError, InvalidImageError
from breastpath.evaluate.metrics import _validate_binary, _validate_threshold
from breastpath.io import atomic_open

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "plot_confusion_matrix",
    "plot_pr",
    "plot_prediction_grid",
    "plot_roc",
    "plot_training_curves",
]

#: Resolution of every PNG written here.
DPI = 120
#: Figure sizes in inches (width, height); pixel size = size * DPI.
TRAINING_CURVES_SIZE = (11.0, 4.0)
CURVE_SIZE = (5.5, 5.0)

_RIGHT = "#1a9850"  # green
_WRONG = "#d73027"  # red


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    try:
        with atomic_open(out) as fh:
            fig.savefig(fh, format="png", dpi=DPI)
    finally:
        fig.clear()
    return out


def _no_data(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if not np.isfinite(v):
            continue
        epoch = row.get("epoch")
        xs.append(float(epoch) if epoch is not None else float(i + 1))
        ys.append(v)
    return xs, ys


#: Legends go below the axes, so they never hide the end of a curve.
_LEGEND_BELOW: dict[str, Any] = {
    "loc": "upper center",
    "bbox_to_anchor": (0.5, -0.18),
    "ncol": 2,
    "fontsize": 8,
    "frameon": False,
}


def _integer_ticks(ax: Any) -> None:
    """Whole-number ticks on the x axis (epochs are counted, not measured)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_reliability(
    y_true: Any, scores: Any, path: str | os.PathLike[str], *, bins: int = 15
) -> Path:
    """The reliability diagram: mean predicted probability against the observed share of
    positives per equal-width bin (the bins ECE is computed on), with the share of items per
    bin below.

    Examples
    --------
    >>> plot_reliability([0, 1, 1], [0.2, 0.7, 0.9], "reliability.png")  # doctest: +SKIP
    PosixPath('reliability.png')
    """
    from breastpath.evaluate.calibration import expected_calibration_error, reliability_bins

    r = reliability_bins(y_true, scores, bins=bins)
    fig = _new_figure((5.0, 5.5))
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="perfect calibration")
    filled = [i for i, c in enumerate(r["count"]) if c]
    means = [r["mean_predicted"][i] for i in filled]
    observed = [r["fraction_positive"][i] for i in filled]
    ece = expected_calibration_error(y_true, scores, bins=bins)
    ax.plot(means, observed, marker="o", label=f"model (ECE {ece:.3f})")
    ax.set_ylabel("observed share of positives")
    ax.set_title("Reliability diagram")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    width = 1.0 / bins
    lefts = [i * width for i in range(bins)]
    total = max(sum(r["count"]), 1)
    ax_count.bar(lefts, [c / total for c in r["count"]], width=width, align="edge", color="0.6")
    ax_count.set_xlabel("predicted probability")
    ax_count.set_ylabel("share")
    return _save(fig, path)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """Loss (left) and accuracy / AUC (right) per epoch; the learning rate on a log axis.

    Parameters
    ----------
    history : list of dict
        One row per epoch with any of ``epoch``, ``train_loss``, ``val_loss``, ``train_acc``,
        ``val_acc``, ``val_auc``, ``lr``. Missing keys, ``None`` and NaN are skipped; without
        ``epoch`` the row number (from 1) is used.
    path : path-like
        Where to write the PNG (``TRAINING_CURVES_SIZE * DPI`` pixels).

    Returns
    -------
    Path

    Examples
    --------
    >>> rows = [{"epoch": 1, "train_loss": 0.6, "val_loss": 0.5, "val_acc": 0.8}]
    >>> plot_training_curves(rows, "curves.png")  # doctest: +SKIP
    PosixPath('curves.png')
    """
    fig = _new_figure(TRAINING_CURVES_SIZE)
    ax_loss, ax_acc = fig.subplots(1, 2)

    drawn = False
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "-")):
        xs, ys = _series(history, key)
        if xs:
            ax_loss.plot(xs, ys, style, marker="o", markersize=3, label=f"{label} loss")
            drawn = True
    xs, ys = _series(history, "lr")
    if xs and any(v > 0 for v in ys):
        ax_lr = ax_loss.twinx()
        ax_lr.plot(xs, ys, "--", color="0.5", linewidth=1, label="learning rate")
        if all(v > 0 for v in ys):
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", color="0.4")
        ax_lr.tick_params(axis="y", colors="0.4")
        handles, labels = ax_loss.get_legend_handles_labels()
        h2, l2 = ax_lr.get_legend_handles_labels()
        if handles or h2:
            ax_loss.legend(handles + h2, labels + l2, **_LEGEND_BELOW)
    elif drawn:
        ax_loss.legend(**_LEGEND_BELOW)
    if not drawn:
        _no_data(ax_loss)
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("epoch")
    _integer_ticks(ax_loss)
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)

    drawn = False
    for key, label in (
        ("train_acc", "train accuracy"),
        ("val_acc", "validation accuracy"),
        ("val_auc", "validation ROC AUC"),
    ):
        xs, ys = _series(history, key)
        if xs:
            ax_acc.plot(xs, ys, marker="o", markersize=3, label=label)
            drawn = True
    if drawn:
        ax_acc.legend(**_LEGEND_BELOW)
    else:
        _no_data(ax_acc)
    ax_acc.set_title("Accuracy / AUC")
    ax_acc.set_xlabel("epoch")
    _integer_ticks(ax_acc)
    ax_acc.set_ylabel("score")
    ax_acc.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# ROC and PR
# --------------------------------------------------------------------------------------------


def _curve_inputs(
    curves: Mapping[str, tuple[Any, Any]],
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not curves:
        raise ConfigError("curves is empty: pass {name: (y_true, scores)}")
    out = []
    for name, pair in curves.items():
        try:
            y_true, scores = pair
        except (TypeError, ValueError):
            raise ConfigError(f"curves[{name!r}] must be a (y_true, scores) pair") from None
        y, s = _validate_binary(y_true, scores)
        out.append((str(name), y, s))
    return out


def plot_roc(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike[str]) -> Path:
    """ROC curves of several score sets on one plot, with their AUC in the legend.

    Parameters
    ----------
    curves : dict of name -> (y_true, scores)
        E.g. ``{"patch": (y, s), "patient": (py, ps)}``. A set with only one class is listed in
        the legend as undefined and not drawn.
    path : path-like
        Where to write the PNG (``CURVE_SIZE * DPI`` pixels).

    Examples
    --------
    >>> plot_roc({"patch": ([0, 1, 1], [0.2, 0.7, 0.4])}, "roc.png")  # doctest: +SKIP
    PosixPath('roc.png')
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    data = _curve_inputs(curves)
    fig = _new_figure(CURVE_SIZE)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="0.5", linewidth=1, label="chance (AUC = 0.5)")
    for name, y, s in data:
        if y.min() == y.max():
            ax.plot([], [], label=f"{name}: AUC undefined (one class, n = {y.size})")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = roc_auc_score(y, s)
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUC = {auc:.3f}, n = {y.size})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pr(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike[str]) -> Path:
    """Precision-recall curves with average precision (AP) in the legend.

    Each curve's prevalence (the precision of a random classifier) is drawn as a dotted
    horizontal line in the curve's colour.

    Parameters
    ----------
    curves : dict of name -> (y_true, scores)
        As for :func:`plot_roc`. A set without positives is listed as undefined.
    path : path-like
        Where to write the PNG (``CURVE_SIZE * DPI`` pixels).

    Examples
    --------
    >>> plot_pr({"patch": ([0, 1, 1], [0.2, 0.7, 0.4])}, "pr.png")  # doctest: +SKIP
    PosixPath('pr.png')
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    data = _curve_inputs(curves)
    fig = _new_figure(CURVE_SIZE)
    ax = fig.subplots()
    for name, y, s in data:
        prevalence = float(y.mean())
        if y.min() == y.max():
            ax.plot([], [], label=f"{name}: AP undefined (one class, n = {y.size})")
            continue
        precision, recall, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        (line,) = ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            linewidth=1.8,
            label=f"{name} (AP = {ap:.3f}, n = {y.size})",
        )
        ax.axhline(
            prevalence,
            linestyle=":",
            linewidth=1,
            color=line.get_color(),
            label=f"{name} prevalence = {prevalence:.3f}",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------


def confusion_matrix_size(n_classes: int) -> tuple[float, float]:
    """Figure size (inches) :func:`plot_confusion_matrix` uses for ``n_classes`` classes."""
    side = max(4.0, 1.0 + 1.1 * n_classes)
    return (side + 1.0, side)


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix with counts and row-normalised percentages in each cell.

    Parameters
    ----------
    cm : array-like of shape (K, K)
        Counts; rows = true class, columns = predicted class (as in :func:`binary_metrics`).
    class_names : sequence of str
        The K class names.
    path : path-like
        Where to write the PNG (``confusion_matrix_size(K) * DPI`` pixels).
    title : str
        Figure title.

    Examples
    --------
    >>> cm = [[50, 5], [8, 37]]
    >>> plot_confusion_matrix(cm, ["benign", "malignant"], "cm.png")  # doctest: +SKIP
    PosixPath('cm.png')
    """
    m = np.asarray(cm)
    k = len(class_names)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ConfigError(f"cm must be a square matrix, got shape {m.shape}")
    if m.shape[0] != k:
        raise ConfigError(f"cm is {m.shape[0]}x{m.shape[0]} but {k} class names were given")
    if not np.issubdtype(m.dtype, np.number) or (m < 0).any():
        raise ConfigError("cm must hold non-negative counts")
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros(m.shape, dtype=float), where=rows > 0)

    fig = _new_figure(confusion_matrix_size(k))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fontsize = 11 if k <= 4 else 8
    for i in range(k):
        for j in range(k):
            count = m[i, j]
            text = f"{int(count)}" if float(count).is_integer() else f"{count:.1f}"
            ax.text(
                j,
                i,
                f"{text}\n{100 * share[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(c) for c in class_names], rotation=30 if k > 3 else 0)
    ax.set_yticks(ticks, [str(c) for c in class_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# example predictions
# --------------------------------------------------------------------------------------------


def prediction_grid_size(n_per_group: int) -> tuple[float, float]:
    """Figure size (inches) :func:`plot_prediction_grid` uses for ``n_per_group`` columns."""
    return (max(6.0, 1.35 * n_per_group), 4 * 1.75)


def plot_prediction_grid(
    images: np.ndarray,
    y_true: Any,
    scores: Any,
    *,
    threshold: float,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    n_per_group: int = 8,
    totals: Sequence[int] | None = None,
) -> Path:
    """Example tiles in four rows: true positives, true negatives, false positives, false negatives.

    Each row shows up to ``n_per_group`` of the most confident items of its group (highest
    scores for predicted positives, lowest for predicted negatives), titled with the positive
    class probability and framed green (right) or red (wrong). An empty group is drawn as a
    labelled empty row. Tiles are upscaled with nearest-neighbour interpolation.

    Parameters
    ----------
    images : ndarray of shape (N, H, W, 3), uint8
        RGB tiles.
    y_true : array-like of shape (N,)
        True labels, 0 or 1.
    scores : array-like of shape (N,)
        Probability of the positive class.
    threshold : float
        ``score >= threshold`` is predicted positive.
    class_names : sequence of 2 str
        Names of class 0 and class 1, used in the row titles.
    path : path-like
        Where to write the PNG (``prediction_grid_size(n_per_group) * DPI`` pixels).
    totals : sequence of 4 ints, optional
        Group sizes (TP, TN, FP, FN) to print when ``images`` is a pre-selected sample of a
        larger set; by default the sizes within ``images``.
    n_per_group : int
        Tiles per row.

    Examples
    --------
    >>> imgs = np.zeros((4, 50, 50, 3), np.uint8)
    >>> plot_prediction_grid(imgs, [0, 1, 0, 1], [0.1, 0.9, 0.7, 0.2], threshold=0.5,
    ...                      class_names=["non-IDC", "IDC"], path="grid.png")  # doctest: +SKIP
    PosixPath('grid.png')
    """
    y, s = _validate_binary(y_true, scores)
    t = _validate_threshold(threshold)
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise InvalidImageError(f"images must have shape (N, H, W, 3), got {imgs.shape}")
    if imgs.dtype != np.uint8:
        raise InvalidImageError(f"images must be uint8 RGB, got dtype {imgs.dtype}")
    if imgs.shape[0] != y.shape[0]:
        raise ConfigError(f"{imgs.shape[0]} images but {y.shape[0]} labels")
    if len(class_names) != 2:
        raise ConfigError(f"class_names must name 2 classes, got {list(class_names)}")
    if int(n_per_group) != n_per_group or n_per_group < 1:
        raise ConfigError(f"n_per_group must be a positive integer, got {n_per_group!r}")
    n_per_group = int(n_per_group)
    neg, pos = (str(c) for c in class_names)

    pred = s >= t
    groups = [
        ("True positives", f"true {pos}, predicted {pos}", (y == 1) & pred, True),
        ("True negatives", f"true {neg}, predicted {neg}", (y == 0) & ~pred, True),
        ("False positives", f"true {neg}, predicted {pos}", (y == 0) & pred, False),
        ("False negatives", f"true {pos}, predicted {neg}", (y == 1) & ~pred, False),
    ]

    fig = _new_figure(prediction_grid_size(n_per_group))
    subfigs = fig.subfigures(4, 1, squeeze=False)[:, 0]  # one row per group
    sizes = list(totals) if totals is not None else [int(g[2].sum()) for g in groups]
    for subfig, (name, what, mask, right), size in zip(subfigs, groups, sizes, strict=True):
        idx = np.flatnonzero(mask)
        predicted_positive = name in ("True positives", "False positives")
        # most confident first: highest scores for predicted positives, lowest otherwise
        key = -s[idx] if predicted_positive else s[idx]
        idx = idx[np.argsort(key, kind="stable")][:n_per_group]
        subfig.suptitle(
            f"{name} ({what}): showing {idx.size} of {size}",
            fontsize=9,
            x=0.01,
            ha="left",
        )
        axes = np.atleast_1d(subfig.subplots(1, n_per_group))
        colour = _RIGHT if right else _WRONG
        for j, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= idx.size:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if idx.size == 0 and j == 0:
                    ax.text(
                        0.0,
                        0.5,
                        "none in this group",
                        transform=ax.transAxes,
                        fontsize=9,
                        ha="left",
                        va="center",
                        color="0.4",
                    )
                continue
            i = idx[j]
            ax.imshow(imgs[i], interpolation="nearest")
            ax.set_title(f"p = {s[i]:.2f}", fontsize=8, color=colour)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    return _save(fig, path)
