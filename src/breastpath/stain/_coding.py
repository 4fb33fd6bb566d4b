"""Stain concentrations for two stains, in closed form and batched (numpy or torch).

With two stains the per-pixel problems are 2-variable quadratic programs, so they are solved
exactly for every pixel at once instead of with an iterative solver:

* :func:`lstsq2`: unconstrained least squares (Macenko, as torchstain).
* :func:`nn_lasso2`: non-negative lasso ``min_c 0.5 ||x - c D||^2 + lam * sum(c)``, ``c >= 0``
  (Vahadane, the problem ``spams.lasso(..., mode=2, pos=True)`` solves in staintools), by
  enumerating the KKT cases: both stains active, only the first, only the second, none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastpath.stain._backend import Ops

#: Ruifrok & Johnston (2001) hematoxylin and eosin OD vectors, unit norm (rows H, E).
RUIFROK_HE = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
RUIFROK_HE = RUIFROK_HE / np.linalg.norm(RUIFROK_HE, axis=1, keepdims=True)

_TINY = 1e-12


def _gram(xp: Ops, stains: Any, od: Any) -> tuple[Any, Any, Any, Any, Any]:
    s1, s2 = stains[:, 0], stains[:, 1]
    g11 = xp.clip((s1 * s1).sum(1), _TINY)[:, None]
    g12 = (s1 * s2).sum(1)[:, None]
    g22 = xp.clip((s2 * s2).sum(1), _TINY)[:, None]
    return g11, g12, g22, _project(od, s1), _project(od, s2)


def _project(od: Any, stain: Any) -> Any:
    """Each pixel's OD (N, 3, M) projected on one stain vector per image (N, 3) -> (N, M)."""
    return (
        od[:, 0] * stain[:, 0, None] + od[:, 1] * stain[:, 1, None] + od[:, 2] * stain[:, 2, None]
    )


def lstsq2(xp: Ops, stains: Any, od: Any) -> Any:
    """Least-squares concentrations of planar ``od`` (N, 3, M) on ``stains`` (N, 2, 3).

    Returns planar concentrations ``(N, 2, M)``.
    """
    g11, g12, g22, b1, b2 = _gram(xp, stains, od)
    det = xp.clip(g11 * g22 - g12 * g12, _TINY)
    return xp.stack([(g22 * b1 - g12 * b2) / det, (g11 * b2 - g12 * b1) / det], axis=1)


def nn_lasso2_parts(xp: Ops, stains: Any, od: Any, lam: float) -> tuple[Any, Any]:
    """Non-negative lasso concentrations, returned as the two (N, M) stain planes.

    With ``a`` the unconstrained solution and ``s_k`` the best value of stain ``k`` alone, the
    optimum is ``(a1, a2)`` when both are positive; otherwise, if ``a2 <= 0`` it is ``(s1, 0)``
    and if ``a1 <= 0`` it is ``(0, s2)`` (both at once only when ``s1 = s2 = 0``). These follow
    from the KKT conditions whenever the Gram matrix is positive definite.
    """
    g11, g12, g22, b1, b2 = _gram(xp, stains, od)
    if lam:
        b1, b2 = b1 - lam, b2 - lam
    det = xp.clip(g11 * g22 - g12 * g12, _TINY)
    k11, k12, k22 = g22 / det, g12 / det, g11 / det  # inverse Gram matrix, per image
    a1 = k11 * b1 - k12 * b2
    a2 = k22 * b2 - k12 * b1
    s1 = xp.clip(b1, 0.0) * (1.0 / g11)
    s2 = xp.clip(b2, 0.0) * (1.0 / g22)
    c1 = xp.where(a2 > 0, xp.clip(a1, 0.0), s1)
    c2 = xp.where(a1 > 0, xp.clip(a2, 0.0), s2)
    return c1, c2


def nn_lasso2(xp: Ops, stains: Any, od: Any, lam: float) -> Any:
    """Non-negative lasso concentrations of planar ``od`` (N, 3, M) on ``stains`` (N, 2, 3).

    Returns planar concentrations ``(N, 2, M)``.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain._backend import NumpyOps
    >>> d = RUIFROK_HE[None].astype(np.float32)
    >>> x = (np.array([[0.5, 0.2]], np.float32) @ d[0]).T[None]
    >>> np.round(nn_lasso2(NumpyOps(), d, x, 0.0), 3)[0, :, 0]
    array([0.5, 0.2], dtype=float32)
    """
    c1, c2 = nn_lasso2_parts(xp, stains, od, lam)
    return xp.stack([c1, c2], axis=1)
