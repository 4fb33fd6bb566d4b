"""An exponential moving average (EMA) of the weights, kept beside the model being trained.

``optim.ema_half_life`` gives the average's memory in epochs, not in steps, so a recipe means
the same on a 4% sample and on the full set: after ``h`` epochs a step's weight in the average
has halved. The average covers the batch-norm statistics too (torch's
:class:`~torch.optim.swa_utils.AveragedModel` with ``use_buffers=True``), so it can be validated
and served as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay(half_life_epochs: float, *, steps_per_epoch: int) -> float:
    """The per-step decay whose weight halves after ``half_life_epochs`` epochs.

    >>> round(ema_decay(1.0, steps_per_epoch=100), 6)
    0.993092
    >>> round(ema_decay(1.0, steps_per_epoch=100) ** 100, 6)
    0.5
    """
    if half_life_epochs <= 0 or steps_per_epoch < 1:
        raise ValueError("half_life_epochs must be > 0 and steps_per_epoch >= 1")
    return float(0.5 ** (1.0 / (half_life_epochs * steps_per_epoch)))


def make_ema(
    model: nn.Module, *, half_life_epochs: float, steps_per_epoch: int
) -> AveragedModel | None:
    """The averaged copy of ``model`` (``None`` when ``half_life_epochs`` is 0: no EMA).

    Its first :meth:`~torch.optim.swa_utils.AveragedModel.update_parameters` copies the model;
    each later one moves the average towards the model by ``1 - decay``.
    """
    if half_life_epochs == 0:
        return None
    decay = ema_decay(half_life_epochs, steps_per_epoch=steps_per_epoch)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def restore_ema(ema: AveragedModel, state: dict[str, torch.Tensor]) -> None:
    """Load averaged weights saved from ``ema.module`` and mark the average as started."""
    ema.module.load_state_dict(state)
    ema.n_averaged.fill_(max(int(ema.n_averaged), 1))
