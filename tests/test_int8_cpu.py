"""Where onnxruntime's int8 kernels are inexact (x86 without VNNI) the int8 network gives way
to the float one it approximates, and says so; elsewhere the int8 network is served."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath.inference import onnx
from breastpath.inference.predictor import Predictor
from conftest import synthetic_patch

CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\n"


def _patches() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.stack([synthetic_patch(rng, i % 2) for i in range(8)])


@pytest.fixture
def fresh_detection():
    onnx.int8_kernels_exact.cache_clear()
    yield
    onnx.int8_kernels_exact.cache_clear()


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra="avx512_vnni"))
    assert {"avx2", "avx512_vnni"} <= onnx.cpu_flags(path)
    assert onnx.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("machine", "flags", "exact"),
    [
        ("x86_64", {"avx2", "avx512_vnni"}, True),
        ("x86_64", {"avx2", "avx_vnni"}, True),
        ("x86_64", {"avx2", "avx512f"}, False),
        ("AMD64", set(), False),  # flags unreadable: assume the saturating kernels
        ("aarch64", set(), True),
    ],
)
def test_int8_kernels_are_exact_with_vnni_or_off_x86(
    monkeypatch, fresh_detection, machine, flags, exact
):
    monkeypatch.setattr(onnx.platform, "machine", lambda: machine)
    monkeypatch.setattr(onnx, "cpu_flags", lambda: frozenset(flags))
    assert onnx.int8_kernels_exact() is exact


def test_where_int8_is_inexact_the_default_serves_its_float_network(monkeypatch):
    monkeypatch.setattr(onnx, "int8_kernels_exact", lambda: False)
    served = Predictor.from_checkpoint("default", device="cpu")
    assert served.runtime == "onnx" and served.runtime_note == onnx.INT8_FALLBACK_NOTE
    assert served.describe()["runtime_note"] == onnx.INT8_FALLBACK_NOTE
    batch = _patches()
    float_onnx = Predictor.from_checkpoint("default", device="cpu", runtime="onnx")
    np.testing.assert_allclose(served.predict_proba(batch), float_onnx.predict_proba(batch))
    asked = Predictor.from_checkpoint("default", device="cpu", runtime="int8")
    assert asked.runtime == "int8" and asked.runtime_note == onnx.INT8_INEXACT_NOTE


def test_where_int8_is_exact_the_default_serves_int8_and_says_nothing(monkeypatch):
    monkeypatch.setattr(onnx, "int8_kernels_exact", lambda: True)
    served = Predictor.from_checkpoint("default", device="cpu")
    assert served.runtime == "int8" and served.runtime_note is None
    assert "runtime_note" not in served.describe()


def test_without_the_onnx_exporter_the_float_network_runs_in_torch(monkeypatch):
    monkeypatch.setattr(onnx, "int8_kernels_exact", lambda: False)

    def no_exporter(*args, **kwargs):
        raise onnx.OnnxUnavailableError("ONNX export needs `pip install onnx onnxruntime`")

    monkeypatch.setattr(onnx, "export_onnx_bytes", no_exporter)
    served = Predictor.from_checkpoint("default", device="cpu")
    assert served.runtime == "torch" and served.runtime_note == onnx.INT8_FALLBACK_NOTE
    batch = _patches()
    torch_p = Predictor.from_checkpoint("default", device="cpu", runtime="torch")
    np.testing.assert_allclose(served.predict_proba(batch), torch_p.predict_proba(batch))
