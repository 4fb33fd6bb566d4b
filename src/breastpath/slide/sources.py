"""Which slides a cohort holds: files, folders, globs and CSV manifests -> :class:`SlideSource`.

A cohort input is any mix of

- a slide file (any name: the reader decides what it can open);
- the ``.dcm`` files of DICOM series (files in one folder are one slide);
- a folder: a DICOM series folder (it holds ``.dcm`` files) is one slide; any other folder is
  searched recursively, following symbolic links (each real folder once), for files with a
  known slide suffix (:data:`SLIDE_SUFFIXES`) and for DICOM series folders;
- a glob pattern (``slides/**/*.svs``; quote it so the shell leaves it alone);
- a CSV manifest (``*.csv``) with a ``path`` column and optional ``patient``, ``label`` and
  ``mpp`` columns; relative paths are taken from the manifest's folder, and a path that leads
  outside that folder is refused (:func:`read_manifest`).

Each slide gets a folder name for its outputs (:attr:`SlideSource.name`): the file name without
its slide suffix, or the DICOM folder's name; names that two slides share get a short hash of
their path (``a-1f3e9c0b``), so output folders never collide. The same inputs give the same
names and order on every rank of a ``torchrun`` job.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from breastpath.errors import SlideError
from breastpath.slide.reader import VENDOR_SUFFIXES

#: File suffixes searched for in folders (a file named on the command line may have any suffix).
SLIDE_SUFFIXES = (*VENDOR_SUFFIXES, ".tif", ".tiff", ".qptiff")
#: Manifest columns: ``path`` is required.
MANIFEST_COLUMNS = ("path", "patient", "label", "mpp")
#: Manifest labels read as positive (1) or negative (0), besides ``1`` and ``0``.
LABEL_WORDS = {
    "1": 1, "positive": 1, "true": 1, "yes": 1, "malignant": 1, "idc": 1, "cancer": 1,
    "0": 0, "negative": 0, "false": 0, "no": 0, "benign": 0, "non-idc": 0, "normal": 0,
}  # fmt: skip
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SlideSource:
    """One slide of a cohort: where it is, its output folder name and its manifest fields."""

    #: A slide file, a DICOM folder, or the ``.dcm`` files of one series.
    path: Path | tuple[Path, ...]
    name: str
    patient: str | None = None
    label: int | None = None
    #: Level-0 microns per pixel from the manifest (overrides the file's).
    mpp: float | None = None

    @property
    def key(self) -> str:
        """The slide's identity: its absolute path (or paths), as written to its done marker."""
        paths = self.path if isinstance(self.path, tuple) else (self.path,)
        return os.pathsep.join(str(Path(os.path.abspath(p))) for p in paths)

    @property
    def display(self) -> str:
        """The path as the user gave it (the folder for a list of ``.dcm`` files)."""
        return str(self.path[0].parent if isinstance(self.path, tuple) else self.path)

    @property
    def opener(self) -> Path | list[Path]:
        """What :func:`~breastpath.slide.reader.open_slide` takes."""
        return list(self.path) if isinstance(self.path, tuple) else self.path


def is_manifest(text: str) -> bool:
    """Whether a command-line input names a CSV manifest."""
    return text.lower().endswith(".csv")


def is_glob(text: str) -> bool:
    """Whether a command-line input is a glob pattern (``*``, ``?`` or ``[``) rather than a
    path that exists."""
    return bool(_GLOB_CHARS.search(text)) and not Path(text).exists()


def is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder`` holds ``.dcm`` files directly (a DICOM-WSI series folder)."""
    try:
        return any(p.suffix.lower() == ".dcm" and p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def slide_name(path: Path) -> str:
    """The output folder name of a slide: its file name without the slide suffix.

    Examples
    --------
    >>> slide_name(Path("a/CMU-1.svs")), slide_name(Path("b/x y.ome.tif")), slide_name(Path("d/"))
    ('CMU-1', 'x_y', 'd')
    """
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", *SLIDE_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return _UNSAFE.sub("_", name).strip("._") or "slide"


def discover(inputs: Sequence[str | Path]) -> list[SlideSource]:
    """The slides of a cohort, in input order (folders and globs sorted), each once.

    A path that does not exist is kept (its row will say so); a manifest that cannot be used
    raises :class:`SlideError`.

    Examples
    --------
    >>> [s.name for s in discover(["slides/", "extra.svs"])]  # doctest: +SKIP
    ['a', 'b', 'extra']
    """
    found: list[SlideSource] = []
    loose_dicom: dict[Path, list[Path]] = {}
    for item in inputs:
        text = str(item)
        path = Path(text)
        if is_manifest(text) and path.is_file():
            found += read_manifest(path)
        elif is_glob(text):
            for match in sorted(glob.glob(text, recursive=True)):
                found += _expand(Path(match), loose_dicom)
        else:
            found += _expand(path, loose_dicom)
    for folder, files in loose_dicom.items():
        found.append(SlideSource(tuple(sorted(files)), slide_name(folder)))
    return unique_names(_dedupe(found))


def _expand(path: Path, loose_dicom: dict[Path, list[Path]]) -> list[SlideSource]:
    if path.is_file() and path.suffix.lower() == ".dcm":
        loose_dicom.setdefault(path.parent, []).append(path)  # one series per folder
        return []
    if path.is_dir() and not is_dicom_folder(path):
        return [SlideSource(p, slide_name(p)) for p in search_folder(path)]
    return [SlideSource(path, slide_name(path))]


def search_folder(root: Path) -> list[Path]:
    """Slide files (by :data:`SLIDE_SUFFIXES`) and DICOM series folders under ``root``,
    recursively, following symbolic links; each real folder is searched once."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        here = Path(folder)
        if here != root and any(f.lower().endswith(".dcm") for f in files):
            found.append(here)  # a DICOM series: one slide, not searched further
            dirs[:] = []
            continue
        dirs.sort()
        found += [here / f for f in sorted(files) if f.lower().endswith(SLIDE_SUFFIXES)]
    return found


def _dedupe(sources: Iterable[SlideSource]) -> list[SlideSource]:
    """Each slide once (the first mention), by its resolved path."""
    out, seen = [], set()
    for source in sources:
        paths = source.path if isinstance(source.path, tuple) else (source.path,)
        real = tuple(os.path.realpath(p) for p in paths)
        if real not in seen:
            seen.add(real)
            out.append(source)
    return out


def unique_names(sources: Sequence[SlideSource]) -> list[SlideSource]:
    """Give every slide whose name another slide shares (ignoring case) a suffix: the first 8
    hex digits of the SHA-1 of its :attr:`~SlideSource.key`."""
    counts: dict[str, int] = {}
    for source in sources:
        counts[source.name.lower()] = counts.get(source.name.lower(), 0) + 1
    out = []
    for source in sources:
        if counts[source.name.lower()] > 1:
            digest = hashlib.sha1(source.key.encode("utf-8")).hexdigest()[:8]
            source = replace(source, name=f"{source.name}-{digest}")
        out.append(source)
    return out


def read_manifest(path: str | Path) -> list[SlideSource]:
    """The slides of a CSV manifest (columns :data:`MANIFEST_COLUMNS`; ``path`` required).

    Relative paths are taken from the manifest's folder. A path that leads outside that folder
    (``..``, or an absolute path elsewhere; checked on the path as written, so symbolic links
    inside the folder may point anywhere), a missing ``path`` column, an empty path, a label
    other than those in :data:`LABEL_WORDS` or an mpp that is not a positive number raise
    :class:`SlideError` naming the row.

    Examples
    --------
    >>> read_manifest("cohort.csv")[0]  # doctest: +SKIP
    SlideSource(path=PosixPath('/data/cohort/a.svs'), name='a', patient='P1', label=1, mpp=None)
    """
    manifest = Path(path)
    root = Path(os.path.abspath(manifest.parent))
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in columns:
                found = ", ".join(columns) or "none"
                raise SlideError(
                    f"{manifest}: a manifest needs a 'path' column (optional: patient, label, "
                    f"mpp); found columns: {found}"
                )
            rows = [{(k or "").strip().lower(): v for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise SlideError(f"{manifest}: not a UTF-8 CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise SlideError(f"{manifest}: not a CSV file ({exc})") from None
    return [_manifest_row(manifest, root, i + 2, row) for i, row in enumerate(rows)]


def _manifest_row(manifest: Path, root: Path, line: int, row: dict) -> SlideSource:
    where = f"{manifest}, line {line}"
    text = (row.get("path") or "").strip()
    if not text:
        raise SlideError(f"{where}: empty path")
    full = Path(os.path.normpath(root / text))
    if full != root and root not in full.parents:
        raise SlideError(f"{where}: {text} is outside the manifest's folder {root}")
    patient = (row.get("patient") or "").strip() or None
    return SlideSource(
        full,
        slide_name(full),
        patient=patient,
        label=_label(row.get("label"), where),
        mpp=_mpp(row.get("mpp"), where),
    )


def _label(value: str | None, where: str) -> int | None:
    text = (value or "").strip().lower()
    if not text:
        return None
    if text not in LABEL_WORDS:
        raise SlideError(f"{where}: label {value!r} is not 1/0 (or positive/negative, ...)")
    return LABEL_WORDS[text]


def _mpp(value: str | None, where: str) -> float | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        mpp = float(text)
    except ValueError:
        mpp = math.nan
    if not (math.isfinite(mpp) and mpp > 0):
        raise SlideError(f"{where}: mpp {text!r} is not a positive number of microns per pixel")
    return mpp
