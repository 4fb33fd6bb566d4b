"""ONNX export of a checkpoint's model, and an onnxruntime forward that the Predictor can use.

``onnx`` and ``onnxruntime`` are optional (``pip install breastpath[onnx]``); importing this module
does not import them.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.errors import BreastpathError, CheckpointError
from breastpath.io import atomic_write_bytes, write_json

OPSET = 17


class OnnxUnavailableError(BreastpathError, ImportError):
    """onnx / onnxruntime are not installed."""


def export_onnx_bytes(model: torch.nn.Module, *, input_size: tuple[int, int]) -> bytes:
    """Serialise ``model`` (eval mode, float32, dynamic batch) to ONNX bytes.

    Examples
    --------
    >>> from breastpath.models import create_model
    >>> data = export_onnx_bytes(create_model("cancernet", num_classes=2), input_size=(50, 50))
    ... # doctest: +SKIP
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise OnnxUnavailableError("ONNX export needs `pip install onnx onnxruntime`") from None
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, *input_size)
    buffer = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def export_checkpoint(checkpoint: Any, out_path: str | os.PathLike) -> Path:
    """Write ``<out>.onnx`` and ``<out>.json`` (the checkpoint's metadata plus the ONNX sha256)."""
    from breastpath.train.checkpoint import build_model

    out = Path(out_path).with_suffix(".onnx")
    data = export_onnx_bytes(
        build_model(checkpoint), input_size=tuple(checkpoint.meta["input_size"])
    )
    atomic_write_bytes(out, data)
    meta = {k: v for k, v in checkpoint.meta.items() if k not in ("weights_file", "weights_sha256")}
    meta.update(
        runtime="onnx",
        onnx_file=out.name,
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        onnx_opset=OPSET,
    )
    write_json(out.with_suffix(".json"), meta)
    return out


class OnnxForward:
    """Call an ONNX model like a torch module: float NCHW tensor in, logits tensor out."""

    def __init__(self, model_bytes: bytes, *, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxUnavailableError("the onnx runtime needs `pip install onnxruntime`") from None
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                model_bytes, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"invalid ONNX model ({exc})") from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
        (logits,) = self.session.run(["logits"], {"input": array})
        return torch.from_numpy(logits)
