"""The command line under attack: bad ports, unreadable and unwritable paths, broken
checkpoints, thin images, unreadable patient folders. One ``error:`` line, never a traceback,
and nothing lost without a word."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from breastpath.cli.main import main
from conftest import make_idc_tree, save_png, synthetic_patch
from reliability.test_serve_attacks import thin_png
from test_checkpoint_meta import BAD_FIELDS, _copy_default, _with


def _one_line(err: str) -> str:
    text = err.strip()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture()
def patch_png(tmp_path) -> Path:
    return save_png(tmp_path / "other.png", synthetic_patch(np.random.default_rng(0), 1))


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_refuses_a_bad_port(port, capsys):
    assert main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--port'" in err and "Traceback" not in err


def test_serve_on_a_port_in_use_is_one_line_before_the_model_loads(capsys, monkeypatch):
    from breastpath.inference import predictor

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(predictor.Predictor, "from_checkpoint", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: cannot listen on 127.0.0.1:") and "--port" in line


def test_serve_refuses_bad_limits(capsys):
    assert main(["serve", "--max-files", "0"]) == 2
    assert main(["serve", "--timeout", "-3"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_predict_writes_an_error_row_for_a_thin_image(tmp_path, patch_png, capsys):
    thin = tmp_path / "thin.png"
    thin.write_bytes(thin_png(60_000_000))
    out = tmp_path / "preds.csv"
    assert (
        main(["predict", "--checkpoint", "default", str(thin), str(patch_png), "--out", str(out)])
        == 0
    )
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert "elongated" in rows["thin.png"]["error"] and rows["thin.png"]["probability"] == ""
    assert rows["other.png"]["error"] == "" and float(rows["other.png"]["probability"]) >= 0
    assert "1 of 2 file(s) could not be scored" in capsys.readouterr().err


def test_predict_to_an_unwritable_out_is_one_line(tmp_path, patch_png, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert (
        main(
            ["predict", "--checkpoint", "default", str(patch_png), "--out", str(blocker / "p.csv")]
        )
        == 2
    )
    assert _one_line(capsys.readouterr().err).startswith("error: ")


def test_an_unreadable_file_is_an_error_row(tmp_path, patch_png, monkeypatch, capsys):
    import breastpath.imaging as imaging

    locked = save_png(tmp_path / "locked.png", synthetic_patch(np.random.default_rng(1), 0))

    def guarded_open(path, *args, **kwargs):  # chmod 000 as seen by a user who is not root
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(imaging, "open", guarded_open, raising=False)
    out = tmp_path / "preds.csv"
    assert (
        main(["predict", "--checkpoint", "default", str(locked), str(patch_png), "--out", str(out)])
        == 0
    )
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert "permission denied" in rows["locked.png"]["error"]
    assert rows["other.png"]["error"] == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_chmod_000_file_is_an_error_row(tmp_path, patch_png):
    locked = save_png(tmp_path / "locked.png", synthetic_patch(np.random.default_rng(1), 0))
    locked.chmod(0)
    out = tmp_path / "preds.csv"
    assert (
        main(["predict", "--checkpoint", "default", str(locked), str(patch_png), "--out", str(out)])
        == 0
    )
    assert "permission denied" in out.read_text()


@pytest.mark.parametrize(("key", "value"), BAD_FIELDS, ids=[f"{k}={v!r}" for k, v in BAD_FIELDS])
def test_every_wrong_checkpoint_field_is_one_line_from_the_cli(
    tmp_path, patch_png, key, value, capsys
):
    path = _with(_copy_default(tmp_path), key, value)
    assert main(["predict", "--checkpoint", str(path), str(patch_png)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and f"field '{key.split('.')[0]}" in line


def test_serve_with_a_nan_threshold_is_one_line(tmp_path, capsys):
    path = _with(_copy_default(tmp_path), "threshold", float("nan"))
    assert main(["serve", "--checkpoint", str(path), "--port", "0"]) == 2
    assert "field 'threshold'" in _one_line(capsys.readouterr().err)


def test_prepare_lists_an_unreadable_patient_folder(tmp_path, monkeypatch, capsys):
    tree = make_idc_tree(tmp_path / "IDC", patients=6, per_class=4)
    hidden_from_us = tree / "10003"
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 on one patient folder, as seen by a user who is not root
        if Path(path) == hidden_from_us:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "prepared"
    assert main(["prepare", str(tree), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert summary["patients"] == 5
    for record in (summary, meta):
        assert [s["path"] for s in record["skipped"]] == [str(hidden_from_us)]
        assert "folder not readable" in record["skipped"][0]["reason"]
    printed = capsys.readouterr()
    assert "folder not readable" in printed.out + printed.err
