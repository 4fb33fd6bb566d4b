"""The OpenSlide backend: :class:`OpenSlideReader` adapts ``openslide.OpenSlide`` to
:class:`~breastpath.slide.reader.SlideReader`.

``openslide-python`` with the ``openslide-bin`` wheel ships the C library, so no system package
is needed. OpenSlide reads Aperio SVS, Hamamatsu NDPI/VMS/VMU, MIRAX MRXS, Leica SCN, Ventana BIF,
Philips TIFF, Sakura SVSLIDE, DICOM (its own decoders) and generic tiled TIFF; the library is
thread-safe, so region reads run in parallel.

MPP: ``openslide.mpp-x`` (set by each vendor driver), else the ``tiff.XResolution`` /
``tiff.ResolutionUnit`` properties of generic TIFFs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.errors import SlideError
from breastpath.slide.reader import REINSTALL_HINT, Level, SlideReader, plausible_mpp, to_rgb

_UNIT_TO_UM = {"inch": 25_400.0, "centimeter": 10_000.0}


def openslide_mpp(properties: Mapping[str, str]) -> tuple[float | None, str | None]:
    """Microns per level-0 pixel from OpenSlide properties, and which property gave it.

    Examples
    --------
    >>> openslide_mpp({"openslide.mpp-x": "0.499"})
    (0.499, 'openslide.mpp-x')
    >>> openslide_mpp({"tiff.XResolution": "40000", "tiff.ResolutionUnit": "centimeter"})
    (0.25, 'tiff.XResolution')
    >>> openslide_mpp({})
    (None, None)
    """
    mpp = plausible_mpp(properties.get("openslide.mpp-x"))
    if mpp is not None:
        return mpp, "openslide.mpp-x"
    unit = _UNIT_TO_UM.get(str(properties.get("tiff.ResolutionUnit", "")).lower())
    try:
        per_unit = float(properties.get("tiff.XResolution", "nan"))
    except ValueError:
        return None, None
    if unit is None or not per_unit > 0:
        return None, None
    mpp = plausible_mpp(unit / per_unit)
    return mpp, None if mpp is None else "tiff.XResolution"


class OpenSlideReader(SlideReader):
    """Adapts an ``openslide.OpenSlide`` to :class:`SlideReader`."""

    backend = "openslide"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            import openslide
        except ImportError:
            raise SlideError(f"OpenSlide is not installed; {REINSTALL_HINT}") from None
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise SlideError(f"{self.path.name}: openslide cannot open it ({exc})") from None
        self.levels = tuple(
            Level(int(w), int(h), float(d))
            for (w, h), d in zip(
                self._slide.level_dimensions, self._slide.level_downsamples, strict=True
            )
        )
        self.properties = dict(self._slide.properties)
        self.mpp, self.mpp_source = openslide_mpp(self.properties)
        self.vendor = self.properties.get("openslide.vendor")

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        _, width, height = self.check_region(level, size)
        try:
            region = self._slide.read_region(
                (int(location[0]), int(location[1])), level, (width, height)
            )
        except Exception as exc:  # a corrupt tile: OpenSlideError
            raise SlideError(f"{self.path.name}: openslide cannot read a region ({exc})") from None
        return np.ascontiguousarray(to_rgb(np.asarray(region, dtype=np.uint8)))

    @property
    def openslide(self) -> Any:
        """The ``openslide.OpenSlide`` behind this reader (for ``openslide.deepzoom``)."""
        return self._slide

    def describe(self) -> dict:
        return {**super().describe(), "vendor": self.vendor}

    def close(self) -> None:
        self._slide.close()
