"""DDP through torchrun: two CPU processes (gloo) train one run without clashing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(prepared_idc, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "-m",
        "breastpath.cli.main",
        "train",
        "--data",
        str(prepared_idc),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((run / "best.json").read_text())
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, written once (by rank 0)
    assert 0 < meta["threshold"] < 1
