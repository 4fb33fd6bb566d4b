"""Patient-level splits: disjoint, stratified, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath.data.splits import split_patients
from breastpath.errors import SplitError


def _synthetic(n_patients: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(n_patients):
        n = int(rng.integers(5, 80))
        positive_share = rng.random() * 0.6
        patients += [f"p{p}"] * n
        labels += list((rng.random(n) < positive_share).astype(int))
    return patients, labels


def test_every_patient_in_exactly_one_split_and_shares_match():
    patients, labels = _synthetic(200)
    owner = split_patients(patients, labels, test_frac=0.2, val_frac=0.1, seed=3)
    assert set(owner) == set(patients)
    assert set(owner.values()) == {"train", "val", "test"}
    split_of_image = np.array([owner[p] for p in patients])
    labels = np.array(labels)
    total = len(labels)
    for name, share in [("train", 0.72), ("val", 0.08), ("test", 0.2)]:
        chosen = split_of_image == name
        assert abs(chosen.sum() / total - share) < 0.03
        # stratified: the positive share of each split is close to the overall share
        assert abs(labels[chosen].mean() - labels.mean()) < 0.04


def test_same_seed_same_split_other_seed_other_split():
    patients, labels = _synthetic(60)
    first = split_patients(patients, labels, seed=0)
    assert first == split_patients(patients, labels, seed=0)
    assert first != split_patients(patients, labels, seed=1)


def test_few_patients_still_fill_each_split_with_both_classes():
    patients = ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5 + ["e"] * 5 + ["f"] * 5
    labels = [0] * 15 + [1] * 15  # a, b, c benign; d, e, f malignant
    owner = split_patients(patients, labels, test_frac=0.34, val_frac=0.5, seed=0)
    assert sorted(owner.values()).count("test") >= 1
    for split in ("train", "val", "test"):
        assert any(v == split for v in owner.values())


def test_invalid_requests_raise():
    with pytest.raises(SplitError):
        split_patients(["a"], [0, 1])
    with pytest.raises(SplitError):
        split_patients(["a", "b"], [0, 1], test_frac=1.5)
    with pytest.raises(SplitError, match="cannot fill"):
        split_patients(["a", "b"], [0, 1], test_frac=0.2, val_frac=0.1)
    with pytest.raises(SplitError):
        split_patients([], [])
