"""Stain normalization and stain augmentation for H&E images.

Three normalizers behind one interface (:class:`StainNormalizer`: ``fit`` a target, ``transform``
images, ``to_dict`` / ``from_dict`` to store the fitted target in a checkpoint), built by name::

    >>> import numpy as np
    >>> from breastpath.stain import get_normalizer, StainNormalizer
    >>> rng = np.random.default_rng(0)
    >>> he = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    >>> tile = (256 * np.exp(-rng.exponential(0.4, (64 * 64, 2)) @ he) - 1)
    >>> tile = tile.clip(0, 255).astype(np.uint8).reshape(64, 64, 3)
    >>> normalizer = get_normalizer("vahadane").fit(tile)
    >>> again = StainNormalizer.from_dict(normalizer.to_dict())
    >>> bool((again.transform(tile) == normalizer.transform(tile)).all())
    True

Every function takes one ``(H, W, 3)`` uint8 image or an ``(N, H, W, 3)`` batch, as a numpy array
or a torch tensor (which stays on its device, CUDA included), and returns the same kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from breastpath.errors import StainError
from breastpath.stain.augment import hed_jitter, stain_augment
from breastpath.stain.base import StainNormalizer, StainWarning
from breastpath.stain.macenko import MacenkoNormalizer
from breastpath.stain.reinhard import ReinhardNormalizer
from breastpath.stain.separation import StainMatrixNormalizer
from breastpath.stain.vahadane import VahadaneNormalizer

#: Registry: method name -> normalizer class.
NORMALIZERS: dict[str, type[StainNormalizer]] = {
    "reinhard": ReinhardNormalizer,
    "macenko": MacenkoNormalizer,
    "vahadane": VahadaneNormalizer,
}

#: Methods that have a stain matrix (for :func:`extract_stain_matrix`).
STAIN_MATRIX_METHODS = ("vahadane", "macenko")


def available_normalizers() -> list[str]:
    """Names accepted by :func:`get_normalizer`, sorted."""
    return sorted(NORMALIZERS)


def get_normalizer(name: str, *, seed: int | None = None, **options: Any) -> StainNormalizer:
    """Create an unfitted normalizer by name (``"reinhard"``, ``"macenko"`` or ``"vahadane"``).

    Options are the class's keyword arguments (e.g. ``n_samples``, ``preserve_background``,
    ``device``). ``seed`` seeds the pixel sample of the methods that draw one (Macenko,
    Vahadane); Reinhard uses every tissue pixel, so it has nothing to seed. Raises
    :class:`~breastpath.errors.StainError` for an unknown name, listing the choices.

    Examples
    --------
    >>> from breastpath.stain import get_normalizer
    >>> get_normalizer("Macenko", alpha=1.0).method
    'macenko'
    """
    key = str(name).strip().lower()
    if key not in NORMALIZERS:
        choices = ", ".join(available_normalizers())
        raise StainError(f"unknown stain normalizer {name!r}; choose one of: {choices}")
    cls = NORMALIZERS[key]
    if seed is not None and issubclass(cls, StainMatrixNormalizer):
        options["seed"] = seed
    return cls(**options)


def normalizer_from_dict(data: dict[str, Any], *, device: Any = None) -> StainNormalizer:
    """Rebuild a fitted normalizer from :meth:`StainNormalizer.to_dict` output."""
    return StainNormalizer.from_dict(data, device=device)


def read_target_file(path: str | Path, *, device: Any = None) -> StainNormalizer | None:
    """The fitted normalizer saved as JSON by ``breastpath stain fit`` (or
    :meth:`StainNormalizer.to_dict`), ``None`` when the JSON is something else (a checkpoint's,
    say); :class:`~breastpath.errors.StainError` when the file is missing or unreadable."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StainError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "breastpath.stain":
        return None
    return normalizer_from_dict(data, device=device)


def load_target_file(path: str | Path, *, device: Any = None) -> StainNormalizer:
    """:func:`read_target_file`, with :class:`~breastpath.errors.StainError` when the file is
    not a stain target."""
    normalizer = read_target_file(path, device=device)
    if normalizer is None:
        raise StainError(f"{path}: not a stain target (breastpath stain fit writes one)")
    return normalizer


def extract_stain_matrix(image: Any, *, method: str = "vahadane", **options: Any) -> np.ndarray:
    """The stain matrix of one image: (2, 3) float, rows hematoxylin then eosin, unit-norm OD.

    A batch ``(N, H, W, 3)`` gives ``(N, 2, 3)``. Raises
    :class:`~breastpath.errors.StainError` when an image has too little tissue or one colour.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain import extract_stain_matrix
    >>> rng = np.random.default_rng(0)
    >>> he = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    >>> tile = (256 * np.exp(-rng.exponential(0.4, (64 * 64, 2)) @ he) - 1)
    >>> tile = tile.clip(0, 255).astype(np.uint8).reshape(64, 64, 3)
    >>> extract_stain_matrix(tile, method="macenko").shape
    (2, 3)
    """
    key = str(method).strip().lower()
    if key not in STAIN_MATRIX_METHODS:
        raise StainError(
            f"unknown stain matrix method {method!r}; choose one of: "
            + ", ".join(STAIN_MATRIX_METHODS)
        )
    normalizer = get_normalizer(key, **options)
    assert isinstance(normalizer, StainMatrixNormalizer)
    return normalizer.extract(image)


__all__ = [
    "NORMALIZERS",
    "MacenkoNormalizer",
    "ReinhardNormalizer",
    "StainError",
    "StainMatrixNormalizer",
    "StainNormalizer",
    "StainWarning",
    "VahadaneNormalizer",
    "available_normalizers",
    "extract_stain_matrix",
    "get_normalizer",
    "hed_jitter",
    "load_target_file",
    "normalizer_from_dict",
    "read_target_file",
    "stain_augment",
]
