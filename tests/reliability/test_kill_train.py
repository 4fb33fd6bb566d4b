"""``breastpath train`` survives SIGKILL: every checkpoint on disk loads, and ``--resume`` ends
with the same weights as a run that was never interrupted.

The crash windows of a checkpoint save (weights written, JSON not yet; JSON written, weights not
yet renamed; a temp file half-written) are also tested one by one, in process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from breastpath.checkpoint import build_model, load_checkpoint, save_checkpoint
from breastpath.checkpoint import files as checkpoint_module
from breastpath.config import TrainConfig
from breastpath.errors import CheckpointError
from breastpath.io import read_csv
from breastpath.train.loop import train

#: SIGKILLs per run of the test (at a random moment of an epoch, after at least one more epoch
#: was saved); set BREASTPATH_TEST_KILLS=20 for a longer stress run.
KILLS = int(os.environ.get("BREASTPATH_TEST_KILLS", "1"))
#: Two epochs more than kills: a kill lands within half of the fastest epoch so far after a
#: save, so even if later epochs run much faster (the machine's load drops) it still interrupts
#: one of the remaining epochs, never only the finalisation after the last.
EPOCHS = KILLS + 3
TRAIN = {
    "model": "cancernet",
    "model_args": {"widths": [8, 16, 16], "hidden": 32},
    "epochs": EPOCHS,
    "batch_size": 8,
    "lr": 0.01,
    "patience": 100,  # no early stop: every epoch runs
    "device": "cpu",
    "num_threads": 1,
    "progress": False,
}
#: Left behind by a killed writer: atomic-write temp files and staged checkpoint weights.
LEFTOVER = re.compile(r"(\..+\.tmp|.+\.[0-9a-f]{16}\.safetensors)")


def _start(data: Path, run: Path, log: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "breastpath.cli.main", "train", "--data", str(data)]
    command += ["--out", str(run), "--no-progress", *extra]
    with open(log, "ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def _last_epoch(run: Path) -> int:
    try:
        return int(json.loads((run / "last.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait_for_epoch(process: subprocess.Popen, run: Path, epoch: int) -> int:
    """Wait until ``last.json`` holds ``epoch`` or a later one; return the epoch it holds."""
    deadline = time.monotonic() + 120
    while (saved := _last_epoch(run)) < epoch:
        assert process.poll() is None, f"train exited early with {process.returncode}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    return saved


def _assert_checkpoints_load(run: Path) -> None:
    """Whatever the kill left, every checkpoint in the run folder is whole."""
    found = sorted(run.glob("*.json"))
    assert run / "last.json" in found
    for path in found:
        build_model(load_checkpoint(path))


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"train": TRAIN}))
    return path


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_result(prepared_idc, tmp_path):
    run, log = tmp_path / "run", tmp_path / "train.log"
    rng = np.random.default_rng(0)
    process = _start(prepared_idc, run, log, "--config", str(_config_file(tmp_path)))
    kills: list[int] = []
    for _ in range(KILLS):
        _wait_for_epoch(process, run, (kills[-1] if kills else 0) + 1)
        fastest = min(float(row["seconds"]) for row in read_csv(run / "history.csv"))
        time.sleep(rng.uniform(0.0, fastest / 2))  # somewhere in the next epoch (or its save)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        kills.append(_last_epoch(run))
        _assert_checkpoints_load(run)
        process = _start(prepared_idc, run, log, "--resume")
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert kills[-1] < EPOCHS, f"the kills came too late to interrupt anything: {kills}"

    history = read_csv(run / "history.csv")
    assert [int(row["epoch"]) for row in history] == list(range(1, EPOCHS + 1))
    best = load_checkpoint(run / "best.json")
    assert 0.0 < best.meta.threshold < 1.0
    build_model(best)
    last = load_checkpoint(run / "last.json")
    assert last.meta.epoch == EPOCHS
    assert len(last.meta.resume["history"]) == EPOCHS
    assert not [p.name for p in run.iterdir() if LEFTOVER.fullmatch(p.name)]

    threads = torch.get_num_threads()
    try:  # the same run, never interrupted (train() sets the thread count: restore it)
        train(prepared_idc, tmp_path / "clean", TrainConfig.from_dict(TRAIN))
    finally:
        torch.set_num_threads(threads)
    clean = load_checkpoint(tmp_path / "clean" / "last.json")
    for key, value in clean.model_state().items():
        torch.testing.assert_close(last.model_state()[key], value, rtol=1e-6, atol=1e-6)
    clean_loss = float(read_csv(tmp_path / "clean" / "history.csv")[-1]["val_loss"])
    assert float(history[-1]["val_loss"]) == pytest.approx(clean_loss, rel=1e-6)
    print(f"\n{KILLS} SIGKILL(s), after epochs {kills}; resumed to {EPOCHS} epochs, same weights")


# -- the crash windows of one checkpoint save, in process --------------------------------------


def _meta(epoch: int) -> dict:
    """The smallest valid checkpoint metadata (what these tests vary is the epoch)."""
    return {
        "model": {"name": "cancernet", "num_classes": 2},
        "input_size": [50, 50],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
        "class_names": ["non-IDC", "IDC"],
        "threshold": 0.5,
        "epoch": epoch,
    }


def _tensors(value: float) -> dict[str, torch.Tensor]:
    return {"model.w": torch.full((64,), value)}


def _value(stem: Path) -> float:
    return float(load_checkpoint(stem.with_suffix(".json")).tensors["model.w"][0])


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even ``except Exception`` clean-up)."""


def _kill_at_the_final_rename(monkeypatch) -> None:
    """Let the atomic writes (renames of ``.*.tmp`` files) through; die at the last step, the
    rename of the staged weights to ``<stem>.safetensors``."""
    real = os.replace

    def replace(source, target):
        if not Path(source).name.startswith("."):
            raise _Killed
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)


def test_killed_before_the_json_is_written_keeps_the_old_pair(tmp_path, monkeypatch):
    stem = tmp_path / "last"
    save_checkpoint(stem, tensors=_tensors(1.0), meta=_meta(1))

    def killed(*_args, **_kwargs):
        raise _Killed

    monkeypatch.setattr(checkpoint_module, "write_json", killed)
    with pytest.raises(_Killed):
        save_checkpoint(stem, tensors=_tensors(2.0), meta=_meta(2))
    assert _value(stem) == 1.0  # before the fix: "sha256 does not match"


def test_killed_before_the_rename_loads_the_new_pair(tmp_path, monkeypatch):
    stem = tmp_path / "last"
    save_checkpoint(stem, tensors=_tensors(1.0), meta=_meta(1))

    _kill_at_the_final_rename(monkeypatch)
    with pytest.raises(_Killed):
        save_checkpoint(stem, tensors=_tensors(2.0), meta=_meta(2))
    monkeypatch.undo()
    assert _value(stem) == 2.0  # found under its staging name, by its hash
    assert load_checkpoint(stem.with_suffix(".json")).meta.epoch == 2


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    stem = tmp_path / "last"
    save_checkpoint(stem, tensors=_tensors(1.0), meta=_meta(1))
    leftovers = [
        tmp_path / ".last.safetensors.ab12cd34.tmp",  # a half-written temp file
        tmp_path / ".last.json.zz99yy88.tmp",
        tmp_path / "last.0123456789abcdef.safetensors",  # staged, never committed
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    keep = [tmp_path / "last_other.0123456789abcdef.safetensors", tmp_path / ".best.json.x.tmp"]
    for path in keep:
        path.write_bytes(b"not ours")
    assert _value(stem) == 1.0
    save_checkpoint(stem, tensors=_tensors(3.0), meta=_meta(3))
    assert _value(stem) == 3.0
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in keep)
    assert sorted(p.name for p in tmp_path.glob("last.*")) == ["last.json", "last.safetensors"]


def test_a_tampered_staged_copy_is_not_used(tmp_path, monkeypatch):
    stem = tmp_path / "last"
    save_checkpoint(stem, tensors=_tensors(1.0), meta=_meta(1))
    _kill_at_the_final_rename(monkeypatch)
    with pytest.raises(_Killed):
        save_checkpoint(stem, tensors=_tensors(2.0), meta=_meta(2))
    monkeypatch.undo()
    (staged,) = tmp_path.glob("last.*[0-9a-f].safetensors")
    data = bytearray(staged.read_bytes())
    data[-3] ^= 0xFF
    staged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(stem.with_suffix(".json"))


def test_sweeping_temps_keeps_other_files(tmp_path):
    from breastpath.io import remove_stale_temps

    names = [".history.csv.abcd1234.tmp", ".x.tmp", "history.csv", "notes.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".history.csv.abcd1234.tmp"]
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])
