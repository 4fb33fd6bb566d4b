"""Slide analyses started from the viewer: one at a time, a bounded queue, cached on disk.

``POST /api/slides/{id}/analyze`` asks :class:`SlideAnalyses` to score a slide of the catalogue
with the server's predictor; ``GET /api/slides/{id}/job`` reports its progress. A job runs the
cohort's own step (:func:`~breastpath.slide.cohort.run_one` over
:func:`~breastpath.slide.analyze.score_prepared`) in one background thread, into
``RESULTS/<id>/``, and writes the cohort's done marker: the results are cached per (slide path,
model and its weights' SHA-256, tiling options), exactly as ``breastpath slide`` caches them, so
a finished slide is never scored twice, across restarts too, and a changed model scores it
again. ``breastpath slide DIR --out RESULTS`` (default options) reuses them and vice versa.

The results folder is ``--slides-results`` (created; refused at start-up when it cannot be
written) or by default ``DIR/breastpath-analyses`` when ``DIR`` can be written; otherwise the
viewer serves the slides without analyses and ``POST .../analyze`` answers 503 saying why.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastpath.errors import ConfigError, SlideError
from breastpath.slide.cohort import (
    CohortOptions,
    Progress,
    cohort_settings,
    finished_row,
    run_one,
    slide_fingerprint,
)
from breastpath.slide.prefetch import prepare_source
from breastpath.slide.sources import SlideSource

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.catalog import Entry, SlideCatalog

#: The default results folder's name, inside the served folder.
DEFAULT_RESULTS = "breastpath-analyses"
#: Jobs waiting behind the running one; more get 429.
MAX_QUEUED = 4


class AnalysisUnavailable(SlideError):
    """This server cannot analyse slides (no writable results folder): an HTTP 503."""


class QueueFull(SlideError):
    """Too many analyses waiting: an HTTP 429."""


class CannotAnalyse(SlideError):
    """The slide's pixels cannot be found: an HTTP 409."""


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def results_folder(root: Path, explicit: Path | None) -> tuple[Path | None, str | None]:
    """The folder analyses are written to and, when there is none, why.

    ``explicit`` (``--slides-results``) must be writable, else :class:`ConfigError`; without it,
    ``root/breastpath-analyses`` when that can be created and written.
    """
    if explicit is not None:
        if not _writable(explicit):
            raise ConfigError(f"--slides-results {explicit}: cannot create or write that folder")
        return explicit.resolve(), None
    default = root / DEFAULT_RESULTS
    if os.access(root, os.W_OK) and _writable(default):
        return default.resolve(), None
    return None, (
        f"slides cannot be analysed from the page: {root} cannot be written; start the server "
        "with --slides-results DIR (a writable folder for the results)"
    )


@dataclass
class Job:
    """One analysis: ``queued``, ``running``, ``done`` or ``error``."""

    slide_id: str
    state: str = "queued"
    tiles_done: int = 0
    tiles_total: int | None = None
    scoring_since: float | None = None
    seconds: float | None = None
    status: str | None = None
    error: str | None = None
    cached: bool = False

    def to_dict(self, position: int | None = None) -> dict[str, Any]:
        rate = eta = None
        if self.state == "running" and self.scoring_since is not None and self.tiles_done:
            elapsed = max(time.monotonic() - self.scoring_since, 1e-6)
            rate = self.tiles_done / elapsed
            if self.tiles_total:
                eta = max(self.tiles_total - self.tiles_done, 0) / rate
        return {
            "id": self.slide_id,
            "state": self.state,
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "tiles_per_s": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "queue_position": position,
            "seconds": self.seconds,
            "status": self.status,
            "error": self.error,
            "cached": self.cached,
        }


class _JobProgress(Progress):
    def __init__(self, job: Job) -> None:
        self.job = job

    def tiles(self, n: int) -> None:
        self.job.tiles_done += n


class SlideAnalyses:
    """Analyses of ``catalog``'s slides by ``predictor`` into ``results`` (see the module
    docstring); ``unavailable`` says why there is no results folder.

    Examples
    --------
    >>> jobs = SlideAnalyses(catalog, predictor, results=Path("out"))  # doctest: +SKIP
    >>> jobs.submit("CMU-1")["state"], jobs.job("CMU-1")["tiles_total"]  # doctest: +SKIP
    ('queued', None)
    """

    def __init__(
        self,
        catalog: SlideCatalog,
        predictor: Predictor,
        *,
        results: Path | None,
        unavailable: str | None = None,
        options: CohortOptions | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.catalog, self.predictor = catalog, predictor
        self.results, self.unavailable = results, unavailable
        self.options = options or CohortOptions(batch_size=64, workers=1)
        self.settings = cohort_settings(predictor, self.options)
        self.max_queued = max_queued
        self._jobs: dict[str, Job] = {}
        self._waiting: list[str] = []
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if results is not None:
            catalog.trust_results(results)
            for slide_id in catalog.entries:
                self._reuse(slide_id, startup=True)

    # -- the cache -------------------------------------------------------------------------
    def _source(self, entry: Entry) -> tuple[SlideSource, str]:
        assert entry.opener is not None
        source = SlideSource(entry.opener, entry.id)
        return source, slide_fingerprint(self.settings, source)

    def _reuse(self, slide_id: str, *, startup: bool = False) -> bool:
        """Attach the slide's finished results of this model and options, if on disk."""
        entry = self.catalog.get(slide_id)
        if self.results is None or entry.opener is None:
            return False
        if startup and self.catalog.summary(slide_id) is not None:
            return False  # a cohort's own results are shown as they are
        source, fingerprint = self._source(entry)
        folder = self.results / entry.id
        row = finished_row(folder, source, fingerprint)
        if row is None:
            return False
        self.catalog.attach(slide_id, folder, str(row.get("status") or "scored"))
        return True

    # -- requests --------------------------------------------------------------------------
    def submit(self, slide_id: str) -> tuple[dict[str, Any], bool]:
        """Start (or join) the analysis of ``slide_id``; returns the job and whether it was
        answered from the cache (already done)."""
        entry = self.catalog.get(slide_id)
        if self.results is None:
            raise AnalysisUnavailable(self.unavailable or "slides cannot be analysed here")
        if entry.opener is None:
            raise CannotAnalyse(entry.missing or f"slide {slide_id!r} cannot be found")
        with self._lock:
            job = self._jobs.get(slide_id)
            if job is not None and job.state in ("queued", "running"):
                return self._describe(job), False
            if self._reuse(slide_id):
                done = Job(slide_id, state="done", cached=True)
                done.status = self.catalog.entries[slide_id].status
                self._jobs[slide_id] = done
                return done.to_dict(), True
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(
                    f"{len(self._waiting)} analyses are waiting already; try again later"
                )
            job = Job(slide_id)
            self._jobs[slide_id] = job
            self._waiting.append(slide_id)
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="slide-analyses", daemon=True
                )
                self._thread.start()
            return self._describe(job), False

    def job(self, slide_id: str) -> dict[str, Any]:
        """The slide's latest job, or ``state: none`` (``done`` when results are attached)."""
        entry = self.catalog.get(slide_id)
        with self._lock:
            job = self._jobs.get(slide_id)
            if job is not None:
                return self._describe(job)
        analysed = self.catalog.summary(slide_id) is not None
        return {
            **Job(slide_id, state="done" if analysed else "none").to_dict(),
            **({"status": entry.status} if analysed else {}),
        }

    def _describe(self, job: Job) -> dict[str, Any]:
        position = self._waiting.index(job.slide_id) + 1 if job.state == "queued" else None
        return job.to_dict(position)

    # -- the worker ------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting.remove(job.slide_id)
                job.state = "running"
            started = time.monotonic()
            try:
                self._run(job)
            except Exception as exc:  # a job's failure is its answer, never the server's
                job.state, job.error = "error", f"{type(exc).__name__}: {exc}"
            job.seconds = round(time.monotonic() - started, 3)

    def _run(self, job: Job) -> None:
        assert self.results is not None
        entry = self.catalog.get(job.slide_id)
        source, fingerprint = self._source(entry)
        ready = prepare_source(source, self.predictor, self.options)
        job.tiles_total = len(ready.slide.grid) if ready.slide is not None else 0
        job.scoring_since = time.monotonic()
        row = run_one(
            source, self.predictor, out=self.results, options=self.options,
            fingerprint=fingerprint, settings=self.settings, progress=_JobProgress(job),
            ready=lambda: ready,
        )  # fmt: skip
        status = str(row.get("status") or "")
        job.status = status
        if status.startswith("error"):
            job.state, job.error = "error", status.removeprefix("error:").strip()
            return
        self.catalog.attach(job.slide_id, self.results / entry.id, status)
        job.state = "done"

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
