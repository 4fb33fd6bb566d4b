"""Post-training int8 quantization of a checkpoint's network, for the ``int8`` runtime.

:func:`quantize_int8` exports the float network to ONNX and quantizes it statically with
onnxruntime (QDQ format, weights int8 per output channel, activations uint8): the activation
ranges come from *calibration patches*, a seeded sample of the images the model was trained on,
passed through the checkpoint's own normalisation. On a CPU with 8-bit dot-product instructions
(AVX512-VNNI, AVX-VNNI, ARM dot-product) the quantized network scores 2-2.5x faster than the
float one. It is a different model: measure its accuracy as served
(``scripts/rescore_crossval.py --runtime int8`` quantizes each fold's model on that fold's
training patches and scores its held-out patients).

The bytes are attached to a checkpoint with :func:`breastpath.checkpoint.attach_int8`; the
:class:`~breastpath.inference.predictor.Predictor` scores with them when its runtime is
``int8`` (Grad-CAM still runs on the float weights).

``onnx`` and ``onnxruntime`` are optional (``pip install breastpath[onnx]``); importing this module
does not import them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.errors import ConfigError
from breastpath.inference.onnx import OnnxUnavailableError, export_onnx_bytes

#: Calibration patches used by default (more changes the ranges by well under 1%).
CALIBRATION_SAMPLES = 1024


def sample_rows(count: int, *, samples: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of ``samples`` of ``count`` rows (all if fewer).

    Examples
    --------
    >>> sample_rows(10, samples=3).tolist()
    [5, 6, 9]
    >>> sample_rows(2, samples=5).tolist()
    [0, 1]
    """
    if count < 1:
        raise ConfigError("no calibration images")
    if samples < 1:
        raise ConfigError(f"calibration samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(samples, count), replace=False))


def _normalised(checkpoint: Any, images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> the float NCHW input the network sees (the checkpoint's mean and std)."""
    from breastpath.data.transforms import to_model_input

    x = to_model_input(
        torch.from_numpy(np.ascontiguousarray(images)),
        mean=torch.tensor(checkpoint.meta.mean, dtype=torch.float32),
        std=torch.tensor(checkpoint.meta.std, dtype=torch.float32),
        device="cpu",
    )
    return np.ascontiguousarray(x.float().numpy())


def calibration_rows(rows: np.ndarray, *, samples: int, seed: int = 0) -> np.ndarray:
    """The cache rows that calibrate: :func:`sample_rows` of ``rows`` (sorted), so that only
    those patches are read, however large the training split.

    Examples
    --------
    >>> calibration_rows(np.array([30, 10, 20]), samples=2).tolist()
    [20, 30]
    """
    return np.sort(rows)[sample_rows(len(rows), samples=samples, seed=seed)]


def _reader(batches: list[np.ndarray]) -> Any:
    """An onnxruntime calibration data reader over ``batches``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.pending, None)
            return None if batch is None else {"input": batch}

    return _Batches()


def quantize_int8(
    checkpoint: Any,
    images: np.ndarray,
    *,
    samples: int = CALIBRATION_SAMPLES,
    seed: int = 0,
    batch_size: int = 128,
) -> bytes:
    """Statically quantized ONNX bytes of ``checkpoint``'s network (see the module docstring).

    ``images`` are uint8 ``(N, H, W, 3)`` patches at the checkpoint's input size, from the data
    the model was trained on (never from the patients it will be judged on); ``samples`` of
    them, drawn with ``seed``, set the activation ranges.
    """
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        message = "int8 quantization needs `pip install onnx onnxruntime`"
        raise OnnxUnavailableError(message) from None
    from breastpath.checkpoint import build_model

    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"calibration images must be (N, H, W, 3), got {images.shape}")
    if tuple(images.shape[1:3]) != tuple(checkpoint.meta.input_size):
        raise ConfigError(
            f"calibration images are {images.shape[1:3]}, the model takes "
            f"{tuple(checkpoint.meta.input_size)}"
        )
    chosen = np.asarray(images[sample_rows(len(images), samples=samples, seed=seed)])
    x = _normalised(checkpoint, chosen)
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    model = build_model(checkpoint).eval()
    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared, quantized = (Path(tmp) / n for n in ("f.onnx", "p.onnx", "q.onnx"))
        plain.write_bytes(export_onnx_bytes(model, input_size=checkpoint.meta.input_size))
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            _reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return quantized.read_bytes()


def quantized_copy(
    checkpoint: Any,
    out_stem: str | Path,
    *,
    images: np.ndarray,
    source: str,
    samples: int = CALIBRATION_SAMPLES,
    seed: int = 0,
) -> Path:
    """Save ``checkpoint`` to ``out_stem`` with an int8 network attached, calibrated on
    ``images`` (model-ready uint8 patches, see :meth:`Predictor.cache_input`), and make
    ``int8`` its runtime; ``source`` (where the images came from) is recorded. Returns the JSON
    path."""
    from breastpath.checkpoint import attach_int8, save_checkpoint

    if checkpoint.onnx is not None:
        raise ConfigError(
            f"{checkpoint.path}: an exported ONNX pair cannot be quantized; give "
            "the torch checkpoint"
        )
    data = quantize_int8(checkpoint, images, samples=samples, seed=seed)
    record = {
        "source": source,
        "samples": min(samples, len(images)),
        "seed": seed,
        "format": "QDQ, weights int8 per channel, activations uint8 (min-max)",
    }
    meta = checkpoint.meta.replace(extra={**checkpoint.meta.extra, "int8_calibration": record})
    json_path = save_checkpoint(out_stem, tensors=checkpoint.model_state_prefixed(), meta=meta)
    return attach_int8(json_path, data)


__all__ = [
    "CALIBRATION_SAMPLES",
    "calibration_rows",
    "quantize_int8",
    "quantized_copy",
    "sample_rows",
]
