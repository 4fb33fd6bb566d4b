"""Stain augmentation for training: perturb H&E concentrations (Tellez et al.) or jitter HED.

Both functions take one uint8 image or a batch (numpy or torch, any device), draw one set of
random factors per image from the caller's generator (``int`` seed, ``numpy.random.Generator`` or
``torch.Generator``; factors are drawn on the generator's device, so a given seed gives the same
factors for numpy and torch input), and return the same type, shape and dtype. Only the stain
amounts change: what the stain model does not explain (the OD residual) is kept, so zero
perturbation gives the input back, and background pixels are left as they are by default.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from breastpath.errors import StainError
from breastpath.stain import _backend, _ops
from breastpath.stain._backend import Ops
from breastpath.stain._coding import RUIFROK_HE, nn_lasso2

#: Ruifrok & Johnston hematoxylin, eosin and DAB OD vectors (rows, unit norm), as scikit-image.
RUIFROK_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RUIFROK_HED = RUIFROK_HED / np.linalg.norm(RUIFROK_HED, axis=1, keepdims=True)

Rng = int | np.random.Generator | Any | None


def draw_uniform(rng: Rng, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform [0, 1) numbers from an int seed, a numpy Generator, a torch.Generator, or None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(rng, torch.Generator):
        return torch.rand(shape, generator=rng, device=rng.device).cpu().numpy()
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return generator.random(shape, dtype=np.float32)


def _factors(rng: Rng, n: int, k: int, sigma_alpha: float, sigma_beta: float) -> np.ndarray:
    if sigma_alpha < 0 or sigma_beta < 0:
        raise StainError("augmentation strengths must be non-negative")
    u = draw_uniform(rng, (n, 2, k)).astype(np.float32) * 2.0 - 1.0
    return np.stack([1.0 + sigma_alpha * u[:, 0], sigma_beta * u[:, 1]], axis=1)  # (n, 2, k)


def _apply(
    images: Any,
    perturb: Any,
    *,
    luminosity_threshold: float,
    preserve_background: bool,
    background_luminosity: float,
) -> Any:
    """Run ``perturb(xp, rgb (N, P, 3), od (N, 3, P), tissue) -> new od`` on a batch."""
    batch, restore = _backend.as_batch(images)
    n, height, width = batch.shape[:3]
    if n == 0 or height * width == 0:
        return images
    xp = _backend.ops_for(batch)
    rgb = batch.reshape(n, height * width, 3)
    with np.errstate(all="ignore"):
        lum = _ops.luminance(xp, rgb)
        tissue = lum < _ops.luminance_threshold(luminosity_threshold)
        od = _ops.rgb_to_od(xp, rgb)
        new = _ops.od_to_rgb(xp, xp.clip(perturb(xp, rgb, od, tissue), 0.0))
        if preserve_background:
            new = _ops.keep_background(
                xp, new, rgb, lum, luminosity_threshold, background_luminosity
            )
    return restore(new.reshape(batch.shape))


def stain_augment(
    images: Any,
    *,
    rng: Rng = None,
    sigma_alpha: float = 0.2,
    sigma_beta: float = 0.2,
    method: str = "vahadane",
    luminosity_threshold: float = 0.8,
    preserve_background: bool = True,
    background_luminosity: float = 0.95,
    **extractor_options: Any,
) -> Any:
    """Tellez-style H&E augmentation: scale and shift each stain's concentrations per image.

    Each image is unmixed into hematoxylin and eosin with its own stain matrix (``method``
    ``"vahadane"`` or ``"macenko"``, or the fixed Ruifrok vectors with ``"ruifrok"``); then every
    stain's concentration ``c`` becomes ``alpha * c + beta`` with
    ``alpha ~ U(1 - sigma_alpha, 1 + sigma_alpha)`` and ``beta ~ U(-sigma_beta, sigma_beta)``
    (OD units), drawn per image and stain, as staintools' ``StainAugmentor``. Images whose stains
    cannot be separated (no tissue, a single colour) come back unchanged.

    Parameters
    ----------
    images
        ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8, numpy or torch.
    rng
        ``int`` seed, ``numpy.random.Generator`` or ``torch.Generator`` (its state advances, so
        pass the same generator for every batch of an epoch); ``None`` draws fresh entropy.
    sigma_alpha, sigma_beta
        Strength of the multiplicative and additive perturbation (0.2 and 0.2, as staintools).
    method
        How each image's stain matrix is found: ``"vahadane"``, ``"macenko"`` or ``"ruifrok"``.
    luminosity_threshold, preserve_background, background_luminosity
        Tissue and background, as for :class:`~breastpath.stain.StainNormalizer`.
    **extractor_options
        Options of the stain-matrix normalizer (``n_samples``, ``seed``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain import stain_augment
    >>> batch = np.random.default_rng(0).integers(60, 200, (4, 32, 32, 3), dtype=np.uint8)
    >>> stain_augment(batch, rng=0, method="ruifrok").shape
    (4, 32, 32, 3)
    """
    method = method.lower()
    if method not in ("vahadane", "macenko", "ruifrok"):
        raise StainError(f"unknown stain augmentation method {method!r}")

    def perturb(xp: Ops, rgb: Any, od: Any, tissue: Any) -> Any:
        count = rgb.shape[0]
        factors = xp.from_numpy(_factors(rng, count, 2, sigma_alpha, sigma_beta))
        stains = xp.asarray(RUIFROK_HE)[None] + xp.zeros((count, 2, 3))
        ok = xp.ones_bool((count,))
        if method != "ruifrok":
            from breastpath.stain import get_normalizer
            from breastpath.stain.separation import StainMatrixNormalizer, usable

            normalizer = get_normalizer(
                method, luminosity_threshold=luminosity_threshold, **extractor_options
            )
            assert isinstance(normalizer, StainMatrixNormalizer)  # vahadane and macenko are
            _, _, valid, sample = normalizer._analyse(xp, rgb, tissue, normalizer.n_samples)
            ok = usable(xp, sample, valid)
            stains, ok = normalizer._fallback(xp, normalizer._stain_matrices(xp, sample, valid), ok)
        conc = nn_lasso2(xp, stains, od, 0.01)  # (N, 2, P)
        change = conc * (factors[:, 0, :, None] - 1.0) + factors[:, 1, :, None]
        new = od + _ops.combine(xp, change, stains.swapaxes(1, 2))
        return xp.where(ok[:, None, None], new, od)

    return _apply(
        images,
        perturb,
        luminosity_threshold=luminosity_threshold,
        preserve_background=preserve_background,
        background_luminosity=background_luminosity,
    )


def hed_jitter(
    images: Any,
    *,
    rng: Rng = None,
    alpha: float = 0.05,
    beta: float = 0.05,
    luminosity_threshold: float = 0.8,
    preserve_background: bool = True,
    background_luminosity: float = 0.95,
) -> Any:
    """Simple HED jitter: scale and shift the fixed Ruifrok H, E and DAB channels per image.

    The OD is unmixed with the 3x3 Ruifrok HED matrix, each channel ``h`` becomes
    ``a * h + b`` with ``a ~ U(1 - alpha, 1 + alpha)`` and ``b ~ U(-beta, beta)`` (OD units), and
    the image is mixed back.

    Parameters
    ----------
    images
        ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8, numpy or torch.
    rng
        ``int`` seed, ``numpy.random.Generator`` or ``torch.Generator``; ``None``: fresh entropy.
    alpha, beta
        Strength of the multiplicative and additive jitter of each HED channel.
    luminosity_threshold, preserve_background, background_luminosity
        Tissue and background, as for :class:`~breastpath.stain.StainNormalizer`.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain import hed_jitter
    >>> image = np.random.default_rng(0).integers(60, 200, (32, 32, 3), dtype=np.uint8)
    >>> bool((hed_jitter(image, rng=0, alpha=0.0, beta=0.0) == image).all())
    True
    """
    mix = RUIFROK_HED.astype(np.float32)
    unmix = np.linalg.inv(RUIFROK_HED).astype(np.float32)

    def perturb(xp: Ops, rgb: Any, od: Any, tissue: Any) -> Any:
        factors = xp.from_numpy(_factors(rng, rgb.shape[0], 3, alpha, beta))
        hed = _ops.combine(xp, od, xp.from_numpy(unmix.T))  # (N, 3, P): H, E, DAB
        change = hed * (factors[:, 0, :, None] - 1.0) + factors[:, 1, :, None]
        return od + _ops.combine(xp, change, xp.from_numpy(mix.T))

    return _apply(
        images,
        perturb,
        luminosity_threshold=luminosity_threshold,
        preserve_background=preserve_background,
        background_luminosity=background_luminosity,
    )
