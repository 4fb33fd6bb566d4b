"""Tile scores as GeoJSON detections that QuPath imports (File > Import objects, or drag the
file onto the open slide).

Each tile read from the slide is one ``Feature`` with a square ``Polygon`` in level-0 pixel
coordinates (QuPath's image coordinates) and ``properties``:

- ``objectType: "detection"``;
- ``classification``: the model's own class names with a colour QuPath draws
  (``{"name": "IDC", "color": [220, 40, 40]}`` at or above the threshold, the other class,
  e.g. ``"non-IDC"``, in blue below): never a tissue type the model did not predict, such as
  QuPath's "Stroma"; ``"Ignore*"`` for skipped tiles;
- ``measurements``: ``{"probability": p, "tissue": share}`` (numbers only, so QuPath can draw
  a measurement map of ``probability``); skipped tiles carry ``tissue`` only;
- ``skipped``: the reason a tile was not scored, when it was not.

Tiles skipped by the thumbnail mask (never read) are left out.

Examples
--------
>>> rows = [{"x": 0, "y": 50, "size": 50, "tissue": 1.0, "probability": 0.9, "skipped": ""}]
>>> feature = tile_features(rows, threshold=0.5, classes=("non-IDC", "IDC"))[0]
>>> feature["geometry"]["coordinates"][0][:2], feature["properties"]["classification"]
([[0, 50], [50, 50]], {'name': 'IDC', 'color': [220, 40, 40]})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from breastpath.errors import SlideError
from breastpath.io import atomic_open

#: QuPath colours (RGB) of the below-threshold and at-or-above-threshold classes.
CLASS_COLORS = ([40, 90, 220], [220, 40, 40])
#: Default class names when the model's are not given.
DEFAULT_CLASSES = ("negative", "positive")


def class_names_of(model: Mapping[str, Any]) -> tuple[str, str]:
    """(below, at or above threshold) class names from a model description
    (:meth:`Predictor.describe`): the cancer classes against the rest.

    Examples
    --------
    >>> class_names_of({"classes": ["non-IDC", "IDC"], "cancer_classes": ["IDC"]})
    ('non-IDC', 'IDC')
    """
    classes = [str(c) for c in model.get("classes") or []]
    cancer = [str(c) for c in model.get("cancer_classes") or []]
    if not classes or not cancer:
        return DEFAULT_CLASSES
    others = [c for c in classes if c not in cancer]
    return (" or ".join(others) or "not " + " or ".join(cancer), " or ".join(cancer))


def _square(x: int, y: int, size: int) -> list[list[list[int]]]:
    return [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]


def tile_features(
    rows: Iterable[Mapping[str, Any]],
    *,
    threshold: float | None,
    classes: tuple[str, str] = DEFAULT_CLASSES,
) -> list[dict[str, Any]]:
    """GeoJSON features for tile records (:meth:`~breastpath.slide.tiling.TileGrid.records`);
    ``classes``: the names of the below- and at-or-above-threshold classes."""
    features = []
    for row in rows:
        reason = row.get("skipped") or ""
        if reason == "mask":
            continue
        x, y, size = int(row["x"]), int(row["y"]), int(row["size"])
        measurements: dict[str, float] = {"tissue": float(row["tissue"])}
        properties: dict[str, Any] = {"objectType": "detection"}
        if reason:
            properties["classification"] = {"name": "Ignore*"}
            properties["skipped"] = reason
        else:
            p = float(row["probability"])
            measurements["probability"] = p
            positive = int(threshold is not None and p >= threshold)
            properties["classification"] = {
                "name": classes[positive],
                "color": CLASS_COLORS[positive],
            }
        properties["measurements"] = measurements
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": _square(x, y, size)},
                "properties": properties,
            }
        )
    return features


def write_geojson(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]],
    *,
    threshold: float | None,
    classes: tuple[str, str] = DEFAULT_CLASSES,
) -> Path:
    """Write tile records as a GeoJSON ``FeatureCollection`` (atomically)."""
    features = tile_features(rows, threshold=threshold, classes=classes)
    collection = {"type": "FeatureCollection", "features": features}
    with atomic_open(path) as handle:
        handle.write(json.dumps(collection, separators=(",", ":")).encode("utf-8"))
    return Path(path)


def read_tile_scores(path: str | Path) -> list[dict[str, Any]]:
    """The tiles of a GeoJSON written by :func:`write_geojson`: ``x``, ``y``, ``size``,
    ``probability`` (None when skipped), ``tissue``, ``skipped`` and ``classification``."""
    try:
        collection = json.loads(Path(path).read_text(encoding="utf-8"))
        features = collection["features"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SlideError(f"{path}: not a tile GeoJSON ({exc})") from None
    out = []
    for feature in features:
        ring = feature["geometry"]["coordinates"][0]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        props = feature["properties"]
        out.append(
            {
                "x": min(xs),
                "y": min(ys),
                "size": max(xs) - min(xs),
                "probability": props["measurements"].get("probability"),
                "tissue": props["measurements"]["tissue"],
                "skipped": props.get("skipped", ""),
                "classification": props["classification"]["name"],
            }
        )
    return out
