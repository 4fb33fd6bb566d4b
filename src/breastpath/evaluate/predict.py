"""Run a model over rows of a prepared cache and collect class probabilities."""

from __future__ import annotations

import numpy as np
import torch

from breastpath.data.augment import to_model_input
from breastpath.data.loader import BatchLoader


@torch.inference_mode()
def predict_rows(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    criterion: torch.nn.Module | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None]:
    """Softmax probabilities ``(len(rows), num_classes)`` in the order of ``rows``.

    With ``criterion`` and ``labels`` also returns the mean loss; otherwise ``None``.
    """
    was_training = model.training
    model.eval()
    label_array = labels if labels is not None else np.zeros(len(images), dtype=np.int64)
    loader = BatchLoader(images, label_array, rows, batch_size=batch_size)
    outputs = []
    total_loss = 0.0
    mean, std = mean.to(device), std.to(device)
    for batch, targets, _ in loader:
        logits = model(to_model_input(batch, mean=mean, std=std, device=device)).float()
        if criterion is not None:
            total_loss += float(criterion(logits, targets.to(device))) * len(targets)
        outputs.append(torch.softmax(logits, dim=1).cpu().numpy())
    model.train(was_training)
    probs = np.concatenate(outputs) if outputs else np.zeros((0, 1), dtype=np.float32)
    loss = total_loss / max(len(rows), 1) if criterion is not None else None
    return probs.astype(np.float64), loss
