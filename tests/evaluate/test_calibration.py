"""Calibration: ECE and reliability bins, temperature scaling, honest cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from breastpath.errors import ConfigError
from breastpath.evaluate.calibration import (
    apply_temperature,
    calibration_summary,
    crossfit_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def _calibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    p = rng.uniform(0, 1, n)
    return (rng.random(n) < p).astype(int), p


def test_a_calibrated_model_has_a_small_ece_and_an_overconfident_one_a_large_one():
    rng = np.random.default_rng(1)
    y, p = _calibrated(rng, 20_000)
    assert expected_calibration_error(y, p) < 0.02
    sharp = apply_temperature(np.c_[1 - p, p], 0.3)[:, 1]
    assert expected_calibration_error(y, sharp) > 0.1


def test_reliability_bins_count_every_item_once():
    rng = np.random.default_rng(2)
    y, p = _calibrated(rng, 1000)
    p[:3] = [0.0, 1.0, 0.5]  # the edges belong to the first and the last bin
    table = reliability_bins(y, p, bins=10)
    assert sum(table["count"]) == 1000 and len(table["edges"]) == 11
    for mean, lo, hi in zip(
        table["mean_predicted"], table["edges"], table["edges"][1:], strict=False
    ):
        assert mean is None or lo <= mean <= hi


def test_temperature_scaling_recovers_the_temperature_and_keeps_the_ranking():
    rng = np.random.default_rng(3)
    y, p = _calibrated(rng, 5000)
    sharp = apply_temperature(np.c_[1 - p, p], 0.4)
    t = fit_temperature(sharp, y)
    assert t == pytest.approx(1 / 0.4, rel=0.15)
    fixed = apply_temperature(sharp, t)[:, 1]
    assert roc_auc_score(y, fixed) == pytest.approx(roc_auc_score(y, sharp[:, 1]), abs=1e-12)
    assert expected_calibration_error(y, fixed) < expected_calibration_error(y, sharp[:, 1]) / 3


def test_crossfitting_never_uses_a_folds_own_items():
    rng = np.random.default_rng(4)
    y, p = _calibrated(rng, 3000)
    folds = np.repeat([0, 1, 2], 1000)
    probs = np.c_[1 - p, p]
    probs[folds == 0] = apply_temperature(probs[folds == 0], 0.2)  # only fold 0 overconfident
    _, temps = crossfit_temperature(probs, y, folds)
    # fold 0's temperature comes from folds 1 and 2, which are calibrated: close to 1
    assert temps[0] == pytest.approx(1.0, abs=0.15)
    assert temps[1] > 1.2 and temps[2] > 1.2  # the others see fold 0's overconfidence


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError):
        expected_calibration_error([0, 2], [0.1, 0.2])
    with pytest.raises(ConfigError):
        apply_temperature([[0.5, 0.5]], 0.0)
    with pytest.raises(ConfigError):
        fit_temperature(np.ones((2, 2)) / 2, [0, 5])
    with pytest.raises(ConfigError):
        crossfit_temperature(np.ones((2, 2)) / 2, [0, 1], [0, 0])
    summary = calibration_summary([0, 1], [0.2, 0.9])
    assert summary["brier"] == pytest.approx((0.04 + 0.01) / 2)


def test_a_checkpoint_at_a_temperature_scores_and_decides_consistently(tmp_path):
    import dataclasses

    from breastpath.checkpoint import load_checkpoint, save_checkpoint
    from breastpath.evaluate.calibration import with_temperature
    from breastpath.inference.predictor import Predictor

    bundled = load_checkpoint("default")
    # the network's own softmax (the bundled model is calibrated), its threshold moved back
    raw = with_temperature(bundled.meta, 1.0, rule="uncalibrated")
    assert raw.logit_bias is None and raw.temperature == 1.0
    original = dataclasses.replace(bundled, meta=raw)
    hot = with_temperature(original.meta, 1.7, rule="test")
    save_checkpoint(tmp_path / "hot", tensors=original.tensors, meta=hot)
    batch = np.random.default_rng(5).integers(0, 256, size=(40, 50, 50, 3), dtype=np.uint8)
    cold_p = Predictor(original, runtime="torch").predict_proba(batch)
    # calibrated, yet the same decisions
    bundled_p = Predictor(bundled, runtime="torch").predict_proba(batch)
    assert list(bundled_p[:, 1] >= bundled.meta.threshold) == list(cold_p[:, 1] >= raw.threshold)
    warm = Predictor.from_checkpoint(tmp_path / "hot")
    warm_p = warm.predict_proba(batch)
    np.testing.assert_allclose(warm_p, apply_temperature(cold_p, 1.7), atol=1e-5)
    # every decision is the same: the threshold moved with the temperature
    assert [p.is_cancer for p in warm.to_predictions(warm_p)] == [
        bool(p >= original.meta.threshold) for p in cold_p[:, 1]
    ]
    assert load_checkpoint(tmp_path / "hot").meta.extra["calibration"]["rule"] == "test"
