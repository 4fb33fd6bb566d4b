"""ONNX export of a checkpoint's model, and an onnxruntime forward that the Predictor can use.

The runtime side (:class:`~breastpath.inference.onnx.OnnxForward`) lives in
:mod:`breastpath.inference.onnx`; ``breastpath predict model.onnx`` loads an exported pair.

``onnx`` and ``onnxruntime`` are optional (``pip install breastpath[onnx]``); importing this module
does not import them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from breastpath.inference.onnx import OPSET, OnnxForward, OnnxUnavailableError, export_onnx_bytes
from breastpath.io import atomic_write_bytes, write_json


def export_checkpoint(checkpoint: Any, out_path: str | os.PathLike) -> Path:
    """Write ``<out>.onnx`` and ``<out>.json`` (the checkpoint's metadata plus the ONNX sha256)."""
    from breastpath.checkpoint import build_model

    out = Path(out_path).with_suffix(".onnx")
    data = export_onnx_bytes(build_model(checkpoint), input_size=checkpoint.meta.input_size)
    atomic_write_bytes(out, data)
    meta = checkpoint.meta.to_dict()
    for key in ("weights_file", "weights_sha256", "resume"):
        meta.pop(key, None)
    meta.update(
        runtime="onnx",
        onnx_file=out.name,
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        onnx_opset=OPSET,
    )
    write_json(out.with_suffix(".json"), meta)
    return out


__all__ = ["OPSET", "OnnxForward", "OnnxUnavailableError", "export_checkpoint", "export_onnx_bytes"]
