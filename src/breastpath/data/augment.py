"""Batch augmentation on tensors: flips, 90-degree rotations and a small colour jitter.

All randomness comes from a ``torch.Generator`` the caller owns, so runs are reproducible.
Histology has no canonical orientation, so the eight dihedral transforms are label-preserving.
"""

from __future__ import annotations

import torch

from breastpath.data.transforms import to_model_input

__all__ = [
    "BACKGROUND_KINDS",
    "GLASS_RGB",
    "add_background",
    "augment_batch",
    "background_frames",
    "color_jitter",
    "negative_class_of",
    "random_dihedral",
    "to_model_input",
    "white_bands",
]


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 flips/rotations to each image of an NCHW batch (square images)."""
    n = x.shape[0]
    choice = torch.randint(0, 8, (n,), generator=generator, device="cpu").to(x.device)
    flipped = torch.where((choice >= 4).view(n, 1, 1, 1), x.flip(-1), x)
    if x.shape[-1] != x.shape[-2]:
        return torch.where((choice % 2 == 1).view(n, 1, 1, 1), flipped.flip(-2), flipped)
    out = flipped.clone()
    for k in (1, 2, 3):
        mask = (choice % 4) == k
        if bool(mask.any()):
            out[mask] = torch.rot90(flipped[mask], k, dims=(-2, -1))
    return out


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` luminance (ITU-R 601 weights) of a float NCHW RGB batch."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def color_jitter(x: torch.Tensor, generator: torch.Generator, *, strength: float) -> torch.Tensor:
    """Random brightness, contrast and saturation in ``[1 - strength, 1 + strength]``.

    ``x`` is a float NCHW batch in [0, 1] (before mean/std normalisation).
    """
    if strength <= 0:
        return x
    n = x.shape[0]

    def factors() -> torch.Tensor:
        u = torch.rand((n, 1, 1, 1), generator=generator, device="cpu").to(x.device)
        return 1.0 + (2.0 * u - 1.0) * strength

    x = x * factors()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors() + mean
    gray = _luminance(x)
    x = (x - gray) * factors() + gray
    return x.clamp_(0.0, 1.0)


def random_grayscale(
    x: torch.Tensor, generator: torch.Generator, *, fraction: float
) -> torch.Tensor:
    """Replace about ``fraction`` of the images of a float NCHW batch in [0, 1] by their
    luminance (ITU-R 601 weights) in all three channels; the others are returned as they are.
    ``fraction`` 0 draws nothing from ``generator``.

    Examples
    --------
    >>> x = torch.rand((4, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    >>> grey = random_grayscale(x, torch.Generator().manual_seed(0), fraction=1.0)
    >>> bool((grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all())
    True
    >>> random_grayscale(x, torch.Generator(), fraction=0.0) is x
    True
    """
    if fraction <= 0:
        return x
    chosen = torch.rand((x.shape[0],), generator=generator, device="cpu") < fraction
    if not bool(chosen.any()):
        return x
    rows = chosen.to(x.device)
    return torch.where(rows.view(-1, 1, 1, 1), _luminance(x).expand_as(x), x)


def stain_perturb(
    images: torch.Tensor, *, method: str, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """H&E stain augmentation of a uint8 NHWC batch (on its device).

    ``"hed"``: a HED jitter of the fixed Ruifrok H, E and DAB channels
    (:func:`breastpath.stain.hed_jitter`, default strength 0.05); otherwise Tellez et al.'s
    per-image scaling and shift of the H and E concentrations with each image's stains found by
    ``method`` (:func:`breastpath.stain.stain_augment`, default strength 0.2). ``sigma`` 0 means
    the default.
    """
    import warnings

    from breastpath.stain import StainWarning, hed_jitter, stain_augment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StainWarning)
        if method == "hed":
            strength = sigma or 0.05
            return hed_jitter(images, rng=generator, alpha=strength, beta=strength)
        strength = sigma or 0.2
        return stain_augment(
            images, rng=generator, method=method, sigma_alpha=strength, sigma_beta=strength
        )


def augment_batch(
    images: torch.Tensor,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device | str,
    generator: torch.Generator,
    jitter: float = 0.05,
    stain: str = "none",
    stain_sigma: float = 0.0,
    grayscale: float = 0.0,
) -> torch.Tensor:
    """uint8 NHWC -> augmented, normalised float NCHW on ``device``.

    ``stain`` (``"none"``, ``"hed"``, ``"ruifrok"``, ``"macenko"``, ``"vahadane"``) adds H&E
    stain augmentation first (:func:`stain_perturb`); ``grayscale`` is the share of images
    turned grey after the colour jitter (:func:`random_grayscale`).
    """
    images = images.to(device, non_blocking=True)
    if stain != "none":
        images = stain_perturb(images, method=stain, sigma=stain_sigma, generator=generator)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    x = random_dihedral(x, generator)
    x = color_jitter(x, generator, strength=jitter)
    x = random_grayscale(x, generator, fraction=grayscale)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


#: RGB of blank glass in the IDC scans: the slide background around the tissue.
GLASS_RGB = (241, 235, 238)
#: Kinds of synthetic background frame, in the order :func:`background_frames` draws them.
BACKGROUND_KINDS = ("glass", "white", "black", "uniform")


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand((n,), generator=generator, device="cpu")


def background_frames(n: int, *, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """``n`` synthetic frames without tissue: a uint8 NHWC batch of shape ``(n, *size, 3)``.

    Each frame is one of :data:`BACKGROUND_KINDS`, drawn with equal chance: blank ``glass``
    (:data:`GLASS_RGB` shifted by up to 12 grey levels per channel), ``white`` (245–255),
    ``black`` (0–20), or ``uniform`` (any colour); then pixel noise of a random strength
    (standard deviation 0–6 grey levels) is added to three frames in four, the fourth stays
    exactly uniform. All randomness comes from ``generator``.

    Examples
    --------
    >>> frames = background_frames(4, size=(50, 50), generator=torch.Generator().manual_seed(0))
    >>> tuple(frames.shape), frames.dtype
    ((4, 50, 50, 3), torch.uint8)
    """
    height, width = size
    kind = torch.randint(0, len(BACKGROUND_KINDS), (n,), generator=generator, device="cpu")
    shift = (torch.rand((n, 3), generator=generator) * 2.0 - 1.0) * 12.0
    glass = torch.tensor(GLASS_RGB, dtype=torch.float32) + shift
    white = 245.0 + _uniform(n, generator)[:, None] * 10.0
    black = _uniform(n, generator)[:, None] * 20.0
    colour = torch.rand((n, 3), generator=generator) * 255.0
    base = torch.where((kind == 0)[:, None], glass, colour)
    base = torch.where((kind == 1)[:, None], white.expand(n, 3), base)
    base = torch.where((kind == 2)[:, None], black.expand(n, 3), base)
    sigma = _uniform(n, generator).view(n, 1, 1, 1) * 6.0
    # a quarter without noise: exactly uniform frames, such as a blank image or pure padding
    sigma = torch.where(_uniform(n, generator).view(n, 1, 1, 1) < 0.25, 0.0, sigma)
    noise = torch.randn((n, height, width, 3), generator=generator) * sigma
    frames = base.view(n, 1, 1, 3) + noise
    return frames.round_().clamp_(0.0, 255.0).to(torch.uint8)


def white_bands(
    images: torch.Tensor, *, fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """White bands at the bottom of a random ``fraction`` of a uint8 NHWC batch, as where
    an IDC patch was cut at the edge of the slide and padded (one draw per row).

    A band covers 2 to half of the image's rows, so the rest still shows the tissue that
    decides the label; the dihedral augmentation that follows moves it to any side.

    Examples
    --------
    >>> batch = torch.zeros((8, 50, 50, 3), dtype=torch.uint8)
    >>> out = white_bands(batch, fraction=1.0, generator=torch.Generator().manual_seed(0))
    >>> bool((out[:, -2:] == 255).all()), bool((out[:, :25] == 0).all())
    (True, True)
    """
    n, height = images.shape[0], images.shape[1]
    chosen = _uniform(n, generator) < fraction
    rows = 2 + (_uniform(n, generator) * max(height // 2 - 1, 1)).long()
    if not bool(chosen.any()):
        return images
    covered = torch.arange(height).view(1, height) >= (height - rows).view(n, 1)
    mask = (covered & chosen.view(n, 1)).to(images.device).view(n, height, 1, 1)
    return torch.where(mask, torch.full_like(images, 255), images)


def add_background(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    rows: slice,
    fraction: float,
    negative_class: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Background augmentation of a training batch: teach the model that no tissue is no cancer.

    Each row of the uint8 NHWC ``images`` is, with chance ``fraction``, replaced by a
    synthetic frame without tissue (:func:`background_frames`) labelled ``negative_class``;
    independently, with chance ``fraction``, it gets a white edge band (:func:`white_bands`,
    label kept, both classes: in the IDC sample, padded edge patches are almost all non-IDC,
    a cue the model should not learn). ``images`` may be the global batch of a DDP step, in
    which case ``targets`` are this process's rows ``rows`` of it; the draws are one per row
    of ``images``, in order, so every process draws the same.

    Returns
    -------
    (images, targets)
        The augmented batch (all of it) and this process's targets.
    """
    if fraction <= 0:
        return images, targets
    n = images.shape[0]
    blank = _uniform(n, generator) < fraction
    frames = background_frames(n, size=(images.shape[1], images.shape[2]), generator=generator)
    images = white_bands(images, fraction=fraction, generator=generator)
    images = torch.where(blank.to(images.device).view(n, 1, 1, 1), frames.to(images.device), images)
    ours = blank[rows].to(targets.device)
    return images, torch.where(ours, torch.full_like(targets, negative_class), targets)


def negative_class_of(class_names: list[str], cancer_classes: list[int]) -> int:
    """The one class that is not cancer, which background frames are labelled with.

    Raises :class:`~breastpath.errors.ConfigError` when the task has none or several.

    Examples
    --------
    >>> negative_class_of(["non-IDC", "IDC"], [1])
    0
    """
    from breastpath.errors import ConfigError

    others = [i for i in range(len(class_names)) if i not in set(cancer_classes)]
    if len(others) != 1:
        raise ConfigError(
            "background augmentation needs a task with exactly one non-cancer class, "
            f"got {len(others)} ({', '.join(class_names[i] for i in others) or 'none'})"
        )
    return others[0]
