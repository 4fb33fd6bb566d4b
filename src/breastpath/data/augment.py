"""Batch augmentation on tensors: flips, 90-degree rotations and a small colour jitter.

All randomness comes from a ``torch.Generator`` the caller owns, so runs are reproducible.
Histology has no canonical orientation, so the eight dihedral transforms are label-preserving.
"""

from __future__ import annotations

import torch

from breastpath.data.transforms import to_model_input

__all__ = ["augment_batch", "color_jitter", "random_dihedral", "to_model_input"]


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
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - gray) * factors() + gray
    return x.clamp_(0.0, 1.0)


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
) -> torch.Tensor:
    """uint8 NHWC -> augmented, normalised float NCHW on ``device``.

    ``stain`` (``"none"``, ``"hed"``, ``"ruifrok"``, ``"macenko"``, ``"vahadane"``) adds H&E
    stain augmentation first (:func:`stain_perturb`).
    """
    images = images.to(device, non_blocking=True)
    if stain != "none":
        images = stain_perturb(images, method=stain, sigma=stain_sigma, generator=generator)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    x = random_dihedral(x, generator)
    x = color_jitter(x, generator, strength=jitter)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)
