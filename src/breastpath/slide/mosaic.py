"""Rebuild an IDC patient's tissue from its patches; truth and prediction side by side.

Kaggle IDC file names carry each patch's position: ``<patient>_idx5_x<X>_y<Y>_class<C>.png``,
``X, Y`` the pixel offset of its top-left corner on a 50-pixel grid. Patches are pasted at
``(Y - min Y, X - min X)`` on a white canvas; patches missing from the set (background, or not
sampled) stay white, and edge patches smaller than 50x50 are pasted at their own size.

The figure follows Janowczyk & Madabhushi (2016), Fig. 7: on the left the tissue with the
ground-truth IDC region (class-1 patches) tinted and outlined, on the right the model's
probability of IDC per patch as a heatmap overlay. The patient's **verdict and extent** come
from the model's one verdict rule (:mod:`breastpath.inference.verdict`, as in ``breastpath
evaluate``): the extent is the share of its assessed patches called IDC, beside the true share.
Predictions come from :class:`~breastpath.inference.predictor.Predictor` in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath.errors import InvalidImageError, SlideError
from breastpath.inference.quality import assess

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor

PATCH = 50
PATCH_FIELDS = [
    "patient",
    "path",
    "x",
    "y",
    "row",
    "col",
    "height",
    "width",
    "label",
    "probability",
    "predicted",
    "quality",
]


@dataclass
class PatientPatches:
    """One patient's IDC patches at their original size, with positions and labels."""

    patient: str
    paths: list[str]
    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    images: list[np.ndarray]
    source: str
    skipped: list[str] = field(default_factory=list)
    stain: dict[str, Any] | None = None  # the stain target a prepared cache was normalized to

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Mosaic:
    """A patient's rebuilt tissue, label and probability grids, and per-patch rows."""

    patient: str
    image: np.ndarray
    covered: np.ndarray
    origin: tuple[int, int]
    patch: int
    truth: np.ndarray
    probability: np.ndarray
    rows: list[dict[str, Any]]
    score: dict[str, Any]


def load_patient(source: str | Path, *, patient: str) -> PatientPatches:
    """Read one patient's patches from a prepared cache, an IDC folder, or a patient folder.

    Examples
    --------
    >>> patches = load_patient("../shared/data/idc", patient="14211")  # doctest: +SKIP
    >>> len(patches), patches.images[0].shape  # doctest: +SKIP
    (144, (50, 50, 3))
    """
    from breastpath.data.cache import is_prepared

    root = Path(source)
    patient = str(patient)
    if not root.exists():
        raise SlideError(f"{root}: no such folder or prepared cache")
    if is_prepared(root):
        return _from_prepared(root, patient)
    return _from_folder(root, patient)


def _unknown(patient: str, source: Path, known: set[str]) -> SlideError:
    sample = ", ".join(sorted(known)[:8]) + (" ..." if len(known) > 8 else "")
    return SlideError(f"patient {patient!r} not found in {source} (patients there: {sample})")


def _from_prepared(root: Path, patient: str) -> PatientPatches:
    from PIL import Image

    from breastpath.data.cache import open_prepared

    data = open_prepared(root)
    index = np.flatnonzero(data.patients == patient)
    if index.size == 0:
        raise _unknown(patient, root, set(data.patients.tolist()))
    rows = [data.rows[i] for i in index]
    if any(int(r.get("x") or -1) < 0 for r in rows):
        raise SlideError(f"{root}: patches of {patient} have no x/y position (not an IDC cache)")
    images = []
    for i, row in zip(index, rows, strict=True):
        height, width = int(row["height"]), int(row["width"])
        cached = np.asarray(data.images[i])
        if row.get("fit") == "resized":  # undo the cache's resize, approximately
            images.append(np.asarray(Image.fromarray(cached).resize((width, height))))
        else:  # "none" or "padded": the patch sits at the top-left of the cached image
            images.append(np.ascontiguousarray(cached[:height, :width]))
    return PatientPatches(
        patient=patient,
        paths=[r["path"] for r in rows],
        x=np.array([int(r["x"]) for r in rows]),
        y=np.array([int(r["y"]) for r in rows]),
        labels=np.array([int(r["label"]) for r in rows]),
        images=images,
        source="prepared",
        stain=data.meta.get("stain"),
    )


def _from_folder(root: Path, patient: str) -> PatientPatches:
    from breastpath.data.cache import read_image
    from breastpath.data.index import scan_source

    folder = root / patient if (root / patient).is_dir() else root
    records = scan_source(folder, dataset="idc").records
    mine = [r for r in records if r.patient == patient]
    if not mine:
        raise _unknown(patient, folder, {r.patient for r in records})
    kept, images, skipped = [], [], []
    for record in mine:
        try:
            images.append(read_image(record.path))
            kept.append(record)
        except InvalidImageError as exc:
            skipped.append(str(exc))
    if not kept:
        raise SlideError(f"none of the {len(mine)} patches of patient {patient} could be read")
    return PatientPatches(
        patient=patient,
        paths=[r.path for r in kept],
        x=np.array([r.x for r in kept]),
        y=np.array([r.y for r in kept]),
        labels=np.array([r.label for r in kept]),
        images=images,
        source="folder",
        skipped=skipped,
    )


def predict_patches(
    predictor: Predictor,
    images: list[np.ndarray],
    *,
    batch_size: int = 1024,
    cache_stain: dict[str, Any] | None = None,
) -> np.ndarray:
    """Probability of cancer per patch, scored in batches through ``predictor``.

    ``cache_stain``: the stain target the images were already normalized to (a prepared cache).
    """
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if cache_stain is None:
            batch = predictor.prepare(chunk)
        else:
            batch = predictor.cache_input(predictor.resize(chunk), {"stain": cache_stain})
        out.append(predictor.cancer_probability(predictor.predict_proba(batch)))
    return np.concatenate(out) if out else np.zeros(0)


def build_mosaic(
    patches: PatientPatches,
    *,
    predictor: Predictor,
    threshold: float | None = None,
    patch: int = PATCH,
    batch_size: int = 1024,
) -> Mosaic:
    """Paste the patches, score them, and build the label and probability grids.

    Examples
    --------
    >>> mosaic = build_mosaic(load_patient("prepared", patient="10253"),
    ...                       predictor=Predictor.from_checkpoint("default"))  # doctest: +SKIP
    >>> mosaic.score["verdict"]["label"], mosaic.score["extent"]  # doctest: +SKIP
    ('IDC present', 0.31)
    """
    if len(patches) == 0:
        raise SlideError(f"patient {patches.patient} has no patches")
    cutoff = predictor.threshold if threshold is None else float(threshold)
    x0, y0 = int(patches.x.min()), int(patches.y.min())
    cols = (patches.x - x0) // patch
    rows = (patches.y - y0) // patch
    height = int(max(y - y0 + im.shape[0] for y, im in zip(patches.y, patches.images, strict=True)))
    width = int(max(x - x0 + im.shape[1] for x, im in zip(patches.x, patches.images, strict=True)))
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    covered = np.zeros((height, width), dtype=bool)
    for x, y, im in zip(patches.x, patches.y, patches.images, strict=True):
        top, left = int(y) - y0, int(x) - x0
        image[top : top + im.shape[0], left : left + im.shape[1]] = im
        covered[top : top + im.shape[0], left : left + im.shape[1]] = True
    verdicts = assess(patches.images)  # what is not H&E tissue gets no score
    assessed = np.array([q.assessed for q in verdicts], dtype=bool)
    if not assessed.any():
        raise SlideError(
            f"patient {patches.patient}: none of its {len(verdicts)} patches looks like H&E "
            f"tissue ({verdicts[0].reason})"
        )
    probs = np.full(len(verdicts), np.nan)
    probs[assessed] = predict_patches(
        predictor,
        [im for im, ok in zip(patches.images, assessed, strict=True) if ok],
        batch_size=batch_size,
        cache_stain=patches.stain,
    )
    shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    truth = np.full(shape, np.nan)
    truth[rows, cols] = patches.labels
    probability = np.full(shape, np.nan)
    probability[rows, cols] = probs
    table = [
        {
            "patient": patches.patient,
            "path": path,
            "x": int(x),
            "y": int(y),
            "row": int(r),
            "col": int(c),
            "height": im.shape[0],
            "width": im.shape[1],
            "label": int(label),
            "probability": round(float(p), 6) if q.assessed else "",
            "predicted": int(p >= cutoff) if q.assessed else "",
            "quality": "" if q.assessed else q.reason,
        }
        for path, x, y, r, c, im, label, p, q in zip(
            patches.paths,
            patches.x,
            patches.y,
            rows,
            cols,
            patches.images,
            patches.labels,
            probs,
            verdicts,
            strict=True,
        )
    ]
    scored, labels = probs[assessed], patches.labels[assessed]
    verdict = predictor.verdict_rule(threshold=threshold, unit="patch").apply(scored)
    score = {
        "patient": patches.patient,
        "verdict": verdict.to_dict(),
        "positive": verdict.positive,
        "extent": round(float(verdict.extent or 0.0), 6),
        "true_extent": round(float(labels.mean()), 6),
        "rule": verdict.rule,
        "threshold": cutoff,
        "label": int(patches.labels.max()),
        "patches": len(probs),
        "not_assessed": int((~assessed).sum()),
        "idc_patches": int(patches.labels.sum()),
        "mean": round(float(scored.mean()), 6),
        "max": round(float(scored.max()), 6),
        "source": patches.source,
        "skipped": patches.skipped,
        "origin": [x0, y0],
        "size": [width, height],
    }
    return Mosaic(
        patient=patches.patient,
        image=image,
        covered=covered,
        origin=(x0, y0),
        patch=patch,
        truth=truth,
        probability=probability,
        rows=table,
        score=score,
    )


def mosaic_figure(mosaic: Mosaic, *, alpha: float = 0.5, max_side: int = 2048) -> np.ndarray:
    """Ground truth (left) and predicted probability (right) over the rebuilt tissue."""
    from breastpath.slide.heatmap import legend_bar, outline, overlay, paint_grid, side_by_side

    shape = mosaic.image.shape[:2]
    cell = (float(mosaic.patch), float(mosaic.patch))
    truth = paint_grid(mosaic.truth, cell=cell, shape=shape)
    idc = (truth == 1) & mosaic.covered
    tinted = mosaic.image.copy()
    tinted[idc] = np.round(0.6 * tinted[idc] + 0.4 * np.array([255, 0, 0])).astype(np.uint8)
    width = max(2, round(max(shape) / 600))
    truth_panel = outline(tinted, idc, color=(0, 160, 0), width=width)
    values = paint_grid(mosaic.probability, cell=cell, shape=shape)
    values[~mosaic.covered] = np.nan
    s = mosaic.score
    panels = [
        (truth_panel, f"patient {mosaic.patient}: ground truth IDC ({s['idc_patches']} patches)"),
        (
            overlay(mosaic.image, values, alpha=alpha),
            f"predicted: {s['verdict']['label']}, extent {s['extent']:.1%}",
        ),
    ]
    figure = side_by_side(panels, max_side=max_side)
    legend = legend_bar(figure.shape[1], label="probability of IDC", threshold=s["threshold"])
    return np.concatenate([figure, legend])


def write_mosaic(
    out_dir: str | Path, mosaic: Mosaic, *, alpha: float = 0.5, max_side: int = 2048
) -> dict[str, Path]:
    """Write ``mosaic.png`` (tissue, full size), ``figure.png`` (truth | prediction),
    ``patches.csv`` and ``patient.json`` into ``out_dir``."""
    from breastpath.io import write_csv, write_json
    from breastpath.slide.heatmap import save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "mosaic": save_png(out / "mosaic.png", mosaic.image),
        "figure": save_png(
            out / "figure.png", mosaic_figure(mosaic, alpha=alpha, max_side=max_side)
        ),
        "patches": out / "patches.csv",
        "summary": out / "patient.json",
    }
    write_csv(paths["patches"], mosaic.rows, PATCH_FIELDS)
    write_json(paths["summary"], mosaic.score)
    return paths
