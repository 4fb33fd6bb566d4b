"""The regions that drive a slide's verdict: connected groups of called tiles, ranked.

A tile is *called* when it was scored and its probability is at or above the verdict rule's
tile threshold (the tiles the verdict counts). Called tiles that touch, sides or corners
(8-connectivity on the tile grid), form one region; regions are ranked by how many called tiles
they hold (their share of the extent), then by their highest probability.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]


def called_regions(
    tiles: Iterable[Mapping[str, Any]], *, threshold: float, limit: int = 10
) -> list[dict[str, Any]]:
    """The ``limit`` largest groups of called tiles.

    Parameters
    ----------
    tiles
        Tile records with ``row``, ``col``, ``x``, ``y``, ``size`` (level-0 pixels) and
        ``probability`` (None or NaN when the tile was not scored), as in ``tiles.csv``.
    threshold
        The verdict rule's tile threshold.

    Returns
    -------
    list of dict
        ``rank``, ``tiles``, ``mean`` and ``max`` probability, ``bbox`` ``[x0, y0, x1, y1]`` in
        level-0 pixels and its ``center``, largest first.

    Examples
    --------
    >>> t = [{"row": 0, "col": c, "x": 50 * c, "y": 0, "size": 50, "probability": p}
    ...      for c, p in enumerate([0.9, 0.8, 0.1, 0.7])]
    >>> [(r["tiles"], r["bbox"]) for r in called_regions(t, threshold=0.5)]
    [(2, [0, 0, 100, 50]), (1, [150, 0, 200, 50])]
    """
    called: dict[tuple[int, int], Mapping[str, Any]] = {}
    for tile in tiles:
        p = tile.get("probability")
        if p is not None and p == p and p >= threshold:  # p == p: not NaN
            called[(int(tile["row"]), int(tile["col"]))] = tile
    seen: set[tuple[int, int]] = set()
    groups = []
    for start in called:
        if start in seen:
            continue
        seen.add(start)
        stack, members = [start], []
        while stack:
            r, c = stack.pop()
            members.append(called[(r, c)])
            for dr, dc in NEIGHBOURS:
                key = (r + dr, c + dc)
                if key in called and key not in seen:
                    seen.add(key)
                    stack.append(key)
        groups.append(_describe(members))
    groups.sort(key=lambda g: (-g["tiles"], -g["max"], g["bbox"][1], g["bbox"][0]))
    for rank, group in enumerate(groups[:limit], start=1):
        group["rank"] = rank
    return groups[:limit]


def _describe(members: list[Mapping[str, Any]]) -> dict[str, Any]:
    probs = [float(t["probability"]) for t in members]
    x0 = min(int(t["x"]) for t in members)
    y0 = min(int(t["y"]) for t in members)
    x1 = max(int(t["x"]) + int(t["size"]) for t in members)
    y1 = max(int(t["y"]) + int(t["size"]) for t in members)
    return {
        "tiles": len(members),
        "mean": round(sum(probs) / len(probs), 4),
        "max": round(max(probs), 4),
        "bbox": [x0, y0, x1, y1],
        "center": [(x0 + x1) / 2, (y0 + y1) / 2],
    }
