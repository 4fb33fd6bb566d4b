"""The tifffile backend: pyramidal TIFF, OME-TIFF and SVS, one TIFF tile at a time.

JPEG, JPEG 2000 and the other TIFF codecs decode through ``imagecodecs`` (a default
dependency). A region read decodes only the TIFF tiles (or strips) it touches, through a small
byte-bounded cache of decoded tiles; no method loads a large level whole. NDPI files parse but
their JPEG tiles do not decode here: :func:`~breastpath.slide.reader.open_slide` opens them
with OpenSlide.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.errors import SlideError
from breastpath.slide.reader import Level, SlideReader, plausible_mpp, to_rgb


class TiffReader(SlideReader):
    """Pyramidal TIFF / OME-TIFF / SVS / NDPI through tifffile, one TIFF tile at a time.

    Parameters
    ----------
    path
        The file.
    cache_bytes
        Bound on the decoded tiles kept for reuse (neighbouring regions share TIFF tiles).
    """

    backend = "tifffile"

    def __init__(self, path: str | Path, *, cache_bytes: int = 64 * 2**20) -> None:
        try:
            import tifffile
        except ImportError:  # pragma: no cover - a default dependency
            raise SlideError("reading TIFF slides needs tifffile: pip install tifffile") from None
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, ValueError, OSError) as exc:
            raise SlideError(f"{self.path}: not a readable TIFF slide ({exc})") from None
        try:
            series = max(self._tif.series, key=_series_area)
            self._pages = [lv.keyframe for lv in series.levels]
            for page in self._pages:
                _check_page(self.path, page)
        except (tifffile.TiffFileError, ValueError, IndexError, KeyError, OSError) as exc:
            self._tif.close()
            if isinstance(exc, SlideError):
                raise
            raise SlideError(f"{self.path}: not a readable TIFF slide ({exc})") from None
        base = self._pages[0]
        self.levels = tuple(
            Level(
                int(p.imagewidth),
                int(p.imagelength),
                (base.imagewidth / p.imagewidth + base.imagelength / p.imagelength) / 2,
            )
            for p in self._pages
        )
        self.mpp, self.mpp_source = _tiff_mpp(self._tif, base)
        self._read_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        info, width, height = self.check_region(level, size)
        x0 = round(location[0] / info.downsample)
        y0 = round(location[1] / info.downsample)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + width, info.width), min(y0 + height, info.height)
        if ix0 >= ix1 or iy0 >= iy1:
            return out
        page = self._pages[level]
        if page.is_tiled:
            seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
            per_row = -(-info.width // seg_w)
        else:
            seg_h, seg_w, per_row = int(page.rowsperstrip or info.height), info.width, 1
            seg_h = min(seg_h, info.height)
        for row in range(iy0 // seg_h, (iy1 - 1) // seg_h + 1):
            for col in range(ix0 // seg_w, (ix1 - 1) // seg_w + 1):
                segment = self._segment(level, row * per_row + col)
                if segment is None:
                    continue  # empty tile: background
                sy, sx = row * seg_h, col * seg_w
                ya, yb = max(iy0, sy), min(iy1, sy + segment.shape[0])
                xa, xb = max(ix0, sx), min(ix1, sx + segment.shape[1])
                if ya < yb and xa < xb:
                    out[ya - y0 : yb - y0, xa - x0 : xb - x0] = segment[
                        ya - sy : yb - sy, xa - sx : xb - sx
                    ]
        return out

    def _segment(self, level: int, index: int) -> np.ndarray | None:
        key = (level, index)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = self._pages[level]
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if count == 0 or offset == 0:
            segment = None
        else:
            with self._read_lock:
                handle = self._tif.filehandle
                handle.seek(offset)
                data = handle.read(count)
            try:
                decoded, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
            except Exception as exc:  # codec errors come in many types
                raise SlideError(
                    f"{self.path.name}: tifffile cannot decode tile {index} of level {level} "
                    f"({exc})"
                ) from None
            segment = None if decoded is None else to_rgb(np.asarray(decoded)[0])
        size = 0 if segment is None else segment.nbytes
        with self._cache_lock:
            self._cache[key] = segment
            self._cache_bytes += size
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= 0 if old is None else old.nbytes
        return segment

    def release_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self._cache_bytes = 0

    @contextmanager
    def without_cache(self) -> Iterator[None]:
        limit, self._cache_limit = self._cache_limit, 0
        try:
            yield
        finally:
            self._cache_limit = limit
            self.release_cache()

    def close(self) -> None:
        self._tif.close()
        self.release_cache()


def _series_area(series: Any) -> int:
    page = series.keyframe
    if page is None or page.dtype is None or page.dtype.itemsize != 1:
        return -1
    return int(page.imagewidth) * int(page.imagelength)


def _check_page(path: Path, page: Any) -> None:
    shaped = tuple(page.shaped)
    if page.dtype is None or page.dtype != np.uint8:
        raise SlideError(f"{path}: only 8-bit slides are supported (found {page.dtype})")
    if shaped[0] != 1 or shaped[1] != 1 or shaped[4] not in (1, 3, 4):
        raise SlideError(
            f"{path}: unsupported TIFF layout {shaped} (need one RGB, RGBA or gray plane)"
        )


_SVS_MPP = re.compile(r"\bMPP\s*=\s*([0-9.]+)")
_OME_SIZE = re.compile(r'PhysicalSizeX="([0-9.eE+-]+)"')
_OME_UNIT = re.compile(r'PhysicalSizeXUnit="([^"]+)"')
_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _tiff_mpp(tif: Any, page: Any) -> tuple[float | None, str | None]:
    """Microns per pixel and where they came from: Aperio description, OME-XML, or the TIFF
    resolution tags (inch or centimetre units only; implausible values are dropped)."""
    description = str(getattr(page, "description", "") or "")
    if tif.is_svs and (match := _SVS_MPP.search(description)):
        return plausible_mpp(match.group(1)), "aperio description MPP"
    if tif.is_ome and tif.ome_metadata and (match := _OME_SIZE.search(tif.ome_metadata)):
        found = _OME_UNIT.search(tif.ome_metadata)
        scale = _UNIT_TO_UM.get(found.group(1) if found else "µm", 1.0)
        return plausible_mpp(float(match.group(1)) * scale), "OME PhysicalSizeX"
    tag, unit_tag = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if tag is None or unit_tag is None:
        return None, None
    numerator, denominator = tag.value
    unit = int(unit_tag.value)
    if not numerator or not denominator or unit not in (2, 3) or numerator == denominator:
        return None, None
    per_unit = numerator / denominator
    mpp = plausible_mpp((25_400.0 if unit == 2 else 10_000.0) / per_unit)
    return mpp, None if mpp is None else "TIFF XResolution"
