"""Magnification: what a model was trained at, what an image says it is, and the check between.

A BreakHis model trained on 200X images sees structures at one size; a 40X image shows them five
times smaller, and scoring it anyway gives a confident answer to a question the model never
learnt. A checkpoint states the magnifications of its training images (``data.magnifications``,
recorded by training from the prepared rows' BreakHis names); an image states its own through the
caller (``--magnification``, ``?magnification=``) or its BreakHis file name (``-200-``,
``200X``). When both are known and differ, the image is not scored
(:class:`~breastpath.errors.MagnificationError`) unless the caller allows it.

Examples
--------
>>> magnification_of("SOB_B_F-14-9133-40-001.png"), magnification_of("tile-200X-3.png")
('40', '200')
>>> check_magnification({"magnifications": ["200"]}, "40")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
breastpath.errors.MagnificationError: the image is at 40X but the model was trained at 200X; ...
>>> check_magnification({"magnifications": ["200"]}, None) is None  # unknown: not checked
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from breastpath.errors import MagnificationError

__all__ = ["MAGNIFICATIONS", "check_magnification", "magnification_of", "normalise"]

#: The BreakHis magnifications.
MAGNIFICATIONS = ("40", "100", "200", "400")
_SOB = re.compile(r"^SOB_[BM]_[A-Z]+-\d+-[0-9A-Za-z]+-(40|100|200|400)-\d+", re.IGNORECASE)
_TAGGED = re.compile(r"(?<![0-9])(40|100|200|400)X(?![0-9a-z])", re.IGNORECASE)


def normalise(value: object) -> str | None:
    """``"200"`` for 200, "200x", "200X"; None for None or ""; a named error otherwise."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().upper().removesuffix("X")
    if text not in MAGNIFICATIONS:
        raise MagnificationError(
            f"magnification must be one of {', '.join(MAGNIFICATIONS)} (X), got {value!r}"
        )
    return text


def magnification_of(name: str | PurePath | None) -> str | None:
    """The magnification a file name states (BreakHis ``SOB_...-<MAG>-<SEQ>`` or ``<MAG>X``)."""
    if not name:
        return None
    stem = PurePath(str(name)).name
    match = _SOB.match(stem) or _TAGGED.search(stem)
    return match.group(1) if match else None


def trained_at(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The magnifications a checkpoint's ``data`` block states (empty: unknown)."""
    values: Iterable[Any] = data.get("magnifications") or ()
    return tuple(sorted({m for m in (normalise(v) for v in values) if m}, key=int))


def check_magnification(data: Mapping[str, Any], image: str | None) -> str | None:
    """None when the image's magnification is unknown, or the model's, or the model's is
    unknown; :class:`MagnificationError` naming both when they differ."""
    model = trained_at(data)
    if image is None or not model or image in model:
        return None
    at = " or ".join(f"{m}X" for m in model)
    raise MagnificationError(
        f"the image is at {image}X but the model was trained at {at}; give an image at {at} "
        "(or allow the mismatch to score it anyway)"
    )
