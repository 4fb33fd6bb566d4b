"""ONNX export of a checkpoint's model, and an onnxruntime forward that the Predictor can use.

The runtime side (:class:`~breastpath.inference.onnx.OnnxForward`) lives in
:mod:`breastpath.inference.onnx`; ``breastpath predict model.onnx`` loads an exported pair.

An exported graph has two outputs, so an onnxruntime user gets what breastpath reports without
reading the JSON: ``logits`` (the network's raw output) and ``probabilities``
= ``softmax((logits + logit_bias) / temperature)``, the checkpoint's calibration appended to the
graph; the decision threshold applies to the sum of ``probabilities`` over ``cancer_classes``.
``network="float"`` exports the float network; ``network="int8"`` the statically quantized copy
the bundled default serves (runtime ``int8``), bit for bit, with the same calibration appended.

``onnx`` and ``onnxruntime`` are optional (``pip install breastpath[onnx]``); importing this module
does not import them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from breastpath.errors import CheckpointError
from breastpath.inference.onnx import OPSET, OnnxForward, OnnxUnavailableError, export_onnx_bytes

#: The networks ``export`` can write.
NETWORKS = ("float", "int8")
#: What each output of an exported graph is (also written into the pair's JSON).
OUTPUTS = {
    "logits": "the network's raw output, one value per class",
    "probabilities": "softmax((logits + logit_bias) / temperature): the calibrated class "
    "probabilities breastpath reports; the threshold applies to their sum over cancer_classes",
}


def append_calibration(
    model_bytes: bytes, *, temperature: float, logit_bias: Any | None, classes: int
) -> bytes:
    """``model_bytes`` with a second output ``probabilities`` computed from ``logits``: add the
    bias, divide by the temperature, softmax over classes."""
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise OnnxUnavailableError("ONNX export needs `pip install onnx onnxruntime`") from None
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    if "logits" not in [o.name for o in graph.output]:
        raise CheckpointError("the ONNX graph has no 'logits' output to calibrate")
    bias = np.zeros(classes, np.float32) if logit_bias is None else np.asarray(logit_bias)
    graph.initializer.extend(
        [
            numpy_helper.from_array(bias.astype(np.float32), "calibration_logit_bias"),
            numpy_helper.from_array(np.array(temperature, np.float32), "calibration_temperature"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Add", ["logits", "calibration_logit_bias"], ["calibration_shifted"]),
            helper.make_node(
                "Div", ["calibration_shifted", "calibration_temperature"], ["calibration_scaled"]
            ),
            helper.make_node("Softmax", ["calibration_scaled"], ["probabilities"], axis=1),
        ]
    )
    graph.output.append(
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def export_checkpoint(
    checkpoint: Any, out_path: str | os.PathLike, *, network: str = "float"
) -> Path:
    """Write ``<out>.onnx`` and ``<out>.json`` (the checkpoint's metadata, the ONNX sha256, the
    network exported and what its outputs are)."""
    from breastpath.checkpoint import build_model, save_onnx_pair

    if network not in NETWORKS:
        raise CheckpointError(f"unknown network {network!r}; use one of {', '.join(NETWORKS)}")
    meta = checkpoint.meta
    if network == "int8":
        if checkpoint.int8 is None:
            raise CheckpointError("this checkpoint has no int8 network attached (quantize it)")
        data = checkpoint.int8
    else:
        data = export_onnx_bytes(build_model(checkpoint), input_size=meta.input_size)
    data = append_calibration(
        data,
        temperature=meta.temperature,
        logit_bias=meta.logit_bias,
        classes=len(meta.class_names),
    )
    extra = {"onnx_network": network, "onnx_outputs": OUTPUTS}
    return save_onnx_pair(Path(out_path), model=data, meta=meta, opset=OPSET, extra=extra)


__all__ = [
    "NETWORKS",
    "OPSET",
    "OUTPUTS",
    "OnnxForward",
    "OnnxUnavailableError",
    "append_calibration",
    "export_checkpoint",
    "export_onnx_bytes",
]
