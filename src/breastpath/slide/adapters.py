"""Adapters from other slide libraries to :class:`~breastpath.slide.reader.SlideReader`.

OpenSlide (``openslide-python`` + ``openslide-bin``) and ``tiffslide`` share one API
(``level_dimensions``, ``level_downsamples``, ``properties``, ``read_region`` returning a PIL
image), so one adapter covers both. They are optional: install one of them to read MRXS, SCN,
BIF and the other formats tifffile does not.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from breastpath.errors import SlideError
from breastpath.slide.reader import INSTALL_HINT, Level, SlideReader, to_rgb


class OpenSlideReader(SlideReader):
    """Adapts an ``openslide.OpenSlide`` or ``tiffslide.TiffSlide`` to :class:`SlideReader`."""

    def __init__(self, path: str | Path, *, backend: str = "openslide") -> None:
        self.path = Path(path)
        self.backend = backend
        try:
            if backend == "openslide":
                import openslide

                self._slide = openslide.OpenSlide(str(self.path))
            else:
                import tiffslide

                self._slide = tiffslide.TiffSlide(str(self.path))
        except ImportError:
            raise SlideError(f"backend {backend!r} is not installed; {INSTALL_HINT}") from None
        except Exception as exc:  # each library has its own "unsupported format" error
            raise SlideError(f"{self.path}: {backend} cannot open it ({exc})") from None
        self.levels = tuple(
            Level(int(w), int(h), float(d))
            for (w, h), d in zip(
                self._slide.level_dimensions, self._slide.level_downsamples, strict=True
            )
        )
        props = self._slide.properties
        value = props.get("openslide.mpp-x") or props.get("tiffslide.mpp-x")
        self.mpp = float(value) if value else None
        self._lock = threading.Lock() if backend == "tiffslide" else None

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        self.check_level(level)
        args = ((int(location[0]), int(location[1])), level, (int(size[0]), int(size[1])))
        if self._lock is None:
            region = self._slide.read_region(*args)
        else:
            with self._lock:
                region = self._slide.read_region(*args)
        return np.ascontiguousarray(to_rgb(np.asarray(region, dtype=np.uint8)))

    def close(self) -> None:
        self._slide.close()
