"""Slide-level views: IDC tissue mosaics and whole-slide heatmaps.

Modules
-------
``mosaic``        IDC patches -> a patient's tissue image, ground truth and prediction side by side
``reader``        one reader API and ``open_slide`` (auto: the reader made for the format, fallback)
``adapters``      the OpenSlide backend (SVS, NDPI, MRXS, SCN, BIF, VMS, generic TIFF, ...)
``dicom_reader``  the wsidicom backend (DICOM-WSI folders and series)
``tiff_reader``   the tifffile backend (pyramidal TIFF, OME-TIFF, SVS)
``tissue``        tissue mask on a low-resolution level (Otsu; holes and glass stay out)
``tile_check``    slide-level check (a near-black, fluorescence scan); per-tile checks are the
                  tile core's (``breastpath.inference.tiles``)
``tiling``        tile grid over a slide level, lazy parallel reads; scored by the tile core
``heatmap``       tile statistics beside the verdict (``breastpath.inference.verdict``), heatmap
                  PNG, tile CSV
``geojson``       tile scores as QuPath-importable GeoJSON detections
``analyze``       the whole-slide pipeline behind ``breastpath slide``
``synthetic``     generated pyramidal TIFF slides for tests and benchmarks

Nothing is imported until used: ``from breastpath.slide import open_slide`` loads only the reader.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_slide": "reader",
    "SlideReader": "reader",
    "detect_tissue": "tissue",
    "tissue_mask": "tissue",
    "resolve_resolution": "tiling",
    "make_grid": "tiling",
    "score_grid": "tiling",
    "slide_stats": "heatmap",
    "analyze_slide": "analyze",
    "TileCheck": "tile_check",
    "write_geojson": "geojson",
    "read_tile_scores": "geojson",
    "load_patient": "mosaic",
    "build_mosaic": "mosaic",
    "write_mosaic": "mosaic",
    "write_synthetic_slide": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'breastpath.slide' has no attribute {name!r}")
    return getattr(importlib.import_module(f"breastpath.slide.{_EXPORTS[name]}"), name)
