"""One reader API for whole-slide images: lazy region reads from any pyramid level.

The base reader is :class:`TiffReader` (tifffile): pyramidal TIFF, OME-TIFF (SubIFD or page
pyramids), SVS and NDPI (JPEG-compressed files need ``imagecodecs``, in the ``slide`` extra). A
region read decodes only the TIFF tiles (or strips) it touches, through a small byte-bounded
cache of decoded tiles; no method loads a large level whole. When OpenSlide
(``openslide-python`` + ``openslide-bin``) or ``tiffslide`` is installed,
:class:`~breastpath.slide.adapters.OpenSlideReader` adapts it to the same API for the other
formats (MRXS, SCN, ...).

Conventions are OpenSlide's: ``read_region(location, level, size)`` takes ``location = (x, y)``
in **level-0** pixels and ``size = (width, height)`` in pixels **of the level read**; it returns
``(height, width, 3)`` uint8 RGB. Pixels outside the image, and empty (sparse) TIFF tiles, are
white background; alpha is composited onto white.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.errors import SlideError

BACKENDS = ("auto", "tifffile", "openslide", "tiffslide")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
INSTALL_HINT = (
    "for SVS/NDPI/MRXS through OpenSlide install `openslide-python openslide-bin` or `tiffslide`"
)


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and its downsample from level 0."""

    width: int
    height: int
    downsample: float


class SlideReader(ABC):
    """A whole-slide image opened for lazy region reads (see the module docstring).

    Examples
    --------
    >>> with open_slide("slide.ome.tif") as slide:  # doctest: +SKIP
    ...     slide.levels[0], slide.mpp
    ...     patch = slide.read_region((1000, 2000), 0, (50, 50))
    (Level(width=20480, height=20480, downsample=1.0), 0.25)
    """

    path: Path
    backend: str
    levels: tuple[Level, ...]
    #: Microns per level-0 pixel, or None when the file does not say.
    mpp: float | None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.levels[0].width, self.levels[0].height

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel at ``level`` (None when the slide has no mpp)."""
        return None if self.mpp is None else self.mpp * self.levels[level].downsample

    def best_level_for_downsample(self, downsample: float) -> int:
        """The most reduced level whose downsample is at most ``downsample`` (+1% tolerance)."""
        fits = [i for i, lv in enumerate(self.levels) if lv.downsample <= downsample * 1.01]
        return max(fits, key=lambda i: self.levels[i].downsample) if fits else 0

    def check_level(self, level: int) -> Level:
        if not 0 <= level < len(self.levels):
            last = len(self.levels) - 1
            raise SlideError(f"{self.path.name}: no level {level}; the slide has levels 0..{last}")
        return self.levels[level]

    @abstractmethod
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB uint8 ``(height, width, 3)`` of ``size`` pixels at ``level`` from level-0
        ``location``."""

    def read_level(self, level: int, *, block: int = 2048) -> np.ndarray:
        """A whole (reduced) level, read block by block. Refuse levels over 64 Mpx."""
        info = self.check_level(level)
        if info.width * info.height > 64 * 2**20:
            raise SlideError(
                f"{self.path.name}: level {level} is {info.width}x{info.height}; "
                "refusing to load it whole"
            )
        out = np.empty((info.height, info.width, 3), dtype=np.uint8)
        for y in range(0, info.height, block):
            for x in range(0, info.width, block):
                h, w = min(block, info.height - y), min(block, info.width - x)
                location = (round(x * info.downsample), round(y * info.downsample))
                out[y : y + h, x : x + w] = self.read_region(location, level, (w, h))
        return out

    def thumbnail(self, *, max_size: int = 2048) -> tuple[np.ndarray, tuple[float, float]]:
        """A low-resolution RGB image of the whole slide, longest side at most ``max_size``.

        Reads the most reduced level whose longest side is still at least ``max_size // 2``
        (level 0 when none is), streaming it in blocks and area-averaging when it is larger
        than ``max_size``. Level 0 of a slide without a pyramid is streamed, never loaded.

        Returns
        -------
        (image, (sx, sy))
            The thumbnail and the level-0 pixels per thumbnail pixel along x and y.
        """
        width, height = self.dimensions
        big_enough = [
            i for i, lv in enumerate(self.levels) if max(lv.width, lv.height) >= max_size // 2
        ]
        level = min(big_enough, key=lambda i: self.levels[i].width) if big_enough else 0
        info = self.levels[level]
        factor = max(1, int(np.ceil(max(info.width, info.height) / max_size)))
        image = self.read_level(level) if factor == 1 else self._reduced_level(level, factor)
        return image, (width / image.shape[1], height / image.shape[0])

    def _reduced_level(self, level: int, factor: int) -> np.ndarray:
        """Level ``level`` area-averaged by ``factor``, read block by block (bounded memory)."""
        info = self.levels[level]
        out_h, out_w = -(-info.height // factor), -(-info.width // factor)
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        step = max(1, 1024 // factor)  # output pixels per block side
        for oy in range(0, out_h, step):
            for ox in range(0, out_w, step):
                n, m = min(step, out_h - oy), min(step, out_w - ox)
                location = (
                    round(ox * factor * info.downsample),
                    round(oy * factor * info.downsample),
                )
                block = self.read_region(location, level, (m * factor, n * factor))
                means = block.reshape(n, factor, m, factor, 3).mean(axis=(1, 3))
                out[oy : oy + n, ox : ox + m] = np.round(means).astype(np.uint8)
        return out

    def describe(self) -> dict[str, Any]:
        """Backend, size, levels and mpp (for reports)."""
        return {
            "path": str(self.path),
            "backend": self.backend,
            "dimensions": list(self.dimensions),
            "levels": [[lv.width, lv.height, round(lv.downsample, 4)] for lv in self.levels],
            "mpp": self.mpp,
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Gray, RGB or RGBA uint8 -> RGB uint8, alpha composited onto white."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    if channels == 3:
        return pixels
    if channels == 1:
        return np.repeat(pixels, 3, axis=-1)
    if channels == 4:
        alpha = pixels[..., 3:4].astype(np.uint16)
        rgb = (pixels[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    raise SlideError(f"cannot show {channels} channels as RGB")


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
        except ImportError:  # pragma: no cover - tifffile is in the `slide` and `dev` extras
            raise SlideError(
                "reading TIFF slides needs tifffile: pip install 'breastpath[slide]'"
            ) from None
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
        self.mpp = _tiff_mpp(self._tif, base)
        self._read_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        info = self.check_level(level)
        width, height = int(size[0]), int(size[1])
        if width < 1 or height < 1:
            raise SlideError(f"region size must be positive, got {size}")
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
                    f"{self.path.name}: cannot decode tile {index} of level {level} ({exc}); "
                    "compressed slides may need: pip install 'breastpath[slide]'"
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

    def close(self) -> None:
        self._tif.close()
        self._cache.clear()
        self._cache_bytes = 0


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


def _tiff_mpp(tif: Any, page: Any) -> float | None:
    """Microns per pixel from SVS, OME-XML or the TIFF resolution tags."""
    description = str(getattr(page, "description", "") or "")
    if tif.is_svs and (match := _SVS_MPP.search(description)):
        return float(match.group(1))
    if tif.is_ome and tif.ome_metadata and (match := _OME_SIZE.search(tif.ome_metadata)):
        unit = _OME_UNIT.search(tif.ome_metadata)
        return float(match.group(1)) * _UNIT_TO_UM.get(unit.group(1) if unit else "µm", 1.0)
    tag, unit_tag = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if tag is None or unit_tag is None:
        return None
    numerator, denominator = tag.value
    unit = int(unit_tag.value)
    if not numerator or not denominator or unit not in (2, 3) or numerator == denominator:
        return None
    per_unit = numerator / denominator
    return (25_400.0 if unit == 2 else 10_000.0) / per_unit


def available_backends() -> list[str]:
    """Installed reader backends, in the order ``auto`` tries them."""
    import importlib.util

    return [b for b in BACKENDS[1:] if importlib.util.find_spec(b) is not None]


def open_slide(path: str | Path, *, backend: str = "auto") -> SlideReader:
    """Open a whole-slide image.

    Parameters
    ----------
    path
        A pyramidal TIFF / OME-TIFF / SVS / NDPI file (tifffile), or any format OpenSlide reads
        when ``openslide-python`` + ``openslide-bin`` or ``tiffslide`` is installed.
    backend
        ``"auto"`` (tifffile for TIFF-based files, then OpenSlide, then tiffslide), or one of
        ``"tifffile"``, ``"openslide"``, ``"tiffslide"``.

    Raises
    ------
    SlideError
        The file is missing, a folder, not a slide, or no installed backend reads it.

    Examples
    --------
    >>> slide = open_slide("slide.ome.tif")  # doctest: +SKIP
    >>> slide.backend, slide.dimensions  # doctest: +SKIP
    ('tifffile', (20480, 20480))
    """
    if backend not in BACKENDS:
        raise SlideError(f"unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    source = Path(path)
    if not source.exists():
        raise SlideError(f"{source}: no such file")
    if source.is_dir():
        raise SlideError(f"{source}: is a folder, not a slide file")
    if backend == "tifffile":
        return TiffReader(source)
    from breastpath.slide.adapters import OpenSlideReader

    if backend != "auto":
        return OpenSlideReader(source, backend=backend)
    with open(source, "rb") as handle:
        is_tiff = handle.read(4) in TIFF_MAGIC
    installed = available_backends()
    candidates = (["tifffile"] if is_tiff else []) + [b for b in installed if b != "tifffile"]
    errors = []
    for name in candidates:
        try:
            return (
                TiffReader(source) if name == "tifffile" else OpenSlideReader(source, backend=name)
            )
        except SlideError as exc:
            errors.append(str(exc))
    detail = f" ({errors[0]})" if errors else ""
    hint = "" if "openslide" in installed or "tiffslide" in installed else f"; {INSTALL_HINT}"
    raise SlideError(f"{source}: not a slide that can be read{detail}{hint}")
