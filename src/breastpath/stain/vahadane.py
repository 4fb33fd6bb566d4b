"""Vahadane stain normalization with a fast, batched sparse non-negative dictionary learner.

Vahadane et al. (2016) find the stain matrix by sparse non-negative matrix factorisation of the
optical density of tissue pixels::

    min_{S, C}  1/n sum_i  0.5 ||x_i - c_i S||^2 + lambda ||c_i||_1
    subject to  S >= 0, C >= 0, ||s_k|| <= 1   (two atoms s_k, the rows of S)

staintools solves it with SPAMS' online dictionary learning (about a second per image, one image
at a time). Here it is solved per image on a seeded sample of tissue pixels by alternating exact
steps, for a whole batch of images at once, in numpy or torch:

* concentrations: the 2-variable non-negative lasso in closed form for every pixel;
* stain matrix: one block-coordinate step per atom on the sufficient statistics
  ``C^T C`` (2x2) and ``C^T X`` (2x3), projected onto ``{s >= 0, ||s|| <= 1}``
  (the dictionary update of Mairal et al. 2010).

Both factors stay non-negative throughout. Atoms start from the Ruifrok H&E vectors, iterations
stop when no atom moves more than ``tol``, and the rows are ordered hematoxylin first (the larger
red OD, as in staintools) and scaled to unit norm.
"""

from __future__ import annotations

from typing import Any

from breastpath.errors import StainError
from breastpath.stain._backend import Ops
from breastpath.stain._coding import RUIFROK_HE, nn_lasso2, nn_lasso2_parts
from breastpath.stain.separation import StainMatrixNormalizer

_CHECK_EVERY = 5  # convergence test interval (a device sync on torch)


def learn_stain_matrix(
    xp: Ops,
    od: Any,
    valid: Any,
    *,
    regularizer: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> Any:
    """Sparse non-negative dictionary learning with two atoms, batched over images.

    Parameters
    ----------
    xp
        Backend from :func:`breastpath.stain._backend.ops_for`.
    od
        Planar OD samples ``(N, 3, S)`` float32, one set of samples per image.
    valid
        ``(N, S)`` bool, which samples are real (others are ignored).
    regularizer
        The sparsity weight ``lambda`` (0.1 in Vahadane et al. and staintools).
    max_iter, tol
        At most ``max_iter`` alternations; stop once no atom entry moves more than ``tol``.

    Returns
    -------
    ``(N, 2, 3)`` stain matrices, rows hematoxylin then eosin, non-negative, unit norm.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain._backend import NumpyOps
    >>> rng = np.random.default_rng(0)
    >>> truth = np.array([[0.6, 0.75, 0.28], [0.1, 0.95, 0.3]])
    >>> truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    >>> conc = rng.exponential(0.5, (2000, 2)) * (rng.random((2000, 2)) < 0.7)
    >>> od = (conc @ truth).T.astype(np.float32)[None]
    >>> found = learn_stain_matrix(NumpyOps(), od, np.ones((1, 2000), bool))
    >>> bool(np.all(np.abs(found[0] - truth) < 0.05))
    True
    """
    x = od * xp.float(valid)[:, None, :]  # padded samples become 0 and get 0 concentrations
    result = xp.asarray(RUIFROK_HE)[None] + xp.zeros((od.shape[0], 2, 3))
    rows = xp.arange(od.shape[0])  # images still moving; converged ones are set aside
    stains = previous = result
    for step in range(max_iter):
        stains = _step(xp, stains, x, regularizer)
        if (step + 1) % _CHECK_EVERY == 0 or step + 1 == max_iter:
            moved = xp.amax(abs(stains - previous).reshape(-1, 6), 1)
            result[rows] = stains
            moving = xp.nonzero(moved > tol * _CHECK_EVERY)[0]
            if moving.shape[0] == 0:
                break
            if moving.shape[0] < rows.shape[0]:  # drop converged images from the work
                rows, x, stains = rows[moving], x[moving], stains[moving]
            previous = stains
    stains = result
    hema_first = stains[:, 0, 0] >= stains[:, 1, 0]
    stains = xp.where(hema_first[:, None, None], stains, stains[:, [1, 0]])
    norm = xp.sqrt((stains * stains).sum(2))
    return stains / xp.clip(norm, 1e-12)[..., None]


def _step(xp: Ops, stains: Any, x: Any, regularizer: float) -> Any:
    """One alternation: exact sparse codes, then one projected update of each atom."""
    c1, c2 = nn_lasso2_parts(xp, stains, x, regularizer)
    a11, a12, a22 = (c1 * c1).sum(1), (c1 * c2).sum(1), (c2 * c2).sum(1)  # C^T C
    b1 = (c1[:, None, :] * x).sum(2)  # C^T X, (N, 3) per atom
    b2 = (c2[:, None, :] * x).sum(2)
    s1, s2 = stains[:, 0], stains[:, 1]
    s1 = _update_atom(xp, s1, (b1 - a11[:, None] * s1 - a12[:, None] * s2), a11)
    s2 = _update_atom(xp, s2, (b2 - a12[:, None] * s1 - a22[:, None] * s2), a22)
    return xp.stack([s1, s2], axis=1)


def _update_atom(xp: Ops, atom: Any, gradient: Any, weight: Any) -> Any:
    """One projected block-coordinate step for an atom (kept when the atom is unused)."""
    moved = xp.clip(atom + gradient / xp.clip(weight, 1e-12)[:, None], 0.0)
    norm = xp.sqrt((moved * moved).sum(1))
    moved = moved / xp.clip(norm, 1.0)[:, None]
    return xp.where((weight > 1e-8)[:, None], moved, atom)


class VahadaneNormalizer(StainMatrixNormalizer):
    """Vahadane (structure-preserving) stain normalization, fast and batched.

    Parameters
    ----------
    regularizer
        Sparsity ``lambda`` of the dictionary learning (0.1).
    concentration_regularizer
        ``lambda`` of the non-negative lasso for concentrations (0.01, as staintools).
    max_iter, tol
        Dictionary-learning iterations and stopping tolerance.
    **options
        ``percentile``, ``n_samples``, ``seed``, ``luminosity_threshold``,
        ``preserve_background``, ``background_luminosity``, ``device``: see
        :class:`~breastpath.stain.separation.StainMatrixNormalizer`. Stain matrices are learnt
        from ``n_samples`` tissue pixels per image, picked by ``seed``; all pixels are
        transformed.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain import get_normalizer
    >>> rng = np.random.default_rng(0)
    >>> conc = rng.exponential(0.4, (96 * 96, 2))
    >>> he = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    >>> tile = (256 * np.exp(-conc @ he) - 1).clip(0, 255).astype(np.uint8).reshape(96, 96, 3)
    >>> normalizer = get_normalizer("vahadane", seed=0).fit(tile)
    >>> normalizer.stain_matrix.shape
    (2, 3)
    >>> normalizer.transform(tile).shape
    (96, 96, 3)
    """

    method = "vahadane"

    def __init__(
        self,
        *,
        regularizer: float = 0.1,
        concentration_regularizer: float = 0.01,
        max_iter: int = 100,
        tol: float = 1e-4,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if regularizer < 0 or concentration_regularizer < 0:
            raise StainError("regularizers must be non-negative")
        if int(max_iter) < 1:
            raise StainError(f"max_iter must be at least 1, got {max_iter}")
        self.regularizer = float(regularizer)
        self.concentration_regularizer = float(concentration_regularizer)
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def get_options(self) -> dict[str, Any]:
        return {
            **super().get_options(),
            "regularizer": self.regularizer,
            "concentration_regularizer": self.concentration_regularizer,
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    def _stain_matrices(self, xp: Ops, od: Any, valid: Any) -> Any:
        return learn_stain_matrix(
            xp, od, valid, regularizer=self.regularizer, max_iter=self.max_iter, tol=self.tol
        )

    def _concentrations(self, xp: Ops, od: Any, stains: Any) -> Any:
        return nn_lasso2(xp, stains, od, self.concentration_regularizer)
