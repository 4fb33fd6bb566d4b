"""Batch scoring of prepared-cache rows: probabilities, logits (sharded) and embeddings.

Every loop that runs a model over cache rows is here: evaluation and threshold choice
(:func:`predict_rows`), validation during training, sharded over DDP ranks
(:func:`logits_rows`), and the embeddings of the CNN + SVM hybrid (:func:`embed_rows`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from breastpath.checkpoint import Checkpoint, build_model
from breastpath.data.loader import BatchLoader, shard_bounds
from breastpath.data.transforms import to_model_input
from breastpath.inference.device import DistInfo, gather_rows


@torch.inference_mode()
def _run_rows(
    fn: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device | str,
    batch_size: int,
) -> list[torch.Tensor]:
    """``fn(model input)`` for every batch of ``rows`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    loader = BatchLoader(images, np.zeros(len(images), dtype=np.int64), rows, batch_size=batch_size)
    mean, std = mean.to(device), std.to(device)
    try:
        return [
            fn(to_model_input(batch, mean=mean, std=std, device=device)).float()
            for batch, _, _ in loader
        ]
    finally:
        model.train(was_training)


def predict_rows(
    model: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Softmax probabilities ``(len(rows), num_classes)`` (float64) in the order of ``rows``."""
    outputs = _run_rows(
        lambda x: torch.softmax(model(x).float(), 1),
        model,
        images,
        rows,
        mean=mean,
        std=std,
        device=device,
        batch_size=batch_size,
    )
    probs = torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, 1), np.float32)
    return probs.astype(np.float64)


def checkpoint_rows(
    checkpoint: Checkpoint,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    tta: str | None = None,
    runtime: str = "torch",
) -> np.ndarray:
    """:func:`predict_rows` with a loaded checkpoint's model (channels-last, as the
    :class:`~breastpath.inference.predictor.Predictor` runs it) and its own mean/std; ``tta``
    overrides the checkpoint's test-time augmentation. ``runtime="int8"`` scores with the
    checkpoint's attached int8 network instead (onnxruntime, CPU; no test-time augmentation)."""
    mean = torch.tensor(checkpoint.meta.mean, dtype=torch.float32)
    std = torch.tensor(checkpoint.meta.std, dtype=torch.float32)
    if runtime == "int8":
        return _int8_rows(checkpoint, images, rows, mean=mean, std=std, batch_size=batch_size)
    model = build_model(checkpoint, tta=tta).to(device).to(memory_format=torch.channels_last)
    return predict_rows(
        model,
        images,
        rows,
        mean=mean,
        std=std,
        device=device,
        batch_size=batch_size,
    )


def _int8_rows(
    checkpoint: Checkpoint,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int,
) -> np.ndarray:
    """Softmax probabilities of ``rows`` from the checkpoint's int8 network."""
    from breastpath.errors import CheckpointError
    from breastpath.inference.onnx import OnnxForward

    if checkpoint.int8 is None:
        raise CheckpointError(f"{checkpoint.path}: no int8 model is attached")
    forward = OnnxForward(checkpoint.int8, threads=torch.get_num_threads())
    loader = BatchLoader(images, np.zeros(len(images), dtype=np.int64), rows, batch_size=batch_size)
    outputs = [
        torch.softmax(forward(to_model_input(batch, mean=mean, std=std, device="cpu")), 1)
        for batch, _, _ in loader
    ]
    probs = torch.cat(outputs).numpy() if outputs else np.zeros((0, 1), np.float32)
    return probs.astype(np.float64)


def logits_rows(
    model: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    batch_size: int,
    num_classes: int,
    info: DistInfo | None = None,
) -> torch.Tensor:
    """Logits ``(len(rows), num_classes)`` on ``device``, in row order, on every rank.

    Under DDP each rank scores a contiguous shard of ``rows`` and the shards are gathered in
    rank order (= row order), so every rank holds the same logits.
    """
    info = info or DistInfo()
    start, stop = shard_bounds(len(rows), info.rank, info.world_size)
    outputs = [torch.zeros((0, num_classes), device=device)]
    outputs += _run_rows(
        model,
        model,
        images,
        rows[start:stop],
        mean=mean,
        std=std,
        device=device,
        batch_size=batch_size,
    )
    return gather_rows(torch.cat(outputs), info)


def embed_rows(
    model: nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Embeddings ``(len(rows), D)`` (float32) of cache rows, in the order of ``rows``
    (:func:`breastpath.models.hybrid.embed`: pooled features before the classifier)."""
    from breastpath.models.hybrid import embed

    outputs = _run_rows(
        lambda x: embed(model, x),
        model,
        images,
        rows,
        mean=mean,
        std=std,
        device=device,
        batch_size=batch_size,
    )
    return torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, 0), np.float32)
