"""Shared inputs and helpers for the stain tests (a plain module: tests/conftest.py owns the
``conftest`` name, which the other test modules import from).

Synthetic two-stain tiles and real H&E tiles from ../shared/data.

Synthetic tiles follow the stain model exactly (OD = concentrations @ stain matrix), so the true
stain vectors are known. Real tiles are BreakHis images cropped to 448x448 and IDC patches of one
patient stitched 8x8 into 400x400 tiles; tests that use them are marked ``data`` and skip when the
folder is absent.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(
    os.environ.get(
        "BREASTPATH_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)

#: An H&E stain matrix (rows H, E; unit norm) like those fitted on real tiles.
HE = np.array([[0.62, 0.72, 0.31], [0.20, 0.93, 0.30]])
HE = HE / np.linalg.norm(HE, axis=1, keepdims=True)
#: A second, clearly different H&E appearance (about 10 degrees from HE per stain).
HE_OTHER = np.array([[0.50, 0.70, 0.50], [0.35, 0.90, 0.25]])
HE_OTHER = HE_OTHER / np.linalg.norm(HE_OTHER, axis=1, keepdims=True)

#: BreakHis images and IDC patients used for the real-tile tests.
BREAKHIS_FILES = (
    "breakhis/benign/F/40X/SOB_B_F-14-9133-40-001.png",
    "breakhis/benign/TA/40X/SOB_B_TA-14-3411F-40-001.png",
    "breakhis/malignant/DC/40X/SOB_M_DC-14-2523-40-010.png",
    "breakhis/malignant/LC/40X/SOB_M_LC-14-12204-40-001.png",
)
IDC_PATIENTS = ("14211", "9323", "9075")


def he_tile(
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 64),
    *,
    stains: np.ndarray = HE,
    scale: tuple[float, float] = (0.6, 0.35),
    background: float = 0.2,
    noise: float = 0.01,
) -> np.ndarray:
    """A uint8 tile following the two-stain model, with white background and a little noise."""
    h, w = size
    conc = rng.gamma(2.0, 1.0, (h * w, 2)) * np.asarray(scale) / 2.0
    conc *= rng.random((h * w, 2)) < 0.6  # many pixels hold one stain only (sparse)
    conc[rng.random(h * w) < background] = 0.0
    od = conc @ stains + np.abs(rng.normal(0.0, noise, (h * w, 3)))
    return np.clip(np.rint(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8).reshape(h, w, 3)


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between matching rows of two (..., 2, 3) stain matrices."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def mad(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference in grey levels (optionally over ``mask`` pixels only)."""
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return float(diff[mask].mean() if mask is not None else diff.mean())


@functools.cache
def _synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "source": he_tile(rng, (96, 96), stains=HE_OTHER, scale=(0.9, 0.25)),
        "target": he_tile(rng, (96, 96), stains=HE),
        "batch": np.stack([he_tile(rng, (48, 48)) for _ in range(5)]),
    }


def synthetic_tiles() -> dict[str, np.ndarray]:
    """Fresh copies of: ``source`` (96x96, HE_OTHER, strong H), ``target`` (96x96, HE) and
    ``batch`` (5 x 48 x 48, HE)."""
    return {name: array.copy() for name, array in _synthetic().items()}


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[y : y + size, x : x + size])


def _mosaic(patient: Path, k: int = 8) -> np.ndarray:
    patches = [_read(p) for p in sorted(patient.rglob("*.png"))]
    patches = [p for p in patches if p.shape == (50, 50, 3)][: k * k]
    assert len(patches) == k * k, f"{patient} has fewer than {k * k} full patches"
    grid = np.stack(patches).reshape(k, k, 50, 50, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(grid.reshape(k * 50, k * 50, 3))


def _require_data() -> None:
    if not (SHARED_DATA / "breakhis").is_dir() or not (SHARED_DATA / "idc").is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA} (set BREASTPATH_SHARED_DATA)")


@functools.cache
def _real() -> dict[str, np.ndarray]:
    tiles = {Path(f).stem: _crop(_read(SHARED_DATA / f), 448) for f in BREAKHIS_FILES}
    tiles.update({f"idc-{p}": _mosaic(SHARED_DATA / "idc" / p) for p in IDC_PATIENTS})
    for tile in tiles.values():
        tile.flags.writeable = False  # shared between tests: nobody may change them
    return tiles


def real_tiles() -> dict[str, np.ndarray]:
    """Real H&E tiles by name (read-only): 4 BreakHis 448x448 crops, 3 stitched 400x400 IDC
    tiles. Skips the test when ../shared/data is absent."""
    _require_data()
    return _real()


@functools.cache
def _patches() -> np.ndarray:
    folder = SHARED_DATA / "idc" / IDC_PATIENTS[0]
    patches = [_read(p) for p in sorted(folder.rglob("*.png"))]
    return np.stack([p for p in patches if p.shape == (50, 50, 3)][:16])


def idc_patches() -> np.ndarray:
    """A copy of a batch of 16 real 50x50 IDC patches; skips when the data is absent."""
    _require_data()
    return _patches().copy()
