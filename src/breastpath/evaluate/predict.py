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
) -> np.ndarray:
    """Softmax probabilities ``(len(rows), num_classes)`` (float64) in the order of ``rows``.

    Validation during training, with its loss and DDP sharding, is
    :func:`breastpath.train.validate.validate`.
    """
    was_training = model.training
    model.eval()
    loader = BatchLoader(images, np.zeros(len(images), dtype=np.int64), rows, batch_size=batch_size)
    mean, std = mean.to(device), std.to(device)
    outputs = [
        torch.softmax(model(to_model_input(batch, mean=mean, std=std, device=device)).float(), 1)
        .cpu()
        .numpy()
        for batch, _, _ in loader
    ]
    model.train(was_training)
    probs = np.concatenate(outputs) if outputs else np.zeros((0, 1), dtype=np.float32)
    return probs.astype(np.float64)
