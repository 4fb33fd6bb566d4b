"""Prepare the next slide of a cohort while the model scores this one.

For each slide a cohort opens the file, checks its scale and grid size
(:func:`~breastpath.slide.preflight.check_reader`), reads its thumbnail, finds tissue and lays
the grid (:func:`~breastpath.slide.analyze.prepare_slide`): work that does not need the model.
:class:`Prefetcher` does it for slide ``i + 1`` in one background thread while slide ``i`` is
scored, so on a cohort of small slides the model is not left idle between slides. At most two
slides are open at a time (the one scored, the one prepared; the prepared one drops the tiles
it decoded for its thumbnail, so it holds its mask and grid while it waits); a failure while
preparing is kept with the slide and raised when its turn comes, so the cohort records it as
before.

Examples
--------
>>> with Prefetcher(lambda s: prepare_source(s, predictor, options)) as ahead:  # doctest: +SKIP
...     for source, following in zip(sources, [*sources[1:], None]):
...         ready = ahead.take(source, following)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastpath.inference.stages import timed
from breastpath.slide.preflight import Preflight, check_one_series, check_reader
from breastpath.slide.reader import open_slide

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.stages import StageClock
    from breastpath.slide.analyze import PreparedSlide
    from breastpath.slide.cohort import CohortOptions
    from breastpath.slide.sources import SlideSource


@dataclass
class Ready:
    """A slide prepared for scoring: its preflight and prepared slide, or the error that
    stopped it (with the preflight when it got that far); ``open_s`` the seconds to open it."""

    preflight: Preflight | None = None
    slide: PreparedSlide | None = None
    error: BaseException | None = None
    open_s: float | None = None

    def close(self) -> None:
        if self.slide is not None:
            self.slide.close()


def prepare_source(
    source: SlideSource,
    predictor: Predictor,
    options: CohortOptions,
    *,
    clock: StageClock | None = None,
    release: bool = False,
) -> Ready:
    """Open, preflight and prepare one slide of a cohort; never raises (see :class:`Ready`).
    ``release`` keeps no tiles the reader decodes for the thumbnail (a slide prepared ahead
    then holds its mask, not up to 64 MB of decoded tiles, while it waits; its tissue tiles are
    decoded again when it is scored)."""
    from breastpath.slide.analyze import prepare_slide

    ready = Ready()
    started = time.perf_counter()
    reader = None
    try:
        with timed(clock, "open_and_mask"):
            opener: Any = source.opener
            if isinstance(opener, (str, Path)) and Path(opener).is_dir():
                check_one_series(Path(opener))
            reader = open_slide(opener, backend=options.backend)
            slide_mpp = source.mpp if source.mpp is not None else options.slide_mpp
            if slide_mpp is not None:
                reader.set_mpp(slide_mpp, source="--slide-mpp")
            ready.preflight = check_reader(
                reader, predictor, tile_size=options.tile_size, level=options.level,
                mpp=options.mpp, max_tiles=options.max_tiles,
            )  # fmt: skip
        ready.open_s = round(time.perf_counter() - started, 3)
        with reader.without_cache() if release else nullcontext():
            ready.slide = prepare_slide(
                reader, predictor, tile_size=options.tile_size, level=options.level,
                mpp=options.mpp, min_tissue=options.min_tissue,
                tissue_method=options.tissue_method, clock=clock,
            )  # fmt: skip
    except Exception as exc:  # kept for the slide's turn: one bad slide never stops the rest
        ready.error = exc
        if reader is not None:
            reader.close()
    return ready


class Prefetcher:
    """Runs ``prepare(source)`` for the next slide in one background thread (see the module
    docstring); use it in a ``with`` block so a slide prepared but never taken is closed."""

    def __init__(self, prepare: Callable[[SlideSource], Ready]) -> None:
        self._prepare = prepare
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-prepare")
        self._pending: dict[int, Future[Ready]] = {}

    def take(self, source: SlideSource, following: SlideSource | None) -> Ready:
        """``source`` prepared (waiting for it, or preparing it now), after starting to prepare
        ``following`` in the background."""
        future = self._pending.pop(id(source), None)
        if following is not None and id(following) not in self._pending:
            self._pending[id(following)] = self._pool.submit(self._prepare, following)
        return future.result() if future is not None else self._prepare(source)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pool.shutdown(wait=True)
        for future in self._pending.values():
            if not future.cancelled() and future.exception() is None:
                future.result().close()
        self._pending.clear()
