"""The wsidicom backend: DICOM VL Whole Slide Microscopy images as a
:class:`~breastpath.slide.reader.SlideReader`.

A DICOM slide is a *series* of instances (one per pyramid level, plus label and overview
images). It can be given as the folder that holds the series, as a list of its ``.dcm`` files,
or as one ``.dcm`` file: the other files of the same series (same ``SeriesInstanceUID``) are then
gathered from its folder. MPP is the volume's ``PixelSpacing`` (millimetres, times 1000).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from breastpath.errors import SlideError
from breastpath.slide.reader import (
    REINSTALL_HINT,
    Level,
    SlideReader,
    paste_inside,
    plausible_mpp,
    to_rgb,
)


def _series_uid(path: Path) -> str | None:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # not DICOM: InvalidDicomError, OSError, ...
        return None
    value = getattr(header, "SeriesInstanceUID", None)
    return None if value is None else str(value)


def series_files(path: Path) -> list[Path]:
    """The ``.dcm`` files in ``path``'s folder of the same series as ``path``."""
    uid = _series_uid(path)
    if uid is None:
        raise SlideError(f"{path.name}: not a DICOM file")
    siblings = sorted(p for p in path.parent.iterdir() if p.is_file() and p != path)
    return [path, *(p for p in siblings if _series_uid(p) == uid)]


class DicomReader(SlideReader):
    """A DICOM-WSI series read through ``wsidicom`` (see the module docstring)."""

    backend = "wsidicom"

    def __init__(self, source: Path | Sequence[Path]) -> None:
        try:
            from wsidicom import WsiDicom
        except ImportError:
            raise SlideError(f"wsidicom is not installed; {REINSTALL_HINT}") from None
        if isinstance(source, Path):
            self.path = source
            files: Path | list[Path] = source if source.is_dir() else series_files(source)
        else:
            files = [Path(p) for p in source]
            self.path = files[0].parent
        try:
            self._slide = WsiDicom.open(files)
            pyramid = list(self._slide.levels)
        except Exception as exc:  # WsiDicomNotFoundError, pydicom errors, ...
            raise SlideError(f"{self.path.name}: wsidicom cannot open it ({exc})") from None
        if not pyramid:
            raise SlideError(f"{self.path.name}: the DICOM series has no pyramid levels")
        base = pyramid[0].size
        self._indices = [int(lv.level) for lv in pyramid]
        self.levels = tuple(
            Level(
                int(lv.size.width),
                int(lv.size.height),
                (base.width / lv.size.width + base.height / lv.size.height) / 2,
            )
            for lv in pyramid
        )
        try:
            spacing = float(self._slide.pixel_spacing.width)
        except (AttributeError, TypeError, ValueError):
            spacing = float("nan")
        self.mpp = plausible_mpp(spacing * 1000.0)
        self.mpp_source = None if self.mpp is None else "DICOM PixelSpacing"
        self._lock = threading.Lock()

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        info, width, height = self.check_region(level, size)
        x0 = round(location[0] / info.downsample)
        y0 = round(location[1] / info.downsample)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        inside = paste_inside(out, info, x0, y0)
        if inside is None:
            return out
        ix0, iy0, ix1, iy1 = inside
        with self._lock:  # wsidicom file handles are shared; keep one read at a time
            pixels = self._slide.read_region(
                (ix0, iy0), self._indices[level], (ix1 - ix0, iy1 - iy0), as_array=True
            )
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = to_rgb(np.asarray(pixels, np.uint8))
        return out

    def close(self) -> None:
        self._slide.close()
