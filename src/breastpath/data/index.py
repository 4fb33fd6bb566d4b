"""Scan an image source into an index table: one record per image.

Layouts read
------------
``idc``
    Kaggle IDC: ``<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``, as folders or straight
    from the Kaggle zip (which holds each patch twice; each is counted once).
``breakhis``
    Any tree of files named ``SOB_<B|M>_<TYPE>-<YY>-<SLIDE>-<MAG>-<SEQ>.png`` (the official
    ``BreaKHis_v1`` tree included). Patient, class, subtype and magnification come from the name.
``breakhis-tiles``
    ``<benign|malignant>/<subtype>/<slide>/<images>``; patient = numeric root of the slide id.
``folder``
    An ImageFolder tree, ``<class>/<images>`` or ``<class>/<patient>/<images>``. With no patient
    level each image is its own group.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from breastpath.choices import InputFit
from breastpath.errors import DatasetLayoutError
from breastpath.imaging import is_image_file

IDC_NAME = re.compile(r"^(?P<patient>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<cls>[01])\.png$")
BREAKHIS_NAME = re.compile(
    r"^SOB_(?P<cls>[BM])_(?P<type>[A-Z]+)-(?P<year>\d+)-(?P<slide>[0-9A-Za-z]+)"
    r"-(?P<mag>\d+)-(?P<seq>\d+)\.png$",
    re.IGNORECASE,
)
MAGNIFICATION_IN_NAME = re.compile(r"(?<![0-9])(40|100|200|400)X(?![0-9a-z])", re.IGNORECASE)
PATIENT_ROOT = re.compile(r"^(\d+)")

BREAKHIS_SUBTYPES = {
    "A": "adenosis",
    "F": "fibroadenoma",
    "PT": "phyllodes_tumor",
    "TA": "tubular_adenoma",
    "DC": "ductal_carcinoma",
    "LC": "lobular_carcinoma",
    "MC": "mucinous_carcinoma",
    "PC": "papillary_carcinoma",
}
#: The eight BreakHis subtypes in a fixed order: four benign, then four malignant.
SUBTYPE_NAMES = tuple(BREAKHIS_SUBTYPES.values())
BENIGN_SUBTYPES = frozenset(SUBTYPE_NAMES[:4])
IDC_CLASS_NAMES = ("non-IDC", "IDC")
BREAKHIS_CLASS_NAMES = ("benign", "malignant")
POSITIVE_CLASS_WORDS = ("malignant", "idc", "cancer", "tumor", "tumour", "positive", "1")

DATASETS = ("auto", "idc", "breakhis", "breakhis-tiles", "folder")
#: How each dataset's images were made from larger fields, where that is not a crop: every
#: ``breakhis-tiles`` tile is a whole 700x460 BreakHis field resized to 224x224 (aspect not kept:
#: their horizontal/vertical gradient ratio is 1.42 against 1.0 in the original fields and 1.37
#: after that resize). A model trained on them must see a new field the same way.
_SOURCE_FITS: dict[str, InputFit] = {"breakhis-tiles": "stretch"}
TASKS = ("binary", "subtype")
MAGNIFICATIONS = ("40", "100", "200", "400", "all")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source.

    ``path`` is a file path, or ``<archive.zip>::<member>`` for an image inside a zip.
    """

    path: str
    patient: str
    label: int
    label_name: str
    subtype: str = ""
    magnification: str = ""
    x: int = -1
    y: int = -1


@dataclass
class SourceIndex:
    """The images of one or more sources, with their class names and layout."""

    records: list[ImageRecord]
    class_names: tuple[str, ...]
    dataset: str
    task: str
    notes: list[str] = field(default_factory=list)
    #: folders and files that could not be read while scanning: ``{"path", "reason"}``
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(r.label for r in self.records)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}


@dataclass(frozen=True)
class _Raw:
    """A record before class indices are assigned."""

    path: str
    patient: str
    class_name: str
    subtype: str = ""
    magnification: str = ""
    x: int = -1
    y: int = -1


def scan_source(
    source: str | Path,
    *,
    dataset: str = "auto",
    task: str = "binary",
    magnification: str = "all",
) -> SourceIndex:
    """Scan one folder or zip archive into a :class:`SourceIndex`.

    Examples
    --------
    >>> index = scan_source("data/idc")  # doctest: +SKIP
    >>> index.dataset, index.class_names  # doctest: +SKIP
    ('idc', ('non-IDC', 'IDC'))
    """
    return scan_sources([source], dataset=dataset, task=task, magnification=magnification)


def scan_sources(
    sources: list[str | Path] | tuple[str | Path, ...],
    *,
    dataset: str = "auto",
    task: str = "binary",
    magnification: str = "all",
) -> SourceIndex:
    """Scan several sources of compatible layouts into one :class:`SourceIndex`."""
    _check_choice("dataset", dataset, DATASETS)
    _check_choice("task", task, TASKS)
    magnification = str(magnification).upper().removesuffix("X").lower()
    _check_choice("magnification", magnification, MAGNIFICATIONS)
    if not sources:
        raise DatasetLayoutError("no source given")
    raws: list[_Raw] = []
    kinds: list[str] = []
    notes: list[str] = []
    skipped: list[dict[str, str]] = []
    for source in sources:
        kind, found = _scan_one(Path(source), dataset=dataset, skipped=skipped)
        kinds.append(kind)
        if kind == "folder" and found and all(r.patient == r.path for r in found):
            notes.append(
                f"{source}: no patient level in the folder tree; each image is its own group"
            )
        raws.extend(found)
    if skipped:
        notes.append(
            f"{len(skipped)} folder(s) or file(s) could not be read while scanning and were "
            "skipped (listed in 'skipped')"
        )
    if magnification != "all":
        before = len(raws)
        raws = [r for r in raws if r.magnification == magnification]
        notes.append(f"kept {len(raws)} of {before} images at {magnification}X")
        if not raws:
            raise DatasetLayoutError(f"no image at magnification {magnification}X")
    kind = kinds[0] if len(set(kinds)) == 1 else "+".join(sorted(set(kinds)))
    class_names, records = _assign_labels(raws, kinds=set(kinds), task=task)
    return SourceIndex(
        records=records,
        class_names=class_names,
        dataset=kind,
        task=task,
        notes=notes,
        skipped=skipped,
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DatasetLayoutError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def list_files(root: Path, *, skipped: list[dict[str, str]]) -> list[Path]:
    """Files under ``root`` (recursive, sorted, hidden names left out); folders and files that
    cannot be read are added to ``skipped`` with the reason, not dropped in silence.

    Examples
    --------
    >>> skipped = []
    >>> list_files(Path("no/such/folder"), skipped=skipped), skipped[0]["path"]
    ([], 'no/such/folder')
    """

    def unreadable(error: OSError) -> None:
        reason = error.strerror or str(error)
        skipped.append(
            {
                "path": str(error.filename),
                "reason": f"{error.filename}: folder not readable ({reason}); "
                "its images were not scanned",
            }
        )

    files: list[Path] = []
    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs.sort()
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if is_image_file(name) and not os.access(path, os.R_OK):
                skipped.append({"path": str(path), "reason": f"{path}: file not readable"})
                continue
            files.append(path)
    return sorted(files)


def _scan_one(
    source: Path, *, dataset: str, skipped: list[dict[str, str]]
) -> tuple[str, list[_Raw]]:
    if not source.exists():
        raise DatasetLayoutError(f"{source}: no such file or folder")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise DatasetLayoutError(f"{source}: not a folder or a zip archive")
        return _scan_zip(source, dataset=dataset)
    files = list_files(source, skipped=skipped)
    images = [p for p in files if is_image_file(p.name)]
    if not images:
        raise DatasetLayoutError(f"{source}: holds no image files")
    kind = dataset if dataset != "auto" else _detect([p.name for p in images], source, images)
    if kind == "idc":
        return kind, _idc_records([(str(p), p.name) for p in images], source)
    if kind == "breakhis":
        return kind, _breakhis_records(images, source)
    if kind == "breakhis-tiles":
        return kind, _tile_records(images, source)
    return kind, _folder_records(images, source)


def _detect(names: list[str], root: Path, images: list[Path]) -> str:
    if sum(bool(IDC_NAME.match(n)) for n in names) > len(names) // 2:
        return "idc"
    if sum(bool(BREAKHIS_NAME.match(n)) for n in names) > len(names) // 2:
        return "breakhis"
    depths = {len(p.relative_to(root).parts) for p in images}
    top = {p.relative_to(root).parts[0].lower() for p in images}
    if depths == {4} and top <= set(BREAKHIS_CLASS_NAMES):
        return "breakhis-tiles"
    if depths <= {2, 3}:
        return "folder"
    raise DatasetLayoutError(
        f"{root}: unknown layout; expected IDC patches, BreakHis images, "
        "<benign|malignant>/<subtype>/<slide>/<images>, or <class>/[<patient>/]<images>"
    )


def _idc_records(entries: list[tuple[str, str]], root: Path | str) -> list[_Raw]:
    records: dict[str, _Raw] = {}
    for path, name in entries:
        match = IDC_NAME.match(name)
        if match is None:
            continue
        if name in records:  # the Kaggle zip holds every patch twice
            continue
        records[name] = _Raw(
            path=path,
            patient=match["patient"],
            class_name=IDC_CLASS_NAMES[int(match["cls"])],
            x=int(match["x"]),
            y=int(match["y"]),
        )
    if not records:
        raise DatasetLayoutError(f"{root}: no file named <patient>_idx5_x<X>_y<Y>_class<C>.png")
    return sorted(records.values(), key=lambda r: (r.patient, r.path))


def _scan_zip(source: Path, *, dataset: str) -> tuple[str, list[_Raw]]:
    try:
        with zipfile.ZipFile(source) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetLayoutError(f"{source}: unreadable zip archive ({exc})") from None
    entries = [(f"{source}::{n}", n.rsplit("/", 1)[-1]) for n in names if is_image_file(n)]
    if not entries:
        raise DatasetLayoutError(f"{source}: the archive holds no image files")
    if dataset not in ("auto", "idc"):
        raise DatasetLayoutError(f"{source}: only IDC archives can be read straight from a zip")
    return "idc", _idc_records(sorted(entries), source)


def _breakhis_records(images: list[Path], root: Path) -> list[_Raw]:
    records = []
    for path in images:
        match = BREAKHIS_NAME.match(path.name)
        if match is None:
            continue
        code = match["type"].upper()
        if code not in BREAKHIS_SUBTYPES:
            raise DatasetLayoutError(f"{path}: unknown BreakHis subtype {code!r}")
        subtype = BREAKHIS_SUBTYPES[code]
        records.append(
            _Raw(
                path=str(path),
                patient=_patient_root(match["slide"]),
                class_name="benign" if match["cls"].upper() == "B" else "malignant",
                subtype=subtype,
                magnification=match["mag"],
            )
        )
    if not records:
        raise DatasetLayoutError(f"{root}: no file named SOB_<B|M>_<TYPE>-<YY>-<SLIDE>-<MAG>-...")
    return records


def _tile_records(images: list[Path], root: Path) -> list[_Raw]:
    records = []
    for path in images:
        class_dir, subtype_dir, slide, _ = path.relative_to(root).parts
        subtype = _canonical_subtype(subtype_dir)
        mag = MAGNIFICATION_IN_NAME.search(path.name)
        records.append(
            _Raw(
                path=str(path),
                patient=_patient_root(slide),
                class_name=class_dir.lower(),
                subtype=subtype,
                magnification=mag.group(1) if mag else "",
            )
        )
    return records


def _folder_records(images: list[Path], root: Path) -> list[_Raw]:
    records = []
    for path in images:
        parts = path.relative_to(root).parts
        if len(parts) not in (2, 3):
            raise DatasetLayoutError(
                f"{path}: expected <class>/<image> or <class>/<patient>/<image> under {root}"
            )
        patient = parts[1] if len(parts) == 3 else str(path)
        records.append(_Raw(path=str(path), patient=patient, class_name=parts[0]))
    return records


def _patient_root(slide: str) -> str:
    match = PATIENT_ROOT.match(slide)
    return match.group(1) if match else slide


def _canonical_subtype(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key.upper() in BREAKHIS_SUBTYPES:
        return BREAKHIS_SUBTYPES[key.upper()]
    if key in SUBTYPE_NAMES:
        return key
    raise DatasetLayoutError(f"unknown BreakHis subtype folder {name!r}")


def _assign_labels(
    raws: list[_Raw], *, kinds: set[str], task: str
) -> tuple[tuple[str, ...], list[ImageRecord]]:
    if task == "subtype":
        if not kinds <= {"breakhis", "breakhis-tiles"}:
            raise DatasetLayoutError("the subtype task needs BreakHis images")
        present = {r.subtype for r in raws}
        class_names = tuple(s for s in SUBTYPE_NAMES if s in present)
        key = "subtype"
    else:
        key = "class_name"
        if kinds == {"idc"}:
            class_names = IDC_CLASS_NAMES
        elif kinds <= {"breakhis", "breakhis-tiles"}:
            class_names = BREAKHIS_CLASS_NAMES
        else:
            class_names = order_class_names({r.class_name for r in raws})
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = {getattr(r, key) for r in raws} - set(lookup)
    if unknown:
        raise DatasetLayoutError(
            f"labels {sorted(unknown)} do not match the classes {list(class_names)}"
        )
    if len(class_names) < 2:
        raise DatasetLayoutError(f"need at least two classes, found {list(class_names)}")
    records = [
        ImageRecord(
            path=r.path,
            patient=r.patient,
            label=lookup[getattr(r, key)],
            label_name=getattr(r, key),
            subtype=r.subtype,
            magnification=r.magnification,
            x=r.x,
            y=r.y,
        )
        for r in raws
    ]
    return class_names, records


def order_class_names(names: set[str]) -> tuple[str, ...]:
    """Sort class names, putting a recognisable positive (cancer) class last.

    With two classes the positive class is index 1, which is what binary metrics score.
    """
    ordered = sorted(names)
    if len(ordered) == 2:
        for word in POSITIVE_CLASS_WORDS:
            hits = [n for n in ordered if n.lower() == word]
            if hits:
                ordered.remove(hits[0])
                ordered.append(hits[0])
                break
    return tuple(ordered)


def input_fit_of(dataset: str) -> InputFit:
    """How a model trained on ``dataset`` must bring a larger image to its input (the
    ``input_fit`` of its checkpoints; see :data:`breastpath.choices.INPUT_FITS`).

    Examples
    --------
    >>> input_fit_of("breakhis-tiles"), input_fit_of("idc")
    ('stretch', 'crop')
    """
    return _SOURCE_FITS.get(dataset, "crop")
