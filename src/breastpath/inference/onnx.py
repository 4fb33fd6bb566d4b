"""The onnxruntime forward the :class:`~breastpath.inference.predictor.Predictor` can score with.

``onnxruntime`` is optional (``pip install breastpath[onnx]``); importing this module does not
import it.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from breastpath.errors import BreastpathError, CheckpointError, ConfigError

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
    model = model.eval().to("cpu").to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, *input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export(model, example, buffer)
    return buffer.getvalue()


def _export(model: torch.nn.Module, example: torch.Tensor, buffer: io.BytesIO) -> None:
    """``torch.onnx.export``; an operator ONNX cannot express becomes a :class:`ConfigError`."""
    try:
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch accepts a binary file object here
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    except torch.onnx.errors.OnnxExporterError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"this model cannot be exported to ONNX: {first}") from None


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

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits of a normalised NCHW batch: a tensor, or a float32 array (see
        :func:`~breastpath.data.transforms.to_model_array`), which is passed as it is."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().float().contiguous().numpy()
        (logits,) = self.session.run(["logits"], {"input": np.ascontiguousarray(x, np.float32)})
        return torch.from_numpy(logits)
