"""Knowledge distillation: a trained teacher's softened probabilities as extra targets.

Hinton, Vinyals & Dean (2015): the student minimises

    (1 - w) * CE(labels, student) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with ``w = config.distill.weight`` and ``T = config.distill.temperature``. The teacher scores
the *same augmented batch* the student sees ("a good teacher is patient and consistent", Beyer
et al. 2022): its targets follow every flip and colour change, which a table of precomputed
teacher scores could not. The teacher keeps its own normalisation and working size, so a
transfer network at 64 px (ImageNet mean/std) can teach CancerNet at 50 px (the data's). Several
teachers teach as one ensemble: the mean of their softened probabilities is the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from breastpath.checkpoint import Checkpoint, build_model, load_checkpoint
from breastpath.errors import ConfigError

__all__ = ["Teacher", "distill_loss_sum"]


@dataclass
class _Member:
    model: nn.Module
    mean: torch.Tensor  # (1, 3, 1, 1): this teacher's own input normalisation
    std: torch.Tensor


@dataclass
class Teacher:
    """One or several frozen checkpoints that score training batches for the student; several
    teach as one ensemble (their softened probabilities averaged)."""

    members: list[_Member]

    @classmethod
    def load(
        cls,
        names_or_paths: Sequence[str | Path],
        *,
        class_names: list[str],
        image_size: tuple[int, int],
        stain: dict[str, Any] | None,
        device: torch.device,
    ) -> Teacher:
        """Load the teachers; :class:`ConfigError` when one does not fit the student's data
        (other classes, image size or stain target)."""
        if not names_or_paths:
            raise ConfigError("distillation needs at least one teacher")
        members = []
        for name in names_or_paths:
            checkpoint = load_checkpoint(name)
            _check_fits(checkpoint, class_names=class_names, image_size=image_size, stain=stain)
            model = build_model(checkpoint, tta="none").to(device).eval()
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            meta = checkpoint.meta
            members.append(
                _Member(
                    model=model.to(memory_format=torch.channels_last),
                    mean=torch.tensor(meta.mean, device=device).view(1, 3, 1, 1),
                    std=torch.tensor(meta.std, device=device).view(1, 3, 1, 1),
                )
            )
        return cls(members=members)

    @torch.no_grad()
    def probabilities(
        self, x: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """The mean over teachers of ``softmax(teacher(x) / temperature)`` for a batch ``x``
        normalised with the student's ``mean``/``std`` (3 values each), re-normalised to each
        teacher's own."""
        pixels = x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
        total = torch.zeros((), device=x.device)
        for member in self.members:
            inputs = (pixels - member.mean) / member.std
            logits = member.model(inputs.contiguous(memory_format=torch.channels_last))
            total = total + torch.softmax(logits.float() / temperature, dim=1)
        return total / len(self.members)


def _check_fits(
    checkpoint: Checkpoint,
    *,
    class_names: list[str],
    image_size: tuple[int, int],
    stain: dict[str, Any] | None,
) -> None:
    meta = checkpoint.meta
    if list(meta.class_names) != list(class_names):
        raise ConfigError(
            f"teacher {checkpoint.path}: classes {list(meta.class_names)} differ from the "
            f"data's {list(class_names)}"
        )
    if tuple(meta.input_size) != tuple(image_size):
        raise ConfigError(
            f"teacher {checkpoint.path}: input size {list(meta.input_size)} differs from the "
            f"data's {list(image_size)}"
        )
    if (meta.stain or None) != (stain or None):
        raise ConfigError(
            f"teacher {checkpoint.path}: trained on another stain normalization than the data"
        )


def distill_loss_sum(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` at temperature ``T``, summed over the batch (the
    ``T^2`` keeps its gradients on the scale of the cross-entropy's, as in Hinton et al.).

    Examples
    --------
    >>> logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    >>> probs = torch.softmax(logits / 2.0, dim=1)
    >>> float(distill_loss_sum(logits, probs, temperature=2.0)) < 1e-6
    True
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="sum") * temperature**2
