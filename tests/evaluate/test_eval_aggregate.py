"""Tests of breastpath.evaluate.aggregate."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath.errors import ConfigError
from breastpath.evaluate.aggregate import describe_patient_score, patient_scores

PATIENTS = ["10", "9", "10", "9", "9", "12"]
Y = [0, 0, 1, 0, 0, 0]
S = [0.2, 0.1, 0.9, 0.3, 0.65, 0.4]


def test_patient_mean() -> None:
    r = patient_scores(PATIENTS, Y, S)
    assert r["patients"] == ["10", "12", "9"]  # sorted as strings
    assert r["y_true"].tolist() == [1, 0, 0]  # "10" has one positive patch
    assert r["scores"] == pytest.approx([0.55, 0.4, (0.1 + 0.3 + 0.65) / 3])
    assert r["n_patches"].tolist() == [2, 1, 3]


def test_patient_max_and_fraction() -> None:
    r = patient_scores(PATIENTS, Y, S, reduce="max")
    assert r["scores"] == pytest.approx([0.9, 0.4, 0.65])
    r = patient_scores(PATIENTS, Y, S, reduce="fraction", threshold=0.5)
    assert r["scores"] == pytest.approx([0.5, 0.0, 1 / 3])


def test_integer_ids_are_strings() -> None:
    r = patient_scores(np.array([3, 1, 3]), [1, 0, 0], [0.9, 0.2, 0.5])
    assert r["patients"] == ["1", "3"]
    assert r["y_true"].tolist() == [0, 1]


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="reduce"):
        patient_scores(PATIENTS, Y, S, reduce="median")
    with pytest.raises(ConfigError, match="patients"):
        patient_scores(PATIENTS[:-1], Y, S)
    with pytest.raises(ConfigError):
        patient_scores(PATIENTS, Y, [2.0] * 6)


def test_describe_patient_score() -> None:
    assert describe_patient_score().startswith("Patient score = mean of its patch probabilities")
    assert "maximum" in describe_patient_score("max")
    assert ">= 0.3" in describe_patient_score("fraction", threshold=0.3)


def test_exact_on_300k_patches() -> None:  # its speed: benchmarks/bench_metrics.py
    rng = np.random.default_rng(0)
    n = 300_000
    patients = rng.integers(0, 279, n).astype(str)
    y = rng.integers(0, 2, n)
    s = rng.uniform(size=n)
    r = patient_scores(patients, y, s)
    assert r["n_patches"].sum() == n
    k = r["patients"].index("17")
    mask = patients == "17"
    assert r["scores"][k] == pytest.approx(s[mask].mean())
