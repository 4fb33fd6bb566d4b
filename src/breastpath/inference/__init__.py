"""Inference: the one place that turns images into cancer scores.

- :mod:`breastpath.inference.predictor` :class:`Predictor` (checkpoint -> ready scorer)
- :mod:`breastpath.inference.score`     :func:`cancer_score` (the one definition of the score)
- :mod:`breastpath.inference.batches`   scoring / embedding prepared-cache rows
- :mod:`breastpath.inference.sharded`   scoring files, sharded under ``torchrun``
- :mod:`breastpath.inference.device`    device choice and the process group
- :mod:`breastpath.inference.onnx`      the onnxruntime forward

Nothing heavy is imported here: ``from breastpath.inference import Predictor`` loads the
predictor module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "predictor",
    "Prediction": "predictor",
    "cancer_score": "score",
    "cancer_truth": "score",
    "predict_rows": "batches",
    "embed_rows": "batches",
    "logits_rows": "batches",
    "score_files": "sharded",
    "select_device": "device",
    "to_model_input": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'breastpath.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"breastpath.inference.{_EXPORTS[name]}"), name)
