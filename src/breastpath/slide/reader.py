"""One reader API for whole-slide images: lazy region reads from any pyramid level.

Three backends, all installed by default:

``openslide``  ``openslide-python`` + the ``openslide-bin`` wheel (no system library): Aperio
               SVS, Hamamatsu NDPI/VMS/VMU, MIRAX MRXS, Leica SCN, Ventana BIF, Philips TIFF,
               Sakura SVSLIDE, generic tiled TIFF
               (:class:`~breastpath.slide.adapters.OpenSlideReader`)
``wsidicom``   DICOM whole-slide images: a folder of one series, a list of ``.dcm`` files, or one
               ``.dcm`` (its series is gathered from the same folder)
               (:class:`~breastpath.slide.dicom_reader.DicomReader`)
``tifffile``   pyramidal TIFF and OME-TIFF (SubIFD or page pyramids), SVS; JPEG and other codecs
               through ``imagecodecs`` (:class:`~breastpath.slide.tiff_reader.TiffReader`)

:func:`open_slide` with ``backend="auto"`` tries the reader made for the format first (see
:func:`backend_order`) and falls back to the next one when a reader cannot open the file *or
cannot decode it*: every reader must decode a region of its first and last level before it is
used, so a file that parses but whose tiles do not decode (an NDPI under tifffile) moves on.

Conventions are OpenSlide's: ``read_region(location, level, size)`` takes ``location = (x, y)``
in **level-0** pixels and ``size = (width, height)`` in pixels **of the level read**; it returns
``(height, width, 3)`` uint8 RGB. Pixels outside the image, and empty (sparse) tiles, are white
background; alpha is composited onto white.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.choices import SLIDE_BACKENDS
from breastpath.errors import SlideError

BACKENDS = SLIDE_BACKENDS
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Files OpenSlide was made for (checked first); any other TIFF goes to tifffile first.
VENDOR_SUFFIXES = (".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide")
#: Microns per pixel outside this range are treated as missing (a 72-dpi default is 353 µm).
PLAUSIBLE_MPP = (0.01, 100.0)
REINSTALL_HINT = (
    "reinstall breastpath's readers: pip install openslide-python openslide-bin wsidicom"
)


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and its downsample from level 0."""

    width: int
    height: int
    downsample: float


def plausible_mpp(value: object) -> float | None:
    """``value`` as microns per pixel, or None when missing, unparsable or implausible.

    Examples
    --------
    >>> plausible_mpp("0.499"), plausible_mpp(352.7), plausible_mpp(None)
    (0.499, None, None)
    """
    try:
        mpp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return mpp if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None


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
    #: Where ``mpp`` came from (a property, tag or header field), or None.
    mpp_source: str | None = None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.levels[0].width, self.levels[0].height

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel at ``level`` (None when the slide has no mpp)."""
        return None if self.mpp is None else self.mpp * self.levels[level].downsample

    def set_mpp(self, mpp: float, *, source: str) -> None:
        """Declare the level-0 microns per pixel (when the file lacks it or is wrong)."""
        if not mpp > 0:
            raise SlideError(f"mpp must be positive, got {mpp}")
        self.mpp, self.mpp_source = float(mpp), source

    def best_level_for_downsample(self, downsample: float) -> int:
        """The most reduced level whose downsample is at most ``downsample`` (+1% tolerance)."""
        fits = [i for i, lv in enumerate(self.levels) if lv.downsample <= downsample * 1.01]
        return max(fits, key=lambda i: self.levels[i].downsample) if fits else 0

    def check_level(self, level: int) -> Level:
        if not 0 <= level < len(self.levels):
            last = len(self.levels) - 1
            raise SlideError(f"{self.path.name}: no level {level}; the slide has levels 0..{last}")
        return self.levels[level]

    def check_region(self, level: int, size: tuple[int, int]) -> tuple[Level, int, int]:
        """The level and ``(width, height)`` of a region request, or :class:`SlideError`."""
        info = self.check_level(level)
        width, height = int(size[0]), int(size[1])
        if width < 1 or height < 1:
            raise SlideError(f"region size must be positive, got {size}")
        return info, width, height

    @abstractmethod
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """RGB uint8 ``(height, width, 3)`` of ``size`` pixels at ``level`` from level-0
        ``location``."""

    def probe(self) -> None:
        """Decode a small region at the centre of the first and last level, or raise
        :class:`SlideError` (used by :func:`open_slide` to fall back to another backend)."""
        width, height = self.dimensions
        for level in sorted({0, len(self.levels) - 1}):
            try:
                self.read_region((width // 2, height // 2), level, (32, 32))
            except SlideError:
                raise
            except Exception as exc:  # each library has its own decode errors
                raise SlideError(
                    f"{self.path.name}: {self.backend} cannot decode level {level} ({exc})"
                ) from None

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
                out[oy : oy + n, ox : ox + m] = box_mean(block, factor)
        return out

    def describe(self) -> dict[str, Any]:
        """Backend, size, levels and mpp (for reports)."""
        return {
            "path": str(self.path),
            "backend": self.backend,
            "dimensions": list(self.dimensions),
            "levels": [[lv.width, lv.height, round(lv.downsample, 4)] for lv in self.levels],
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
        }

    def release_cache(self) -> None:  # noqa: B027 - optional hook
        """Drop decoded tiles this reader keeps (a slide waiting its turn holds less memory)."""

    def without_cache(self) -> AbstractContextManager[None]:
        """A ``with`` block in which this reader keeps no decoded tiles (dropped at its end)."""
        return nullcontext()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def box_mean(block: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor x factor`` square of a uint8 ``(H, W, C)`` block (``H`` and
    ``W`` multiples of ``factor``), rounded half to even: exactly ``np.round`` of the float
    mean, in integer sums (several times faster on a thumbnail's level-0 pixels).

    >>> box_mean(np.array([[[1], [2]], [[3], [4]]], np.uint8), 2).ravel().tolist()  # 2.5
    [2]
    """
    kind = np.uint16 if factor <= 16 else np.uint32  # 16 x 16 x 255 < 2**16
    rows: Any = block[0::factor].astype(kind)
    for i in range(1, factor):
        rows += block[i::factor]
    sums: Any = rows[:, 0::factor]  # a view; the columns added below are others
    for j in range(1, factor):
        sums += rows[:, j::factor]
    count = factor * factor
    out: Any = sums // count
    if count % 2:  # no ties: round half up is round half to even
        return ((sums * 2 + count) // (2 * count)).astype(np.uint8)
    # s + count/2 - 1 + (q odd) crosses the next multiple of count exactly when s / count
    # rounds up, half to even (q = s // count)
    out = (sums + (count // 2 - 1) + (out & 1)) // count
    return out.astype(np.uint8)


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
        if (pixels[..., 3] == 255).all():  # opaque (inside the scan): the composite is RGB
            return np.ascontiguousarray(pixels[..., :3])
        alpha = pixels[..., 3:4].astype(np.uint16)
        rgb = (pixels[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    raise SlideError(f"cannot show {channels} channels as RGB")


def paste_inside(
    out: np.ndarray, level: Level, x0: int, y0: int
) -> tuple[int, int, int, int] | None:
    """The part ``(ix0, iy0, ix1, iy1)`` of a region at level pixel ``(x0, y0)`` of ``out``'s
    size that lies inside ``level``, or None when it is all outside."""
    height, width = out.shape[:2]
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + width, level.width), min(y0 + height, level.height)
    return None if ix0 >= ix1 or iy0 >= iy1 else (ix0, iy0, ix1, iy1)


def available_backends() -> list[str]:
    """Installed reader backends."""
    modules = {"openslide": "openslide", "wsidicom": "wsidicom", "tifffile": "tifffile"}
    return [b for b, m in modules.items() if importlib.util.find_spec(m) is not None]


def _has_magic(path: Path, offset: int, magic: tuple[bytes, ...]) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(4) in magic


def backend_order(path: Path) -> list[str]:
    """The backends ``auto`` tries for ``path``, the one made for its format first.

    A DICOM folder or file: wsidicom. A vendor format (:data:`VENDOR_SUFFIXES`): OpenSlide,
    then tifffile. Any other TIFF (generic, OME): tifffile, then OpenSlide. Anything else:
    OpenSlide, which detects its formats by content.

    Examples
    --------
    >>> from pathlib import Path
    >>> backend_order(Path("a.ndpi")), backend_order(Path("b.dcm"))
    (['openslide', 'tifffile'], ['wsidicom'])
    """
    name = path.name.lower()
    if name.endswith(".dcm") or path.is_dir():
        return ["wsidicom"]
    if name.endswith(VENDOR_SUFFIXES):
        return ["openslide", "tifffile"]
    if _has_magic(path, 128, (b"DICM",)):
        return ["wsidicom"]
    return ["tifffile", "openslide"] if _has_magic(path, 0, TIFF_MAGIC) else ["openslide"]


def _open_with(backend: str, source: Path | list[Path]) -> SlideReader:
    if backend == "wsidicom":
        from breastpath.slide.dicom_reader import DicomReader

        return DicomReader(source)
    if isinstance(source, list):
        raise SlideError(f"backend {backend!r} opens one file; a list of files is DICOM only")
    if not source.is_file():
        raise SlideError(f"{source}: is a folder; only a DICOM folder (wsidicom) can be opened")
    if backend == "openslide":
        from breastpath.slide.adapters import OpenSlideReader

        return OpenSlideReader(source)
    from breastpath.slide.tiff_reader import TiffReader

    return TiffReader(source)


def _open_checked(backend: str, source: Path | list[Path]) -> SlideReader:
    reader = _open_with(backend, source)
    try:
        reader.probe()
    except SlideError:
        reader.close()
        raise
    return reader


def open_slide(path: str | Path | Sequence[str | Path], *, backend: str = "auto") -> SlideReader:
    """Open a whole-slide image.

    Parameters
    ----------
    path
        A slide file, a DICOM-WSI folder, or a list of the ``.dcm`` files of one series.
    backend
        ``"auto"`` (the reader made for the format, then the others; see
        :func:`backend_order`), or one of ``"openslide"``, ``"wsidicom"``, ``"tifffile"``.

    Raises
    ------
    SlideError
        The file is missing, not a slide, or no backend can open *and decode* it.

    Examples
    --------
    >>> slide = open_slide("CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> slide.backend, slide.dimensions, slide.mpp  # doctest: +SKIP
    ('openslide', (2220, 2967), 0.499)
    """
    if backend not in BACKENDS:
        raise SlideError(f"unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(path, (str, Path)):
        source: Path | list[Path] = Path(path)
        first = Path(path)
    else:
        source = [Path(p) for p in path]
        if not source:
            raise SlideError("no slide files given")
        first = source[0]
    for item in source if isinstance(source, list) else [source]:
        if not item.exists():
            raise SlideError(f"{item}: no such file")
    if backend != "auto":
        return _open_checked(backend, source)
    order = ["wsidicom"] if isinstance(source, list) else backend_order(first)
    installed = available_backends()
    errors = []
    for name in order:
        if name not in installed:
            errors.append(f"{name} is not installed")
            continue
        try:
            return _open_checked(name, source)
        except SlideError as exc:
            errors.append(str(exc))
    detail = "; ".join(errors) if errors else "no reader for this format"
    hint = "" if set(order) <= set(installed) else f"; {REINSTALL_HINT}"
    raise SlideError(f"{first}: not a slide that can be read ({detail}){hint}")


def __getattr__(name: str) -> Any:
    if name == "TiffReader":  # kept importable from here; it lives in tiff_reader
        from breastpath.slide.tiff_reader import TiffReader

        return TiffReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
