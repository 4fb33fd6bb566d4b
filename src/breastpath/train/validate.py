"""Validation during training, sharded over DDP ranks and gathered, so every rank agrees.

Each rank scores a contiguous shard of the validation rows
(:func:`breastpath.inference.batches.logits_rows`); every rank then computes the same
probabilities and the same loss from the gathered logits, so early stopping and checkpoint
decisions never diverge between ranks. In one process it is plain validation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from breastpath.inference.batches import logits_rows
from breastpath.inference.device import DistInfo


@torch.inference_mode()
def validate(
    model: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    batch_size: int,
    num_classes: int,
    weight: torch.Tensor | None = None,
    info: DistInfo | None = None,
) -> tuple[np.ndarray, float]:
    """Probabilities ``(len(rows), num_classes)`` (float64, row order) and the mean loss.

    The loss is the class-weighted mean cross-entropy over all of ``rows``:
    ``sum(w_y * loss) / sum(w_y)`` (``weight`` on ``device``; ``None``: unweighted).
    """
    logits = logits_rows(
        model,
        images,
        rows,
        mean=mean,
        std=std,
        device=device,
        batch_size=batch_size,
        num_classes=num_classes,
        info=info,
    )
    targets = torch.from_numpy(np.asarray(labels)[rows]).to(device)
    losses = F.cross_entropy(logits, targets, weight=weight, reduction="none").double()
    total = weight[targets].double().sum() if weight is not None else float(len(rows))
    loss = float(losses.sum() / total) if len(rows) else 0.0
    probs = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
    return probs, loss
