"""Rescoring finished cross-validation folds: TTA, last epoch, ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breastpath.config import DataConfig, TrainConfig
from breastpath.errors import ConfigError
from breastpath.experiments.crossval import cross_validate
from breastpath.experiments.rescore import rescore_crossval
from breastpath.io import read_csv
from test_crossval import make_tile_tree

TINY = {
    "epochs": 2,
    "batch_size": 8,
    "progress": False,
    "model_args": {"widths": [8, 16, 16], "hidden": 16},
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    from breastpath.data.prepare import prepare

    base = tmp_path_factory.mktemp("rescore")
    prepared = base / "prepared"
    prepare([make_tile_tree(base / "tiles")], prepared, config=DataConfig(image_size=32, seed=0))
    runs = []
    for seed in (0, 1):
        config = TrainConfig.from_dict({**TINY, "seed": seed})
        cross_validate(prepared, base / f"cv{seed}", config, folds=3, val_frac=0.3, n_boot=20)
        runs.append(base / f"cv{seed}")
    return prepared, runs[0], runs[1]


def test_rescoring_the_best_checkpoints_reproduces_the_cross_validation(two_runs, tmp_path):
    _, cv0, _ = two_runs
    again = rescore_crossval([cv0], tmp_path / "again", n_boot=20)
    original = json.loads((cv0 / "crossval.json").read_text())
    for fold, redo in zip(original["per_fold"], again["per_fold"], strict=True):
        assert redo["threshold"] == pytest.approx(fold["threshold"], abs=1e-5)
    for level in ("image", "patient"):
        assert again["pooled"][level]["accuracy"] == original["pooled"][level]["accuracy"]
    # the same rows, labels, folds and thresholds; the probabilities to float32 rounding (the
    # rows are batched differently, and at one thread the kernels round differently)
    again_rows = read_csv(tmp_path / "again" / "oof_predictions.csv")
    original_rows = read_csv(cv0 / "oof_predictions.csv")
    assert [r["row"] for r in again_rows] == [r["row"] for r in original_rows]
    for redo, row in zip(again_rows, original_rows, strict=True):
        for key, value in row.items():
            if key.startswith("p_") or key == "threshold":
                assert float(redo[key]) == pytest.approx(float(value), abs=1e-5), key
            else:
                assert redo[key] == value, key
    assert "Rescored: 1 member(s)" in (tmp_path / "again" / "crossval.md").read_text()


def test_ensemble_last_epoch_and_tta_score_every_image_once(two_runs, tmp_path):
    prepared, cv0, cv1 = two_runs
    result = rescore_crossval(
        [cv0, cv1], tmp_path / "ens", checkpoint="last", tta="flips", n_boot=20
    )
    assert result["members"] == [str(cv0), str(cv1)] and result["tta"] == "flips"
    rows = (tmp_path / "ens" / "oof_predictions.csv").read_text().splitlines()
    images = json.loads((prepared / "summary.json").read_text())["images"]
    assert len(rows) == 1 + images
    single = (tmp_path / "ens" / "oof_predictions.csv").read_text()
    assert single != (cv0 / "oof_predictions.csv").read_text()  # the members were averaged


def test_members_with_other_folds_or_bad_options_are_refused(two_runs, tmp_path):
    prepared, cv0, _ = two_runs
    other = tmp_path / "other"
    cross_validate(prepared, other, TrainConfig.from_dict(TINY), folds=2, val_frac=0.3, n_boot=5)
    with pytest.raises(ConfigError, match="folds differ"):
        rescore_crossval([cv0, other], tmp_path / "x")
    with pytest.raises(ConfigError, match="checkpoint"):
        rescore_crossval([cv0], tmp_path / "x", checkpoint="middle")
    with pytest.raises(ConfigError, match=r"no crossval\.json"):
        rescore_crossval([tmp_path], tmp_path / "x")


@pytest.fixture(scope="module")
def cv48(tmp_path_factory) -> Path:
    """A tiny cross-validation at 48 px (CancerNet's pooling exports to ONNX from there)."""
    from breastpath.data.prepare import prepare

    base = tmp_path_factory.mktemp("rescore48")
    prepare([make_tile_tree(base / "tiles")], base / "p", config=DataConfig(image_size=48, seed=0))
    config = TrainConfig.from_dict(TINY)
    cross_validate(base / "p", base / "cv", config, folds=3, val_frac=0.3, n_boot=20)
    return base / "cv"


def test_int8_rescoring_quantizes_each_fold_on_its_training_patients(cv48, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    monkeypatch.setattr("breastpath.inference.onnx.int8_kernels_exact", lambda: False)
    with pytest.raises(ConfigError, match="inexact on this CPU"):
        rescore_crossval([cv48], tmp_path / "no", checkpoint="last", runtime="int8", n_boot=20)
    monkeypatch.setattr("breastpath.inference.onnx.int8_kernels_exact", lambda: True)
    plain = rescore_crossval([cv48], tmp_path / "plain", checkpoint="last", n_boot=20)
    int8 = rescore_crossval([cv48], tmp_path / "int8", checkpoint="last", runtime="int8", n_boot=20)
    assert int8["runtime"] == "int8" and plain["runtime"] == "torch"
    assert "runtime `int8`" in (tmp_path / "int8" / "crossval.md").read_text()

    def probs(name):
        lines = (tmp_path / name / "oof_predictions.csv").read_text().splitlines()
        return [float(line.rsplit(",", 1)[1]) for line in lines[1:]]

    a, b = probs("plain"), probs("int8")
    assert len(a) == len(b) and a != b  # every image scored once, by another network
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.25
    with pytest.raises(ConfigError, match="without test-time augmentation"):
        rescore_crossval([cv48], tmp_path / "x", runtime="int8", tta="flips", n_boot=20)
    with pytest.raises(ConfigError, match="runtime"):
        rescore_crossval([cv48], tmp_path / "x", runtime="fp16", n_boot=20)


def test_a_model_onnx_cannot_express_is_a_config_error(two_runs, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    monkeypatch.setattr("breastpath.inference.onnx.int8_kernels_exact", lambda: True)
    _, cv0, _ = two_runs  # CancerNet at 32 px: its adaptive pooling has no ONNX form
    with pytest.raises(ConfigError, match="cannot be exported to ONNX"):
        rescore_crossval([cv0], tmp_path / "x", runtime="int8", n_boot=20)
