"""``breastpath prepare``: scan a source, split by patient, decode once into a packed cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from breastpath.config import DataConfig
from breastpath.data.cache import write_cache
from breastpath.data.index import scan_sources
from breastpath.data.splits import split_patients
from breastpath.data.stain_cache import fixed_target_step, stain_step
from breastpath.io import read_json, write_json

DEFAULT_IDC_SIZE = 50
DEFAULT_IMAGE_SIZE = 224


def prepare(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    *,
    config: DataConfig | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_scanned: Callable[[int], None] | None = None,
    on_stain: Callable[[int], None] | None = None,
) -> dict:
    """Prepare ``sources`` into ``out_dir`` and return the summary.

    With ``config.stain`` other than ``"none"``, the cache is stain-normalized to a target fitted
    on ``config.stain_sample`` training images (seeded); ``on_stain(n)`` reports progress.

    Examples
    --------
    >>> summary = prepare(["data/idc"], "prepared/idc")  # doctest: +SKIP
    >>> summary["splits"]["test"]["patients"]  # doctest: +SKIP
    37
    """
    config = config or DataConfig()
    index = scan_sources(
        list(sources),
        dataset=config.dataset,
        task=config.task,
        magnification=config.magnification,
    )
    if on_scanned is not None:
        on_scanned(len(index))
    side = config.image_size or (DEFAULT_IDC_SIZE if index.dataset == "idc" else DEFAULT_IMAGE_SIZE)
    split_info = {
        "seed": config.seed,
        "test_frac": config.test_frac,
        "val_frac": config.val_frac,
        "method": "patient-level, class-stratified, greedy by patient size",
    }
    summary = write_cache(
        out_dir,
        index,
        size=(side, side),
        assign_splits=partial(
            split_patients, test_frac=config.test_frac, val_frac=config.val_frac, seed=config.seed
        ),
        split_info=split_info,
        fit=config.input_fit,
        workers=workers,
        progress=progress,
        process=_stain_process(config, progress=on_stain),
    )
    if config.stain != "none" or config.stain_target:
        info = read_json(Path(out_dir) / "meta.json")["stain_info"]
        summary["stain"] = info
        fitted = (
            f"the fixed target {info['target']}"
            if config.stain_target
            else f"a target fitted on {info['sample']} training images (seed {info['seed']})"
        )
        summary["notes"].append(
            f"stain-normalized ({info['method']}) to {fitted}; {info['unchanged']} image(s) "
            "without usable tissue left unchanged"
        )
    summary["sources"] = [str(s) for s in sources]
    summary["config"] = config.to_dict()
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def _stain_process(
    config: DataConfig, *, progress: Callable[[int], None] | None
) -> Callable[[np.ndarray, np.ndarray], dict] | None:
    """The cache's stain step: none, a target fitted on the training split, or a fixed one."""
    if config.stain_target:
        from breastpath.stain import load_target_file

        normalizer = load_target_file(config.stain_target)
        return fixed_target_step(
            normalizer, source=Path(config.stain_target).name, progress=progress
        )
    if config.stain == "none":
        return None
    return stain_step(config.stain, count=config.stain_sample, seed=config.seed, progress=progress)


def format_summary(summary: dict) -> str:
    """A plain-text table of images, patients and class balance per split."""
    classes = summary["class_names"]
    header = ["split", "images", "patients", *classes]
    rows = [header]
    for name in ("train", "val", "test"):
        part = summary["splits"][name]
        counts = [part["classes"][c] for c in classes]
        total = max(part["images"], 1)
        rows.append(
            [
                name,
                str(part["images"]),
                str(part["patients"]),
                *[f"{c} ({100 * c / total:.0f}%)" for c in counts],
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    size = summary["image_size"]
    lines.insert(
        0,
        f"{summary['dataset']} ({summary['task']}): {summary['images']} images from "
        f"{summary['patients']} patients, cached at {size[0]}x{size[1]}",
    )
    lines.extend(f"note: {n}" for n in summary["notes"])
    for item in summary["skipped"][:20]:
        lines.append(f"skipped: {item['reason']}")
    if len(summary["skipped"]) > 20:
        lines.append(f"... and {len(summary['skipped']) - 20} more (see summary.json)")
    return "\n".join(lines)
