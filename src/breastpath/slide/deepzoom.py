"""Deep Zoom (DZI) tiles of a whole slide, for a zoomable viewer.

The standard Deep Zoom layout, as OpenSeadragon and other DZI clients expect it: level
``L`` of ``level_count`` is the slide halved ``level_count - 1 - L`` times (rounding up, down to
1 x 1 pixel); each level is cut into ``tile_size`` squares addressed ``(col, row)``, each with
``overlap`` extra pixels on every interior edge.

:class:`DeepZoom` computes that layout for any :class:`~breastpath.slide.reader.SlideReader`
(DICOM-WSI, TIFF, ...) exactly as ``openslide.deepzoom.DeepZoomGenerator`` does for an OpenSlide
slide: each Deep Zoom level is read from the most reduced pyramid level at least as fine
(OpenSlide's ``get_best_level_for_downsample``), then reduced to the tile's size with Lanczos.
:func:`open_deepzoom` uses OpenSlide's own generator for OpenSlide slides and :class:`DeepZoom`
for the others; both answer the same calls (``level_count``, ``level_tiles``,
``level_dimensions``, ``get_tile``, ``get_dzi``).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from breastpath.errors import SlideError
from breastpath.slide.reader import SlideReader

#: OpenSlide's defaults: 254 + 2 x 1 = 256 pixels for an interior tile.
TILE_SIZE = 254
OVERLAP = 1


class DeepZoomSource(Protocol):
    """What a viewer needs of a Deep Zoom tile generator (OpenSlide's or :class:`DeepZoom`)."""

    @property
    def level_count(self) -> int: ...

    @property
    def level_tiles(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    def get_tile(self, level: int, address: tuple[int, int]) -> Any: ...

    def get_dzi(self, format: str) -> str: ...


def dzi_xml(width: int, height: int, *, tile_size: int, overlap: int, format: str) -> str:
    """The ``.dzi`` XML document (as OpenSlide writes it).

    Examples
    --------
    >>> dzi_xml(3, 2, tile_size=254, overlap=1, format="jpeg")[:38]
    '<?xml version="1.0" encoding="UTF-8"?>'
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="{format}" Overlap="{overlap}" TileSize="{tile_size}">'
        f'<Size Height="{height}" Width="{width}"/></Image>'
    )


def best_level(downsamples: tuple[float, ...], downsample: float) -> int:
    """OpenSlide's ``get_best_level_for_downsample``: the last level whose downsample is
    below ``downsample`` (or equal to it), level 0 when even that one is coarser.

    Examples
    --------
    >>> best_level((1.0, 4.0, 16.0), 8), best_level((1.0, 4.0, 16.0), 4), best_level((1.0,), 0.5)
    (1, 1, 0)
    """
    for i in range(1, len(downsamples)):
        if downsample < downsamples[i]:
            return i - 1
    return len(downsamples) - 1


class DeepZoom:
    """Deep Zoom tiles over a :class:`SlideReader`, laid out as OpenSlide's generator lays them.

    Examples
    --------
    >>> from breastpath.slide.reader import open_slide
    >>> dz = DeepZoom(open_slide("slide.ome.tif"))  # doctest: +SKIP
    >>> dz.level_count, dz.level_tiles[-1], dz.get_tile(dz.level_count - 1, (0, 0)).size
    ... # doctest: +SKIP
    (16, (81, 81), (256, 256))
    """

    def __init__(
        self, reader: SlideReader, *, tile_size: int = TILE_SIZE, overlap: int = OVERLAP
    ) -> None:
        if tile_size < 1 or overlap < 0:
            raise SlideError(f"bad Deep Zoom tile size {tile_size} / overlap {overlap}")
        self.reader = reader
        self.tile_size, self.overlap = tile_size, overlap
        size = reader.dimensions
        sizes = [size]
        while size[0] > 1 or size[1] > 1:
            size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
            sizes.append(size)
        self._z_dimensions = tuple(reversed(sizes))
        self._t_dimensions = tuple(
            (math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in self._z_dimensions
        )
        count = len(self._z_dimensions)
        downsamples = tuple(lv.downsample for lv in reader.levels)
        z_down = [2 ** (count - z - 1) for z in range(count)]
        self._slide_level = tuple(best_level(downsamples, d) for d in z_down)
        self._l_z_down = tuple(z_down[z] / downsamples[self._slide_level[z]] for z in range(count))

    @property
    def level_count(self) -> int:
        return len(self._z_dimensions)

    @property
    def level_tiles(self) -> tuple[tuple[int, int], ...]:
        return self._t_dimensions

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._z_dimensions

    def tile_region(
        self, level: int, address: tuple[int, int]
    ) -> tuple[tuple[tuple[int, int], int, tuple[int, int]], tuple[int, int]]:
        """``((level-0 location, slide level, size at that level), tile size)`` of a tile, as
        OpenSlide's ``DeepZoomGenerator._get_tile_info``; :class:`ValueError` when out of range."""
        if not 0 <= level < self.level_count:
            raise ValueError("Invalid level")
        limits = self._t_dimensions[level]
        if any(not 0 <= t < lim for t, lim in zip(address, limits, strict=True)):
            raise ValueError("Invalid address")
        slide_level = self._slide_level[level]
        info = self.reader.levels[slide_level]
        l_dims = (info.width, info.height)
        tl = tuple(self.overlap * int(t != 0) for t in address)
        br = tuple(self.overlap * int(t != lim - 1) for t, lim in zip(address, limits, strict=True))
        z_size = tuple(
            min(self.tile_size, z_lim - self.tile_size * t) + a + b
            for t, z_lim, a, b in zip(address, self._z_dimensions[level], tl, br, strict=True)
        )
        scale = self._l_z_down[level]
        l_loc = [scale * (self.tile_size * t - a) for t, a in zip(address, tl, strict=True)]
        l0 = tuple(int(info.downsample * v) for v in l_loc)
        l_size = tuple(
            int(min(math.ceil(scale * dz), lim - math.ceil(v)))
            for v, dz, lim in zip(l_loc, z_size, l_dims, strict=True)
        )
        return ((l0[0], l0[1]), slide_level, (l_size[0], l_size[1])), (z_size[0], z_size[1])

    def get_tile(self, level: int, address: tuple[int, int]) -> Any:
        """The tile as an RGB ``PIL.Image`` (white where the slide has no pixels)."""
        from PIL import Image

        (location, slide_level, size), z_size = self.tile_region(level, address)
        pixels = self.reader.read_region(location, slide_level, size)
        tile = Image.fromarray(pixels)
        if tile.size != z_size:
            tile.thumbnail(z_size, Image.Resampling.LANCZOS)
        return tile

    def get_dzi(self, format: str) -> str:
        width, height = self._z_dimensions[-1]
        return dzi_xml(width, height, tile_size=self.tile_size, overlap=self.overlap, format=format)


def open_deepzoom(
    reader: SlideReader, *, tile_size: int = TILE_SIZE, overlap: int = OVERLAP
) -> DeepZoomSource:
    """Deep Zoom tiles of an open slide: OpenSlide's ``DeepZoomGenerator`` for an OpenSlide
    slide, :class:`DeepZoom` (the same layout) for the other readers."""
    handle = getattr(reader, "openslide", None)
    if reader.backend == "openslide" and handle is not None:
        from openslide.deepzoom import DeepZoomGenerator

        return DeepZoomGenerator(handle, tile_size=tile_size, overlap=overlap)
    return DeepZoom(reader, tile_size=tile_size, overlap=overlap)
