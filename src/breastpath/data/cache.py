"""Decode a source once into a packed uint8 array (a raw memmap) plus an index table.

A prepared folder holds::

    images.u8      N x H x W x 3 uint8, C order, no header (shape in meta.json)
    index.csv      one row per image: row, path, patient, label, ..., split
    splits.csv     path, patient, label, split
    meta.json      format, shape, class names, split seed and fractions, per-channel mean/std,
                   and how larger images were fitted (``larger_image_fit``)
    summary.json   counts per split, skipped files, notes

``meta.json`` is written last: a folder without it is an interrupted ``prepare`` and is refused.
Preparing again into the same folder (after a crash, or to refresh it) first removes
``meta.json``, then rewrites every file, and leaves what a clean run into an empty folder leaves.
Epochs read ``images.u8`` through a memmap and never decode an image file.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.choices import InputFit
from breastpath.data.index import SourceIndex
from breastpath.data.transforms import fit_to_size
from breastpath.errors import CacheError, InvalidImageError
from breastpath.io import read_csv, read_json, remove_stale_temps, write_csv, write_json
from breastpath.sandbox import default_sandbox

FORMAT = "breastpath-cache/1"
IMAGES_FILE = "images.u8"
#: the index's ``fit`` action of a larger image, by the input fit that made it
_FIT_OF_ACTION: dict[str, InputFit] = {"resized": "crop", "stretched": "stretch"}
INDEX_FIELDS = [
    "row",
    "path",
    "patient",
    "label",
    "label_name",
    "subtype",
    "magnification",
    "x",
    "y",
    "split",
    "height",
    "width",
    "fit",
]


@dataclass
class DecodeResult:
    """What :func:`decode_into` did: rows kept, files skipped and why, and fitting actions."""

    kept: list[int] = field(default_factory=list)
    original_sizes: list[tuple[int, int]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class _ZipReaders(threading.local):
    """One open ZipFile per thread and archive."""

    def __init__(self) -> None:
        self.archives: dict[str, zipfile.ZipFile] = {}

    def read(self, archive: str, member: str) -> bytes:
        handle = self.archives.get(archive)
        if handle is None:
            handle = self.archives[archive] = zipfile.ZipFile(archive)
        return handle.read(member)


def read_image(path: str, zips: _ZipReaders | None = None) -> np.ndarray:
    """Decode an image given as a file path or as ``archive.zip::member``, in the decode
    sandbox (:func:`~breastpath.sandbox.default_sandbox`): any failure is an
    :class:`~breastpath.errors.InvalidImageError`."""
    if "::" in path:
        archive, member = path.split("::", 1)
        try:
            data = (zips or _ZipReaders()).read(archive, member)
        except (KeyError, zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError) as exc:
            raise InvalidImageError(f"{path}: cannot read from archive ({exc})") from None
        return default_sandbox().decode(data).pixels
    return default_sandbox().decode(path).pixels


def decode_into(
    paths: list[str],
    images: np.ndarray,
    *,
    size: tuple[int, int],
    fit: InputFit = "crop",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> DecodeResult:
    """Decode ``paths`` into consecutive rows of ``images``; unreadable files are skipped.

    Rows are packed: the i-th readable file goes to row i, in input order. A larger image is
    brought to ``size`` by ``fit`` (:func:`~breastpath.data.transforms.fit_to_size`).
    """
    zips = _ZipReaders()

    def load(path: str) -> tuple[np.ndarray | None, tuple[int, int], str]:
        try:
            array = read_image(path, zips)
        except InvalidImageError as exc:
            return None, (0, 0), str(exc)
        fitted, action = fit_to_size(array, size, fit=fit)
        return fitted, array.shape[:2], action

    result = DecodeResult()
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for position, (path, (array, shape, action)) in enumerate(
            zip(paths, pool.map(load, paths, chunksize=64), strict=True)
        ):
            if array is None:
                result.skipped.append({"path": path, "reason": action})
            else:
                images[len(result.kept)] = array
                result.kept.append(position)
                result.original_sizes.append(shape)
                result.actions.append(action)
            if progress is not None:
                progress(1)
    return result


def larger_image_fit(rows: Iterable[Mapping[str, Any]], size: tuple[int, int]) -> InputFit | None:
    """How the larger images of another shape in a cache's ``rows`` (``index.csv``) were
    brought to ``size``: ``"crop"`` or ``"stretch"``; ``None`` when none needed the choice
    (every image had the size, was smaller, or had the cache's aspect, where both fits give
    the same pixels). A model scoring the cache must see its images the same way.

    Examples
    --------
    >>> field = {"fit": "resized", "height": 460, "width": 700}
    >>> larger_image_fit([field], (224, 224)), larger_image_fit([], (224, 224))
    ('crop', None)
    >>> larger_image_fit([{"fit": "resized", "height": 448, "width": 448}], (224, 224)) is None
    True
    """
    target_h, target_w = size
    for row in rows:
        fit = _FIT_OF_ACTION.get(str(row["fit"]))
        if fit is not None and int(row["height"]) * target_w != int(row["width"]) * target_h:
            return fit
    return None


def read_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``images[rows]`` in the order of ``rows``, read from the memmap in ascending row order
    (sequential disk access), into a new in-memory array."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    block = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
    block[order] = images[rows[order]]
    return block


def channel_stats(images: np.ndarray, rows: np.ndarray, *, chunk: int = 4096) -> tuple[list, list]:
    """Per-channel mean and std (in [0, 1]) of ``images[rows]``, computed in chunks."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    rows = np.sort(rows)
    for start in range(0, len(rows), chunk):
        block = images[rows[start : start + chunk]].reshape(-1, 3).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += block.shape[0]
    if count == 0:
        return [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def write_cache(
    out_dir: str | Path,
    index: SourceIndex,
    *,
    size: tuple[int, int],
    assign_splits: Callable[[list[str], list[int]], dict[str, str]],
    split_info: dict,
    fit: InputFit = "crop",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    process: Callable[[np.ndarray, np.ndarray], dict] | None = None,
) -> dict:
    """Decode ``index`` into ``out_dir`` and write the index, splits, meta and summary.

    ``assign_splits(patients, labels)`` maps patient ids to split names; it sees only the images
    that decoded. ``process(images, split_of)``, when given, may rewrite the decoded images in
    place (a writable ``(N, H, W, 3)`` memmap; ``split_of`` is each row's split name) before the
    cache is complete, e.g. stain normalization; the dict it returns is added to ``meta.json``.
    ``fit`` brings larger images to ``size``; ``meta.json`` records it as ``larger_image_fit``
    when an image needed it (:func:`larger_image_fit`). Returns the summary dict (also
    written to ``summary.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("meta.json", "summary.json"):  # first: from here on the folder is refused
        (out / stale).unlink(missing_ok=True)
    remove_stale_temps(out)  # left by a `prepare` that was killed while writing a file
    height, width = size
    partial = out / f"{IMAGES_FILE}.partial"
    n = len(index.records)
    mm = np.memmap(partial, dtype=np.uint8, mode="w+", shape=(max(n, 1), height, width, 3))
    paths = [r.path for r in index.records]
    result = decode_into(paths, mm, size=size, fit=fit, workers=workers, progress=progress)
    result.skipped[:0] = index.skipped  # what the scan could not read comes first
    mm.flush()
    del mm
    kept = len(result.kept)
    if kept == 0:
        partial.unlink(missing_ok=True)
        raise CacheError(f"none of the {n} images could be decoded")
    os.truncate(partial, kept * height * width * 3)

    records = [index.records[i] for i in result.kept]
    owner = assign_splits([r.patient for r in records], [r.label for r in records])
    rows = []
    for row, (record, (h, w), action) in enumerate(
        zip(records, result.original_sizes, result.actions, strict=True)
    ):
        entry = asdict(record)
        entry.update(row=row, split=owner[record.patient], height=h, width=w, fit=action)
        rows.append(entry)
    write_csv(out / "index.csv", rows, INDEX_FIELDS)
    write_csv(out / "splits.csv", rows, ["path", "patient", "label", "label_name", "split"])
    split_of = np.array([r["split"] for r in rows])
    extra_meta: dict = {}
    if process is not None:
        mm = np.memmap(partial, dtype=np.uint8, mode="r+", shape=(kept, height, width, 3))
        extra_meta = process(mm, split_of)
        mm.flush()
        del mm
    os.replace(partial, out / IMAGES_FILE)

    images = np.memmap(out / IMAGES_FILE, dtype=np.uint8, mode="r", shape=(kept, height, width, 3))
    mean, std = channel_stats(images, np.flatnonzero(split_of == "train"))
    summary = _summary(index, rows, result, size=size)
    meta = {
        "format": FORMAT,
        "shape": [kept, height, width, 3],
        "class_names": list(index.class_names),
        "dataset": index.dataset,
        "task": index.task,
        "split": split_info,
        "mean": mean,
        "std": std,
        "larger_image_fit": larger_image_fit(rows, size),
        "skipped": result.skipped,
        **extra_meta,
    }
    write_json(out / "summary.json", summary)
    write_json(out / "meta.json", meta)
    return summary


def _summary(index: SourceIndex, rows: list[dict], result: DecodeResult, *, size) -> dict:
    per_split: dict[str, dict] = {}
    for name in ("train", "val", "test"):
        chosen = [r for r in rows if r["split"] == name]
        per_split[name] = {
            "images": len(chosen),
            "patients": len({r["patient"] for r in chosen}),
            "classes": {
                c: sum(1 for r in chosen if r["label"] == i)
                for i, c in enumerate(index.class_names)
            },
        }
    padded = sum(1 for a in result.actions if a == "padded")
    resized = sum(1 for a in result.actions if a == "resized")
    stretched = sum(1 for a in result.actions if a == "stretched")
    notes = list(index.notes)
    if padded:
        notes.append(
            f"{padded} image(s) smaller than {size[0]}x{size[1]} were padded with white "
            "at the bottom/right"
        )
    if resized:
        notes.append(
            f"{resized} image(s) were resized (shorter side to {min(size)}) and "
            f"center-cropped to {size[0]}x{size[1]}"
        )
    if stretched:
        notes.append(
            f"{stretched} image(s) were resized whole to {size[0]}x{size[1]} (aspect not kept)"
        )
    if result.skipped:
        notes.append(f"{len(result.skipped)} unreadable file(s) were skipped (listed in 'skipped')")
    return {
        "dataset": index.dataset,
        "task": index.task,
        "image_size": list(size),
        "class_names": list(index.class_names),
        "images": len(rows),
        "patients": len({r["patient"] for r in rows}),
        "splits": per_split,
        "padded": padded,
        "resized": resized,
        "stretched": stretched,
        "skipped": result.skipped,
        "notes": notes,
    }


@dataclass
class PreparedData:
    """A prepared folder opened for reading: memmapped images plus index columns."""

    root: Path
    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    splits: np.ndarray
    rows: list[dict[str, str]]
    meta: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.meta["shape"][1]), int(self.meta["shape"][2])

    def indices(self, split: str) -> np.ndarray:
        """Row numbers of one split (``"train"``, ``"val"``, ``"test"``) or ``"all"``."""
        if split == "all":
            return np.arange(len(self.labels))
        if split not in ("train", "val", "test"):
            raise CacheError(f"unknown split {split!r}; choose train, val, test or all")
        return np.flatnonzero(self.splits == split)


def is_prepared(path: str | Path) -> bool:
    """True when ``path`` is a folder written by ``breastpath prepare``."""
    return (Path(path) / "meta.json").is_file() and (Path(path) / IMAGES_FILE).is_file()


def open_prepared(path: str | Path) -> PreparedData:
    """Open a prepared folder; raise :class:`CacheError` when it is missing or incomplete."""
    root = Path(path)
    if not root.is_dir():
        raise CacheError(f"{root}: no such prepared folder (run `breastpath prepare` first)")
    if not (root / "meta.json").is_file():
        raise CacheError(
            f"{root}: not a complete prepared folder (meta.json missing); "
            "run `breastpath prepare` again"
        )
    meta = read_json(root / "meta.json")
    if meta.get("format") != FORMAT:
        raise CacheError(f"{root}: unsupported cache format {meta.get('format')!r}")
    shape = tuple(int(v) for v in meta["shape"])
    image_file = root / IMAGES_FILE
    expected = int(np.prod(shape))
    if not image_file.is_file() or image_file.stat().st_size != expected:
        raise CacheError(
            f"{root}: {IMAGES_FILE} is missing or has the wrong size; "
            "run `breastpath prepare` again"
        )
    rows = read_csv(root / "index.csv")
    if len(rows) != shape[0]:
        raise CacheError(f"{root}: index.csv has {len(rows)} rows for {shape[0]} images")
    images = np.memmap(image_file, dtype=np.uint8, mode="r", shape=shape)
    if "larger_image_fit" not in meta:  # prepared before it was recorded: the index tells
        meta["larger_image_fit"] = larger_image_fit(rows, (shape[1], shape[2]))
    return PreparedData(
        root=root,
        images=images,
        labels=np.array([int(r["label"]) for r in rows], dtype=np.int64),
        patients=np.array([r["patient"] for r in rows]),
        splits=np.array([r["split"] for r in rows]),
        rows=rows,
        meta=meta,
    )
