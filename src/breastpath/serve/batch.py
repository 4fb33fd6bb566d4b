"""``POST /api/predict/batch``: files and zips scored image by image, within per-request budgets.

A batch is never held whole in memory. Zips are opened in a worker thread without reading
their members; then each image in turn is read (a zip member is decompressed only now),
checked against what is left of the request's budgets (:class:`~breastpath.serve.uploads.
RequestBudget`: bytes expanded, pixels decoded, tiles scored), decoded and reduced to its model
input and tiles in a worker thread (within the server-wide pixel gate), its full-size pixels
dropped, and its rows queued for the model. At most :data:`LOOKAHEAD` reduced images wait for
the model at a time, so decoding the next image overlaps scoring the last.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from typing import Any

from starlette.concurrency import run_in_threadpool

from breastpath.imaging import probe_size
from breastpath.sandbox import inline_bytes
from breastpath.serve.errors import ApiError
from breastpath.serve.service import Decoded, PredictionService, release_pixels
from breastpath.serve.uploads import (
    Member,
    RequestBudget,
    Upload,
    is_zip,
    open_zip,
    read_member,
    read_upload,
)

#: Reduced images of one request waiting for the model at a time.
LOOKAHEAD = 2

Entry = Upload | Member | ApiError


async def gather_entries(service: PredictionService, files: list[Any]) -> tuple[list[Entry], int]:
    """The request's images in order (files, then each zip's members in place), and the number
    of zip entries ignored (folders, ``__MACOSX``). Nothing is decompressed yet."""
    limits = service.limits
    if len(files) > limits.max_files:
        raise ApiError(413, f"{len(files)} files, more than the limit of {limits.max_files}")
    entries: list[Entry] = []
    ignored = 0
    for number, file in enumerate(files, start=1):
        try:
            upload = await read_upload(
                file, limit=limits.max_batch_bytes, fallback=f"file {number}"
            )
        except ApiError as exc:
            entries.append(exc)
            continue
        if is_zip(upload.data):
            members, skipped = await run_in_threadpool(open_zip, upload, limits)
            entries.extend(members)
            ignored += skipped
        elif len(upload.data) > limits.max_upload_bytes:
            detail = f"{upload.name}: upload larger than {limits.max_upload_bytes} bytes"
            entries.append(ApiError(413, detail, name=upload.name))
        else:
            entries.append(upload)
    if len(entries) > limits.max_files:
        raise ApiError(
            413, f"{len(entries)} images in this batch, more than the limit of {limits.max_files}"
        )
    return entries, ignored


def _materialize(service: PredictionService, entry: Entry, budget: RequestBudget) -> Upload:
    """The bytes of one entry (a zip member is read now), within the request's budget."""
    if isinstance(entry, ApiError):
        raise entry
    if isinstance(entry, Member):
        return read_member(entry, limits=service.limits, budget=budget)
    if len(entry.data) > budget.bytes:
        limit = service.limits.max_batch_bytes
        raise ApiError(
            413,
            f"{entry.name}: not read: this request's images already expand to the limit of "
            f"{limit} bytes per request",
            name=entry.name,
        )
    budget.bytes -= len(entry.data)
    return entry


def _charge_pixels(service: PredictionService, upload: Upload, budget: RequestBudget) -> int:
    """Take the image's pixels (from its header) from the request's budget; 413 when spent."""
    size = probe_size(upload.data)
    pixels = size[0] * size[1] if size else 0
    if pixels > budget.pixels:
        limit = service.limits.max_request_pixels
        raise ApiError(
            413,
            f"{upload.name}: not decoded: {size[0]}x{size[1]} pixels and this request has "  # type: ignore[index]
            f"{budget.pixels} left of its limit of {limit} pixels",
            name=upload.name,
        )
    budget.pixels -= pixels
    return pixels


async def _prepare(
    service: PredictionService, entry: Entry, budget: RequestBudget, *, force: bool = False
) -> Decoded | ApiError:
    """Read, check, decode and reduce one entry; its error in its place when it fails."""
    try:
        upload = await run_in_threadpool(_materialize, service, entry, budget)
        if inline_bytes(upload.data):  # a small patch: bounded work, on the event loop
            _charge_pixels(service, upload, budget)
            item = service.decode(upload, tiles_left=budget.tiles)
        else:  # the header walk and the decode off the loop; the gate held until it ends
            pixels = await run_in_threadpool(_charge_pixels, service, upload, budget)
            cancel = threading.Event()
            call = functools.partial(service.decode, upload, tiles_left=budget.tiles, cancel=cancel)
            item = await service.decode_gate.run(pixels, call, on_cancel=cancel.set)
    except ApiError as exc:
        return exc
    budget.tiles -= item.grid.count if item.grid is not None else 0
    item.force = force
    release_pixels(item)
    return item


async def predict_entries(
    service: PredictionService,
    entries: list[Entry],
    *,
    budget: RequestBudget,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Results for the entries, in order; a bad one gets its error in its place.

    A 503 or 504 from the model ends the whole request (its remaining work is dropped).
    """
    results: list[dict[str, Any] | None] = [None] * len(entries)
    waiting: deque[tuple[int, Decoded, asyncio.Future]] = deque()

    async def finish() -> None:
        index, item, job = waiting.popleft()
        probs = (await job)[0]
        results[index] = {"index": index, "ok": True, **service._result(item, probs)}

    try:
        for index, entry in enumerate(entries):
            outcome = await _prepare(service, entry, budget, force=force)
            if isinstance(outcome, ApiError):
                name = outcome.name or f"file {index + 1}"
                results[index] = {
                    "index": index,
                    "ok": False,
                    "filename": name,
                    "error": outcome.to_dict(),
                }
                continue
            waiting.append((index, outcome, asyncio.ensure_future(service._score([outcome]))))
            while len(waiting) > LOOKAHEAD:
                await finish()
        while waiting:
            await finish()
    finally:
        for _, _, job in waiting:
            job.cancel()
    return [r for r in results if r is not None]


async def predict_batch(
    service: PredictionService, files: list[Any], *, force: bool = False
) -> dict[str, Any]:
    """The JSON answer of a batch request (``force``: label images the input-quality gate
    flags, research only; they stay marked ``assessed: false``)."""
    started = time.perf_counter()
    budget = RequestBudget.of(service.limits)
    entries, ignored = await gather_entries(service, files)
    results = await predict_entries(service, entries, budget=budget, force=force)
    good = [r for r in results if r["ok"]]
    predictor = service.predictor
    return {
        "results": results,
        "summary": {
            "files": len(results),
            "ok": len(good),
            "failed": len(results) - len(good),
            "cancer": sum(bool(r["is_cancer"]) for r in good),
            "not_assessed": sum(not r.get("assessed", True) for r in good),
            "ignored": ignored,
        },
        "threshold": predictor.threshold,
        "model": predictor.describe(),
        "seconds": round(time.perf_counter() - started, 4),
        "used": {
            "bytes": service.limits.max_batch_bytes - budget.bytes,
            "pixels": service.limits.max_request_pixels - budget.pixels,
            "tiles": service.limits.max_request_tiles - budget.tiles,
        },
    }
