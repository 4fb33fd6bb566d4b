"""The slides a viewer serves from one folder, by id; their Deep Zoom tiles and results.

``SlideCatalog(root)`` takes

- a **cohort output folder** (it holds ``cohort.csv``, written by ``breastpath slide ... --out
  root``): one slide per row, its results in ``root/<output>/`` (``slide.json``, ``tiles.csv``,
  ``tiles.geojson``, ``heatmap.png``), its pixels at the row's ``path`` (as the cohort was given
  it: absolute, or relative to the working folder, to ``root`` or to ``root``'s parent); or
- the **output folder of one slide** (it holds ``slide.json``; the slide is at its
  ``slide.path``, found as a cohort row's path is); or
- a **folder of slides**, searched as a cohort input is (:func:`~breastpath.slide.sources.
  search_folder`); a slide whose real path lies outside ``root`` (a symbolic link out of it)
  is left out.

The slides are listed once, when the catalogue is made. A slide's id is its cohort output name
(``[A-Za-z0-9._-]``, at most 200 characters); a request names an id, never a path, and an id
that is not in the catalogue is :class:`UnknownSlide`. Result files are read only by their
fixed names, from ``root`` itself or a folder directly inside it, or (for slides analysed from
the viewer, :meth:`SlideCatalog.attach`) from a folder directly inside the results folder the
server was given (:meth:`SlideCatalog.trust_results`).

Open slides are kept in a small least-recently-used set (``max_open``); a slide being read is
never closed under its reader.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breastpath.errors import SlideError
from breastpath.slide.deepzoom import DeepZoomSource, open_deepzoom
from breastpath.slide.reader import SlideReader, open_slide

SLIDE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
RESULT_FILES = ("slide.json", "tiles.csv", "tiles.geojson", "heatmap.png")
NOT_ANALYSED = "not analysed"


class UnknownSlide(SlideError):
    """No slide, level or tile of that name in the catalogue (an HTTP 404)."""


@dataclass
class Entry:
    """One slide of the catalogue."""

    id: str
    #: What open_slide takes (None when the cohort's path cannot be found).
    opener: Path | None
    #: The folder of its results, inside the catalogue's root (None: not analysed).
    output: Path | None = None
    status: str = NOT_ANALYSED
    missing: str | None = None


def _format(reader: SlideReader) -> str:
    if reader.backend == "openslide":
        return str(getattr(reader, "vendor", None) or "openslide")
    if reader.backend == "wsidicom":
        return "dicom"
    return "ome-tiff" if reader.path.name.lower().endswith((".ome.tif", ".ome.tiff")) else "tiff"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class SlideCatalog:
    """The slides under ``root`` (see the module docstring).

    Examples
    --------
    >>> catalog = SlideCatalog("out/cohort")  # doctest: +SKIP
    >>> [s["id"] for s in catalog.listing()]  # doctest: +SKIP
    ['CMU-1-Small-Region', 'CMU-1-Small-Region-dicom']
    >>> with catalog.deepzoom("CMU-1-Small-Region") as dz:  # doctest: +SKIP
    ...     dz.get_tile(dz.level_count - 1, (0, 0)).size
    (256, 256)
    """

    def __init__(self, root: str | Path, *, max_open: int = 8) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SlideError(f"{root}: not a folder")
        self.max_open = max(1, max_open)
        self.cohort = (self.root / "cohort.csv").is_file()
        if self.cohort:
            entries = self._cohort_entries()
        elif (self.root / "slide.json").is_file():
            entries = [self._single_entry()]
        else:
            entries = self._folder_entries()
        self.entries: dict[str, Entry] = {e.id: e for e in entries}
        self._lock = threading.Lock()
        self._open: OrderedDict[str, list[Any]] = OrderedDict()  # id -> [reader, dz, users]
        self._info: dict[str, dict[str, Any]] = {}
        self._tiles: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._results: Path | None = None

    def trust_results(self, folder: Path) -> None:
        """Let result files be read from folders directly inside ``folder`` too (the results
        folder of analyses started from the viewer)."""
        self._results = Path(os.path.realpath(folder))

    def attach(self, slide_id: str, folder: Path, status: str) -> None:
        """Read ``slide_id``'s results from ``folder`` (directly inside the trusted results
        folder) from now on, with the cohort ``status`` of its analysis."""
        entry = self.get(slide_id)
        real = Path(os.path.realpath(folder))
        if self._results is None or real.parent != self._results:
            raise SlideError(f"{folder}: not a folder of the results folder")
        entry.output, entry.status = real, status

    # -- what is there -------------------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.root or self.root in real.parents

    def _readable(self, path: Path) -> bool:
        """A result file inside ``root`` or inside the trusted results folder."""
        if self._inside(path):
            return True
        real = Path(os.path.realpath(path))
        return self._results is not None and self._results in real.parents

    def _folder_entries(self) -> list[Entry]:
        from breastpath.slide.sources import SlideSource, search_folder, slide_name, unique_names

        found = [p for p in search_folder(self.root) if self._inside(p)]
        sources = unique_names([SlideSource(p, slide_name(p)) for p in found])
        return [
            Entry(s.name, p)
            for s, p in zip(sources, found, strict=True)
            if SLIDE_ID.fullmatch(s.name)
        ]

    def _cohort_entries(self) -> list[Entry]:
        try:
            with open(self.root / "cohort.csv", newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SlideError(f"{self.root / 'cohort.csv'}: cannot be read ({exc})") from None
        entries: list[Entry] = []
        for row in rows:
            name, output = row.get("slide") or "", row.get("output") or ""
            if not SLIDE_ID.fullmatch(name) or name in {e.id for e in entries}:
                continue
            folder = self.root / output
            ok = bool(SLIDE_ID.fullmatch(output)) and self._inside(folder) and folder.is_dir()
            entry = Entry(name, self._find(row.get("path") or ""), folder if ok else None)
            entry.status = row.get("status") or "pending"
            if entry.opener is None:
                entry.missing = f"slide not found: {row.get('path')}"
            entries.append(entry)
        return entries

    def _single_entry(self) -> Entry:
        """The output folder of one slide (``breastpath slide one.svs --out root``)."""
        from breastpath.slide.sources import slide_name

        try:
            body = json.loads((self.root / "slide.json").read_text(encoding="utf-8"))
            text = str(body["slide"]["path"])
        except (OSError, ValueError, KeyError, TypeError):
            text = ""
        name = slide_name(Path(text)) if text else self.root.name
        entry = Entry(name if SLIDE_ID.fullmatch(name) else "slide", self._find(text), self.root)
        entry.status = "scored"
        if entry.opener is None:
            entry.missing = f"slide not found: {text or '(slide.json names none)'}"
        return entry

    def _find(self, text: str) -> Path | None:
        if not text:
            return None
        path = Path(text)
        bases = [Path.cwd(), self.root, self.root.parent]
        candidates = [path] if path.is_absolute() else [base / path for base in bases]
        return next((c for c in candidates if c.exists()), None)

    def get(self, slide_id: str) -> Entry:
        entry = self.entries.get(slide_id) if SLIDE_ID.fullmatch(slide_id) else None
        if entry is None:
            raise UnknownSlide(f"no slide {slide_id[:80]!r}")
        return entry

    # -- results ---------------------------------------------------------------------------
    def result_file(self, slide_id: str, name: str) -> Path:
        """One of :data:`RESULT_FILES` of an analysed slide, or :class:`UnknownSlide`."""
        entry = self.get(slide_id)
        path = entry.output / name if entry.output is not None else None
        if (
            name not in RESULT_FILES
            or path is None
            or not path.is_file()
            or not self._readable(path)
        ):
            raise UnknownSlide(f"slide {slide_id!r} has no {name}")
        return path

    def summary(self, slide_id: str) -> dict[str, Any] | None:
        """The slide's ``slide.json``, or None when it has none (or it cannot be read)."""
        try:
            path = self.result_file(slide_id, "slide.json")
            body = json.loads(path.read_text(encoding="utf-8"))
        except (UnknownSlide, OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def tiles(self, slide_id: str) -> list[dict[str, Any]]:
        """The tile records of ``tiles.csv`` (numbers parsed; ``probability`` None when not
        scored, ``skipped`` None when scored); cached while the file is unchanged."""
        path = self.result_file(slide_id, "tiles.csv")
        stamp = path.stat().st_mtime
        cached = self._tiles.get(slide_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        records = []
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    record: dict[str, Any] = {
                        k: int(row[k]) for k in ("row", "col", "x", "y", "size")
                    }
                except (KeyError, TypeError, ValueError):
                    continue
                record["probability"] = _number(row.get("probability") or "")
                record["tissue"] = _number(row.get("tissue") or "")
                record["skipped"] = row.get("skipped") or None
                records.append(record)
        self._tiles[slide_id] = (stamp, records)
        return records

    # -- the slide itself ------------------------------------------------------------------
    @contextlib.contextmanager
    def reader(self, slide_id: str) -> Iterator[tuple[SlideReader, DeepZoomSource]]:
        """The open slide and its Deep Zoom tiles, held open while the block runs."""
        handle = self._acquire(self.get(slide_id))
        try:
            yield handle[0], handle[1]
        finally:
            with self._lock:
                handle[2] -= 1
                self._evict()

    @contextlib.contextmanager
    def deepzoom(self, slide_id: str) -> Iterator[DeepZoomSource]:
        with self.reader(slide_id) as (_, dz):
            yield dz

    def _acquire(self, entry: Entry) -> list[Any]:
        with self._lock:
            handle = self._open.get(entry.id)
            if handle is None:
                if entry.opener is None:
                    raise SlideError(entry.missing or f"slide {entry.id!r} cannot be found")
                reader = open_slide(entry.opener)  # one open at a time: opens are rare
                handle = [reader, open_deepzoom(reader), 0]
                self._open[entry.id] = handle
            self._open.move_to_end(entry.id)
            handle[2] += 1
            return handle

    def _evict(self) -> None:
        idle = [key for key, handle in self._open.items() if handle[2] == 0]
        while len(self._open) > self.max_open and idle:
            key = idle.pop(0)
            self._open.pop(key)[0].close()

    def info(self, slide_id: str) -> dict[str, Any]:
        """Name, format, size, mpp and levels of a slide (opened once, then remembered), or
        ``error`` when it cannot be opened."""
        entry = self.get(slide_id)
        cached = self._info.get(slide_id)
        if cached is not None:
            return cached
        try:
            with self.reader(slide_id) as (reader, dz):
                width, height = reader.dimensions
                info: dict[str, Any] = {
                    "format": _format(reader),
                    "backend": reader.backend,
                    "width": width,
                    "height": height,
                    "mpp": reader.mpp,
                    "levels": len(reader.levels),
                    "dzi_levels": dz.level_count,
                    "error": None,
                }
        except SlideError as exc:
            info = {"format": None, "backend": None, "width": None, "height": None}
            info.update(mpp=None, levels=None, dzi_levels=None, error=str(exc))
        if entry.opener is not None:
            info["name"] = entry.opener.name
        else:
            info["name"] = entry.id
        self._info[slide_id] = info
        return info

    def describe(self, slide_id: str) -> dict[str, Any]:
        """One slide as the list shows it: :meth:`info`, its analysis status and verdict."""
        entry = self.get(slide_id)
        summary = self.summary(slide_id) or {}
        verdict = summary.get("verdict") if isinstance(summary.get("verdict"), dict) else None
        return {
            "id": entry.id,
            **self.info(slide_id),
            "status": entry.status if entry.output is not None or self.cohort else NOT_ANALYSED,
            "analysed": verdict is not None,
            "verdict": verdict,
            "notes": summary.get("notes") or [],
            "files": [n for n in RESULT_FILES if entry.output and (entry.output / n).is_file()],
        }

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(slide_id) for slide_id in self.entries]

    def close(self) -> None:
        with self._lock:
            for handle in self._open.values():
                handle[0].close()
            self._open.clear()
