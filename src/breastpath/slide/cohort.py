"""Score a cohort of slides: one folder per slide, one table, resumable, one bad slide at a time.

:func:`run_cohort` runs :func:`~breastpath.slide.analyze.analyze_slide` on each slide of a
cohort (:mod:`breastpath.slide.sources`) into ``OUT/<slide>/`` and keeps ``OUT/cohort.csv``
(:mod:`breastpath.slide.cohort_table`) up to date, rewritten atomically after every slide.

State on disk, per slide (so a rerun, under any number of ``torchrun`` processes, resumes):

- ``OUT/<slide>/done.json`` is written last, atomically, once every output of the slide is
  written (each output is itself written atomically). It holds the slide's path, the settings
  that produced it (:func:`cohort_settings`, with their SHA-256), the sizes of its outputs and
  its table row. A rerun skips a slide whose marker matches its path and settings and whose
  outputs are all there; any other slide is run again (its old marker is removed first).
- ``OUT/<slide>/error.json`` holds the row of a slide that failed (an ``error:`` row). Such a
  slide is tried again on every rerun.

A crash or ``kill -9`` therefore loses at most the slide in flight. A slide that fails, for any
reason and with any exception type, becomes an ``error:`` row and the cohort goes on, except
when the *output* cannot be written (a full or read-only disk: :class:`OutputStopped`) or the
user presses Ctrl-C: then the slide in flight is dropped (it stays ``pending``), the table is
written with what was done, and the error is raised.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastpath.errors import BreastpathError, NoTissueError, SlideError
from breastpath.inference.tiles import MIN_TILE_TISSUE
from breastpath.io import read_json, remove_stale_temps, write_json
from breastpath.slide import cohort_table, shard
from breastpath.slide.prefetch import Prefetcher, Ready, prepare_source
from breastpath.slide.preflight import MAX_TILES

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.stages import StageClock
    from breastpath.slide.sources import SlideSource

DONE = "done.json"
ERROR = "error.json"
#: ``errno`` values that mean the output disk cannot take more: stop the cohort.
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class OutputStopped(SlideError):
    """The output folder cannot be written (full or read-only disk): the cohort stopped."""


@dataclass(frozen=True)
class CohortOptions:
    """The options of :func:`~breastpath.slide.analyze.analyze_slide` a cohort runs with."""

    tile_size: int | None = None
    level: int | None = None
    mpp: float | None = None
    slide_mpp: float | None = None
    threshold: float | None = None
    top_k: int = 20
    min_tissue: float = MIN_TILE_TISSUE
    tissue_method: str = "saturation"
    backend: str = "auto"
    batch_size: int = 256
    workers: int = 2
    max_tiles: int = MAX_TILES


class Progress:
    """What a cohort run reports as it goes; the default reports nothing."""

    def begin(self, *, total: int, done: int) -> None:
        """``total`` slides for this process, ``done`` of the cohort's already finished."""

    def slide(self, source: SlideSource) -> None:
        """A slide starts."""

    def tiles(self, n: int) -> None:
        """``n`` more tiles of the slide in flight were checked (and scored)."""

    def finished(self, source: SlideSource, row: dict[str, Any]) -> None:
        """A slide ended with ``row``."""

    def close(self) -> None:
        """The run ended (or stopped)."""


def cohort_settings(predictor: Predictor, options: CohortOptions) -> dict[str, Any]:
    """What decides a slide's outputs: the model (its description and the SHA-256 of its
    weights, so retrained weights under the same name are a new model) and the tiling and
    scoring options (not the batch size, the reader threads or the tile limit)."""
    model = {
        k: v for k, v in predictor.describe().items() if k not in ("explanations", "runtime_note")
    }
    meta = getattr(predictor, "meta", None)
    model["weights_sha256"] = getattr(meta, "weights_sha256", None) or None
    chosen = asdict(options)
    for key in ("batch_size", "workers", "max_tiles"):
        chosen.pop(key)
    return {"model": model, "options": chosen}


def slide_fingerprint(settings: dict[str, Any], source: SlideSource) -> str:
    """The SHA-256 of what decides ``source``'s outputs (its done marker's key)."""
    body = {**settings, "slide": source.key, "manifest_mpp": source.mpp}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def finished_row(folder: Path, source: SlideSource, fingerprint: str) -> dict[str, Any] | None:
    """The row of ``source`` from its done marker, or None when it must be run (no marker, other
    settings or path, an output missing or of another size)."""
    try:
        marker = read_json(folder / DONE)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("settings_sha256") != fingerprint:
        return None
    files = marker.get("files") or {}
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    row = marker.get("row")
    return {**row, **cohort_table_keys(source)} if isinstance(row, dict) else None


def cohort_table_keys(source: SlideSource) -> dict[str, Any]:
    """Columns that come from the cohort listing, not from the run (a manifest may change a
    slide's patient or label without changing its outputs)."""
    base = cohort_table.base_row(source)
    return {k: base[k] for k in ("slide", "path", "patient", "label", "output")}


def last_error_row(folder: Path, source: SlideSource, fingerprint: str) -> dict[str, Any] | None:
    """The row of ``source``'s last failed attempt under the same settings, else None."""
    try:
        body = read_json(folder / ERROR)
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("settings_sha256") != fingerprint:
        return None
    return {**body.get("row", {}), **cohort_table_keys(source)}


def state_row(out: Path, source: SlideSource, fingerprint: str) -> tuple[dict[str, Any], bool]:
    """The row of ``source`` from what is on disk, and whether it is finished."""
    folder = out / source.name
    done = finished_row(folder, source, fingerprint)
    if done is not None:
        return done, True
    failed = last_error_row(folder, source, fingerprint)
    return (failed if failed is not None else cohort_table.base_row(source)), False


def run_cohort(
    sources: Sequence[SlideSource],
    predictor: Predictor,
    *,
    out_dir: str | Path,
    options: CohortOptions | None = None,
    progress: Progress | None = None,
    rank: shard.DistInfo | None = None,
    clock: StageClock | None = None,
) -> list[dict[str, Any]]:
    """Score ``sources`` into ``out_dir`` (see the module docstring); return the table's rows
    (on rank 0 of a ``torchrun`` job, every slide's; on other ranks, what they knew).

    The next slide is opened and its tissue mask made while the model scores the current one
    (:mod:`breastpath.slide.prefetch`); ``clock`` counts CPU seconds per stage.

    Raises
    ------
    OutputStopped
        The output folder cannot be written; what was done is kept (rerun to go on).
    KeyboardInterrupt
        Ctrl-C: the slide in flight is dropped, the table holds what was done.

    Examples
    --------
    >>> from breastpath.slide.sources import discover
    >>> rows = run_cohort(discover(["slides/"]), predictor, out_dir="out")  # doctest: +SKIP
    >>> rows[0]["status"], rows[0]["verdict"]  # doctest: +SKIP
    ('scored', 'IDC present')
    """
    out, options = Path(out_dir), options or CohortOptions()
    progress, rank = progress or Progress(), rank or shard.DistInfo()
    settings = cohort_settings(predictor, options)
    prints = [slide_fingerprint(settings, s) for s in sources]
    _writable(out)
    shard.barrier(rank)  # every rank looks at the markers before any rank writes one
    states = [state_row(out, s, fp) for s, fp in zip(sources, prints, strict=True)]
    shard.barrier(rank)
    rows = [row for row, _ in states]
    mine = shard.shard([i for i, (_, done) in enumerate(states) if not done], rank)
    progress.begin(total=len(mine), done=sum(done for _, done in states))
    ahead = Prefetcher(
        lambda source: prepare_source(source, predictor, options, clock=clock, release=True)
    )
    try:
        if rank.is_main:
            _write(out, rows, settings)
        with ahead:
            for k, i in enumerate(mine):
                progress.slide(sources[i])
                following = sources[mine[k + 1]] if k + 1 < len(mine) else None
                rows[i] = run_one(
                    sources[i], predictor, out=out, options=options, fingerprint=prints[i],
                    settings=settings, progress=progress, clock=clock,
                    ready=functools.partial(ahead.take, sources[i], following),
                )  # fmt: skip
                progress.finished(sources[i], rows[i])
                if rank.is_main:
                    _write(out, rows, settings)
    except (KeyboardInterrupt, OutputStopped):
        if rank.is_main:
            _write(out, rows, settings, quiet=True)
        raise
    finally:
        progress.close()
    if rank.enabled:
        shard.barrier(rank)
        rows = [state_row(out, s, fp)[0] for s, fp in zip(sources, prints, strict=True)]
        if rank.is_main:
            _write(out, rows, settings)
    return rows


def run_one(
    source: SlideSource,
    predictor: Predictor,
    *,
    out: Path,
    options: CohortOptions,
    fingerprint: str,
    settings: dict[str, Any],
    progress: Progress,
    clock: StageClock | None = None,
    ready: Callable[[], Ready] | None = None,
) -> dict[str, Any]:
    """Score one slide into ``out/<name>/`` and record it; return its row. Any failure of the
    slide becomes an ``error:`` row; a failure to write the output raises :class:`OutputStopped`.
    ``ready`` gives the slide prepared ahead (:mod:`breastpath.slide.prefetch`); without it the
    slide is prepared here.
    """
    from breastpath.slide.analyze import score_prepared

    folder = out / source.name
    _clear(folder, out)
    started = time.perf_counter()
    row: dict[str, Any] = cohort_table.base_row(source)
    paths: dict[str, Path] = {}
    try:
        prepared = ready() if ready is not None else prepare_source(source, predictor, options)
        if prepared.preflight is not None:
            row.update(prepared.preflight.to_row(), open_s=prepared.open_s)
        if prepared.error is not None:
            raise prepared.error
        assert prepared.slide is not None
        with prepared.slide as slide:
            result = score_prepared(
                slide, predictor, out_dir=folder, threshold=options.threshold,
                top_k=options.top_k, batch_size=options.batch_size, workers=options.workers,
                progress=progress.tiles, clock=clock,
            )  # fmt: skip
    except KeyboardInterrupt:
        raise
    except NoTissueError as exc:  # read, and nothing in it to score
        row["status"] = f"skipped: {describe_error(exc)}"
    except Exception as exc:  # one bad slide never stops the cohort
        _stop_if_output(exc, out)
        row["status"] = f"error: {describe_error(exc)}"
    else:
        row = {**cohort_table.result_row(source, result), "open_s": row.get("open_s")}
        paths = result.paths
    row["total_s"] = round(time.perf_counter() - started, 3)
    _record(folder, source, row, paths, fingerprint=fingerprint, settings=settings, out=out)
    return row


def describe_error(exc: BaseException) -> str:
    """One line for the table: a breastpath error's message, else ``Type: message``."""
    if isinstance(exc, BreastpathError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{type(exc).__name__}: {exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _stop_if_output(exc: BaseException, out: Path) -> None:
    """Raise :class:`OutputStopped` when ``exc`` is a failure to write under ``out``."""
    if not isinstance(exc, OSError):
        return
    name = exc.filename if isinstance(exc.filename, str) else None
    inside = name is not None and _is_inside(Path(name), out)
    if exc.errno in OUTPUT_ERRNOS or inside:
        raise OutputStopped(
            f"cannot write to {out} ({exc.strerror or exc}); stopped, keeping the slides done "
            "so far (rerun the same command to go on)"
        ) from exc


def _is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.absolute(), folder.absolute()
    return path == folder or folder in path.parents


def _writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputStopped(f"cannot write to {out} ({exc.strerror or exc})") from exc


def _clear(folder: Path, out: Path) -> None:
    """Forget a slide's old marker before its outputs are rewritten."""
    try:
        (folder / DONE).unlink(missing_ok=True)
        remove_stale_temps(folder)
    except OSError as exc:
        _stop_if_output(exc, out)
        raise


def _record(
    folder: Path,
    source: SlideSource,
    row: dict[str, Any],
    paths: dict[str, Path],
    *,
    fingerprint: str,
    settings: dict[str, Any],
    out: Path,
) -> None:
    """Write the slide's done marker (last) or its error record."""
    body = {"slide": source.key, "settings_sha256": fingerprint, "settings": settings, "row": row}
    try:
        if row["status"].startswith("error"):
            write_json(folder / ERROR, body)
            return
        files = {p.name: p.stat().st_size for p in paths.values()}
        write_json(folder / DONE, {**body, "files": files})
        (folder / ERROR).unlink(missing_ok=True)
    except OSError as exc:
        _stop_if_output(exc, out)
        raise


def _write(
    out: Path, rows: list[dict[str, Any]], settings: dict[str, Any], *, quiet: bool = False
) -> None:
    """Rewrite ``cohort.csv`` and ``cohort.json``; ``quiet`` ignores a failure (when stopping)."""
    try:
        cohort_table.write_table(out, rows)
        cohort_table.write_summary(out, rows, settings=settings)
    except OSError as exc:
        if quiet:
            return
        _stop_if_output(exc, out)
        raise
