"""The onnxruntime forward the :class:`~breastpath.inference.predictor.Predictor` can score with.

``onnxruntime`` is optional (``pip install breastpath[onnx]``); importing this module does not
import it.
"""

from __future__ import annotations

import functools
import io
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from breastpath.errors import BreastpathError, CheckpointError, ConfigError

OPSET = 17
#: CPU flags (``/proc/cpuinfo``) of x86 8-bit dot products that accumulate in 32 bits
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
_X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
#: why the int8 runtime gives way to the float network on some CPUs (see int8_kernels_exact)
INT8_FALLBACK_NOTE = (
    "int8 gave way to the float network: this x86 CPU has no 8-bit dot products "
    "(AVX512-VNNI / AVX-VNNI), and onnxruntime's int8 kernels, whose 16-bit sums saturate "
    "there, changed up to 14% of the decisions; the float network scores as fast on such a CPU"
)
#: what a predictor asked for the int8 runtime by name says on such a CPU
INT8_INEXACT_NOTE = (
    "int8 as asked, but this x86 CPU has no 8-bit dot products (AVX512-VNNI / AVX-VNNI): "
    "onnxruntime's int8 kernels saturate here and the scores differ from the float network's"
)


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


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (Linux); empty when it
    cannot be read."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def int8_kernels_exact() -> bool:
    """Whether onnxruntime's fused int8 kernels compute what the quantized graph says on
    this CPU.

    On x86 without 8-bit dot products that accumulate in 32 bits (AVX512-VNNI or AVX-VNNI),
    onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose 16-bit pair
    sums saturate. Measured on an AVX2-only CPU (docs/benchmarks.md): the bundled int8 network
    changed 13.9% of the decisions of the float network it approximates (ROC-AUC 0.920 against
    0.966 on 1,000 IDC patches), while the same graph run unfused agreed to 1.7%, and the float
    network scored as fast as the int8 one. Other architectures (ARM) and x86 with VNNI:
    ``True``; x86 whose flags cannot be read: ``False``.
    """
    if platform.machine().lower() not in _X86:
        return True
    return bool(cpu_flags() & VNNI_FLAGS)


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
