"""scripts/device_check.py runs on the CPU in tiny mode (so it cannot rot) and reports a failing
path instead of aborting."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.py"


@pytest.fixture(scope="module")
def device_check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # torch.multiprocessing pickles the worker by module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("device_check", None)


def test_tiny_cpu_run_passes_every_path(device_check, tmp_path):
    assert device_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    results = {r["path"]: r for r in report["results"]}
    assert set(results) == set(device_check.checks(device_check.Budget.make("cpu", True)))
    assert all(r["status"] in ("pass", "skip") for r in results.values()), results
    assert results["ddp + syncbatchnorm"]["status"] == "pass"
    assert results["stain vahadane 256px, cached matrix"]["value"] > 0
    table = (tmp_path / "device_check.md").read_text()
    assert table.count("\n| ") == len(results) + 2  # header, rule, one row per path


def test_a_failing_path_is_reported_and_the_run_goes_on(device_check, monkeypatch):
    budget = device_check.Budget.make("cpu", True)

    def broken() -> dict:
        raise RuntimeError("CUDA error: no kernel image is available")

    monkeypatch.setattr(
        device_check, "checks", lambda b: {"broken": broken, "fine": lambda: {"status": "pass"}}
    )
    results = device_check.run_all(budget)
    assert results[0]["status"] == "fail" and "no kernel image" in results[0]["error"]
    assert results[1] == {"path": "fine", "status": "pass", "seconds": results[1]["seconds"]}
