"""How the API writes its numbers and the quality gate's verdict (one rule for every answer).

**Numbers.** Every float in an answer is rounded to :data:`DIGITS` decimals (probabilities, the
threshold, tile scores, the verdict's numbers), so a whole-image probability no longer shows 17
digits beside 6-digit tile values. Measures that are coarser by nature keep their coarser
rounding (the gate's fractions: 4 decimals; contrast and detail: 2; seconds: 4).

**Quality.** The gate (:class:`~breastpath.inference.quality.Quality`) names its checks
``is_tissue`` and ``looks_like_he``, which read as a contradiction on a photo (``is_tissue:
true`` beside ``looks_like_he: false``): the first only says that enough pixels are neither
glass nor black. The API names each check by what it measures (:func:`api_quality`):
``has_tissue_pixels`` and ``he_colours``; the old keys stay for one release, deprecated.
"""

from __future__ import annotations

import math
from typing import Any

#: Decimals of every float in an API answer.
DIGITS = 6

#: The gate's old quality keys and the names the API gives them (the old ones deprecated).
RENAMED = {"is_tissue": "has_tissue_pixels", "looks_like_he": "he_colours"}
#: Deprecated keys still sent (for one release) beside their new names.
DEPRECATED = tuple(RENAMED)


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with every float inside (dicts, lists, tuples) rounded to ``digits`` decimals.

    Examples
    --------
    >>> rounded({"p": 0.32890976452689813, "tiles": [0.1234567, None], "n": 3, "ok": True})
    {'p': 0.32891, 'tiles': [0.123457, None], 'n': 3, 'ok': True}
    """
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(item, digits) for item in value]
    return value


def api_quality(quality: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gate's verdict as the API sends it: each check named by what it measures.

    ``has_tissue_pixels``: enough pixels (``tissue_fraction``) are neither glass nor black, by
    luminosity alone, whatever their colour; ``he_colours``: those pixels' colours lie in the
    haematoxylin/eosin range; ``has_texture``: tissue texture. ``is_tissue`` and
    ``looks_like_he`` are the same values under their old, deprecated names.

    Examples
    --------
    >>> q = api_quality({"tissue_fraction": 0.9, "is_tissue": True, "looks_like_he": False,
    ...                  "reason": "not H&E"})
    >>> q["has_tissue_pixels"], q["he_colours"], q["is_tissue"]
    (True, False, True)
    """
    if quality is None:
        return None
    out: dict[str, Any] = {}
    for key, value in quality.items():
        if key in RENAMED:
            out[RENAMED[key]] = value
        else:
            out[key] = value
    for key in DEPRECATED:  # the old names last: a reader sees the new ones first
        if key in quality:
            out[key] = quality[key]
    return out
