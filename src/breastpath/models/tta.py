"""Test-time augmentation: average a model's probabilities over flips and rotations.

Histology has no canonical orientation, so the 8 dihedral transforms of a patch are equally
valid views. :class:`TestTimeAugmentation` returns the log of the mean softmax over the views;
a softmax of its output is exactly the averaged probability, so it drops into anything that
applies a softmax to logits (the :class:`~breastpath.inference.predictor.Predictor`, evaluation).

A checkpoint whose metadata says ``"tta": "flips"`` or ``"dihedral"`` is wrapped by
:func:`breastpath.checkpoint.build_model`.
"""

from __future__ import annotations

import torch
from torch import nn

from breastpath.choices import TTA_MODES


def views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The augmented copies of an NCHW batch (1, 4 or 8 for ``none``, ``flips``,
    ``dihedral``): identity first; rotations only when square."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; use {', '.join(TTA_MODES)}")
    if mode == "none":
        return [x]
    out = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    if mode == "dihedral" and x.shape[-1] == x.shape[-2]:
        t = x.transpose(-1, -2)
        out += [t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2)]
    return out


class TestTimeAugmentation(nn.Module):
    """Wrap ``model`` so that it scores the mean over flipped/rotated views.

    Examples
    --------
    >>> import torch
    >>> body = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    >>> net = TestTimeAugmentation(body, mode="dihedral")
    >>> net(torch.rand(2, 3, 4, 4)).exp().sum(1).round(decimals=4).tolist()
    [1.0, 1.0]
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, model: nn.Module, *, mode: str = "dihedral") -> None:
        super().__init__()
        if mode not in TTA_MODES or mode == "none":
            raise ValueError(f"TTA mode must be flips or dihedral, got {mode!r}")
        self.model = model
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = None
        batches = views(x, self.mode)
        for view in batches:
            p = torch.softmax(self.model(view.contiguous()).float(), dim=1)
            probs = p if probs is None else probs + p
        assert probs is not None
        return torch.log((probs / len(batches)).clamp_min(1e-30))
