"""Validation during training, sharded over DDP ranks and gathered, so every rank agrees.

Each rank scores a contiguous shard of the validation rows; the logits are gathered in rank order
(= row order) and every rank computes the same probabilities and the same loss from them, so
early stopping and checkpoint decisions never diverge between ranks. In one process it is plain
validation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from breastpath.data.augment import to_model_input
from breastpath.data.loader import BatchLoader, shard_bounds
from breastpath.train.distributed import DistInfo, gather_rows


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
    info = info or DistInfo()
    start, stop = shard_bounds(len(rows), info.rank, info.world_size)
    was_training = model.training
    model.eval()
    outputs = [torch.zeros((0, num_classes), device=device)]
    for batch, _, _ in BatchLoader(images, labels, rows[start:stop], batch_size=batch_size):
        outputs.append(model(to_model_input(batch, mean=mean, std=std, device=device)).float())
    model.train(was_training)
    logits = gather_rows(torch.cat(outputs), info)
    targets = torch.from_numpy(np.asarray(labels)[rows]).to(device)
    losses = F.cross_entropy(logits, targets, weight=weight, reduction="none").double()
    total = weight[targets].double().sum() if weight is not None else float(len(rows))
    loss = float(losses.sum() / total) if len(rows) else 0.0
    probs = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
    return probs, loss
