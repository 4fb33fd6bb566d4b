"""Tests of breastpath.evaluate.metrics."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
    roc_curve,
)

from breastpath.errors import BreastpathError, ConfigError
from breastpath.evaluate.metrics import (
    BINARY_METRIC_NAMES,
    _metric_from_counts,
    _ranking_metric,
    _sorted_groups,
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    describe_threshold_metric,
    multiclass_metrics,
)

KEYS = {
    "n",
    "n_positive",
    "n_negative",
    "threshold",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "confusion_matrix",
}


def _noisy(n: int, seed: int = 0, *, signal: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(signal * y + rng.uniform(0, 1 - signal, n), 0, 1)
    return y, s


# ------------------------------------------------------------------------------------ binary


def test_binary_metrics_hand_computed() -> None:
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.6, 0.7, 0.3, 0.8, 0.9]
    m = binary_metrics(y, s, threshold=0.5)
    assert set(m) == KEYS
    # predicted: 0 0 1 1 | 0 1 1  -> tn=2 fp=2 fn=1 tp=2
    assert m["confusion_matrix"] == [[2, 2], [1, 2]]
    tn, fp, fn, tp = 2, 2, 1, 2
    assert m["n"] == 7 and m["n_positive"] == 3 and m["n_negative"] == 4
    assert m["threshold"] == 0.5
    assert m["accuracy"] == pytest.approx((tp + tn) / 7)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["recall"] == m["sensitivity"]
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    prec, rec = tp / (tp + fp), tp / (tp + fn)
    assert m["f1"] == pytest.approx(2 * prec * rec / (prec + rec))
    assert m["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    # 12 positive/negative pairs; 0.3 beats 2 negatives, 0.8 and 0.9 beat all 4
    assert m["roc_auc"] == pytest.approx(10 / 12)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))


def test_binary_metrics_json_and_python_types() -> None:
    y, s = _noisy(200)
    m = binary_metrics(y, s.astype(np.float32), threshold=0.4)
    json.dumps(m)
    for k in ("n", "n_positive", "n_negative"):
        assert type(m[k]) is int
    for k in BINARY_METRIC_NAMES:
        assert type(m[k]) is float
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)


def test_threshold_is_inclusive() -> None:
    m = binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert m["confusion_matrix"] == [[0, 1], [0, 1]]


def test_perfect_scores() -> None:
    m = binary_metrics([0, 0, 1, 1], [0.0, 0.2, 0.8, 1.0])
    for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        assert m[k] == 1.0
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0


def test_roc_auc_matches_sklearn_on_random_data() -> None:
    y, s = _noisy(1000, seed=3)
    s = np.round(s, 2)  # ties
    m = binary_metrics(y, s)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_none_and_no_warning(label: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics([label] * 4, [0.1, 0.4, 0.6, 0.9])
    assert m["roc_auc"] is None and m["pr_auc"] is None
    json.dumps(m)
    if label == 0:
        assert m["specificity"] == 0.5 and m["sensitivity"] == 0.0
        assert m["precision"] == 0.0 and m["f1"] == 0.0
        assert m["confusion_matrix"] == [[2, 2], [0, 0]]
    else:
        assert m["sensitivity"] == 0.5 and m["specificity"] == 0.0
    assert m["balanced_accuracy"] == 0.5


def test_zero_division_is_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["sensitivity"] == 0.0


@pytest.mark.parametrize(
    ("y", "s", "kw", "match"),
    [
        ([], [], {}, "empty"),
        ([0, 1], [0.5], {}, "same length"),
        ([0, 2], [0.1, 0.2], {}, "only 0 and 1"),
        ([0, 1], [0.1, 1.2], {}, r"\[0, 1\]"),
        ([0, 1], [0.1, np.nan], {}, "finite"),
        ([0, 1], [0.1, -0.1], {}, "probabilities"),
        ([[0, 1]], [[0.1, 0.2]], {}, "1-D"),
        (["a", "b"], [0.1, 0.2], {}, "0/1"),
        ([0, 1], [0.1, 0.2], {"threshold": 1.5}, "threshold"),
        ([0, 1], [0.1, 0.2], {"threshold": "x"}, "threshold"),
    ],
)
def test_binary_metrics_bad_inputs(y, s, kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        binary_metrics(y, s, **kw)
    assert issubclass(ConfigError, BreastpathError) and issubclass(ConfigError, ValueError)


def test_bool_labels_accepted() -> None:
    m = binary_metrics(np.array([False, True]), [0.2, 0.7])
    assert m["accuracy"] == 1.0


# -------------------------------------------------------------------------------- multiclass


def test_multiclass_metrics() -> None:
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.6, 0.3, 0.1],
            [0.3, 0.3, 0.4],
            [0.1, 0.8, 0.1],
        ]
    )
    y = np.array([0, 1, 2, 2, 2, 0])
    m = multiclass_metrics(y, probs, class_names=["a", "b", "c"])
    json.dumps(m)
    # predictions 0 1 2 0 2 1
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert m["per_class"]["c"] == {
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "support": 3,
        "roc_auc": pytest.approx(roc_auc_score(y == 2, probs[:, 2])),
    }
    f1s = [m["per_class"][c]["f1"] for c in "abc"]
    assert m["f1_macro"] == pytest.approx(np.mean(f1s))
    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert m["roc_auc"] == pytest.approx(expected)


def test_multiclass_missing_class_gives_none_auc() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = multiclass_metrics([0, 1, 0], probs, class_names=["a", "b", "c"])
    assert m["roc_auc"] is None
    assert m["per_class"]["c"]["roc_auc"] is None
    assert m["per_class"]["c"]["support"] == 0


def test_multiclass_bad_inputs() -> None:
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    with pytest.raises(ConfigError, match="columns"):
        multiclass_metrics([0, 1], probs, class_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="sum to 1"):
        multiclass_metrics([0, 1], probs * 0.5, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="class indices"):
        multiclass_metrics([0, 2], probs, class_names=["a", "b"])
    # float32 softmax rows that miss 1 by a little are fine
    p32 = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=np.float32) * 1.0002
    m = multiclass_metrics([0, 1, 2], p32, class_names=["a", "b", "c"])
    assert m["roc_auc"] == 1.0


# ---------------------------------------------------------------------------------- threshold


def test_choose_threshold_constructed_case() -> None:
    # a perfect separation between 0.3 and 0.6
    y = [0, 0, 0, 1, 1, 1]
    s = [0.05, 0.2, 0.3, 0.6, 0.7, 0.95]
    t = choose_threshold(y, s)
    assert t == pytest.approx(0.45)
    assert binary_metrics(y, s, threshold=t)["balanced_accuracy"] == 1.0
    # F1: taking in the positive at 0.1 (and the negative at 0.9) beats every other cut
    y2 = [0, 1, 1, 1, 1, 0, 1]
    s2 = [0.05, 0.1, 0.6, 0.7, 0.8, 0.9, 0.95]
    t2 = choose_threshold(y2, s2, criterion="f1")
    assert t2 == pytest.approx(0.075)  # everything above 0.05 positive: tp=5, fp=1 -> F1 = 10/11


def test_choose_threshold_one_class_and_ties() -> None:
    assert choose_threshold([1, 1, 1], [0.1, 0.2, 0.9]) == 0.5
    assert choose_threshold([0, 0], [0.1, 0.2]) == 0.5
    # every candidate is equally bad (same score for all): closest to 0.5 wins
    t = choose_threshold([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3])
    assert t in (0.15, 0.65)
    assert t == 0.65  # |0.65 - 0.5| < |0.15 - 0.5|


def test_choose_threshold_rejects_unknown_criterion() -> None:
    with pytest.raises(ConfigError, match="criterion"):
        choose_threshold([0, 1], [0.2, 0.8], criterion="accuracy")


def _brute_force_best(y: np.ndarray, s: np.ndarray, criterion: str) -> float:
    """O(n^2) reference: try every unique score, every midpoint and both ends."""
    u = np.unique(s)
    candidates = np.concatenate([u, (u[1:] + u[:-1]) / 2, [0.0, 1.0, np.nextafter(1.0, 2.0)]])
    pred = s[None, :] >= candidates[:, None]
    tp = (pred & (y == 1)).sum(axis=1)
    fp = (pred & (y == 0)).sum(axis=1)
    fn = (~pred & (y == 1)).sum(axis=1)
    tn = (~pred & (y == 0)).sum(axis=1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    balanced = (tp / (tp + fn) + tn / (tn + fp)) / 2
    values = {"f1": f1, "f1_balanced_accuracy": (f1 + balanced) / 2}.get(criterion, balanced)
    return float(values.max())


def _criterion_at(y: np.ndarray, s: np.ndarray, threshold: float, criterion: str) -> float:
    metrics = binary_metrics(y, s, threshold=threshold)
    if criterion == "f1_balanced_accuracy":
        return (metrics["f1"] + metrics["balanced_accuracy"]) / 2
    return metrics["f1" if criterion == "f1" else "balanced_accuracy"]


@pytest.mark.parametrize("criterion", ["balanced_accuracy", "youden", "f1", "f1_balanced_accuracy"])
@pytest.mark.parametrize("seed", range(6))
def test_choose_threshold_agrees_with_brute_force(criterion: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    y = (rng.uniform(size=n) < [0.1, 0.3, 0.5, 0.7, 0.9, 0.5][seed]).astype(int)
    s = np.round(np.clip(0.25 * y + rng.uniform(0, 0.75, n), 0, 1), 2)  # with ties
    t = choose_threshold(y, s, criterion=criterion)
    assert 0.0 <= t <= 1.0
    got = _criterion_at(y, s, t, criterion)
    assert got == pytest.approx(_brute_force_best(y, s, criterion), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_the_mean_criterion_gives_up_neither_metric_to_the_other(seed: int) -> None:
    # F1 at least that of the balanced-accuracy threshold, balanced accuracy at least that of
    # the F1 threshold (what maximising their sum implies)
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=2000) < 0.1 + 0.05 * seed).astype(
        int
    )  # rare positives: the optima differ
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    at = {
        c: binary_metrics(y, s, threshold=choose_threshold(y, s, criterion=c))
        for c in ("balanced_accuracy", "f1", "f1_balanced_accuracy")
    }
    assert at["balanced_accuracy"]["f1"] < at["f1"]["f1"]
    assert at["f1_balanced_accuracy"]["f1"] >= at["balanced_accuracy"]["f1"]
    assert at["f1_balanced_accuracy"]["balanced_accuracy"] >= at["f1"]["balanced_accuracy"]


def test_every_threshold_metric_is_described_and_others_are_refused() -> None:
    from breastpath.choices import THRESHOLD_METRICS

    words = [describe_threshold_metric(m) for m in THRESHOLD_METRICS]
    assert len(set(words)) == len(THRESHOLD_METRICS)
    with pytest.raises(ConfigError, match="criterion"):
        describe_threshold_metric("accuracy")


def test_choose_threshold_youden_equals_balanced_accuracy() -> None:
    y, s = _noisy(300, seed=5)
    assert choose_threshold(y, s, criterion="youden") == choose_threshold(y, s)


def test_choose_threshold_on_a_full_size_input_agrees_with_the_roc_curve() -> None:
    # 300k scores (the size of the IDC set; its speed is in benchmarks/bench_metrics.py):
    # the best balanced accuracy is the best Youden J of scikit-learn's ROC curve
    y, s = _noisy(300_000, seed=1)
    t = choose_threshold(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    best = 0.5 * (1 + float(np.max(tpr - fpr)))
    assert binary_metrics(y, s, threshold=t)["balanced_accuracy"] == pytest.approx(best, abs=1e-12)


# ---------------------------------------------------------------------------------- bootstrap


def test_weighted_helpers_match_binary_metrics() -> None:
    y, s = _noisy(400, seed=7)
    s = np.round(s, 2)
    w = np.random.default_rng(0).integers(0, 3, y.size)
    idx = np.repeat(np.arange(y.size), w)
    reference = binary_metrics(y[idx], s[idx], threshold=0.45)
    order, ends, _ = _sorted_groups(s)
    for metric in ("roc_auc", "pr_auc"):
        value = _ranking_metric(metric, y[order].astype(float), w[order].astype(float), ends)
        assert value == pytest.approx(reference[metric], abs=1e-12)
    (tn, fp), (fn, tp) = reference["confusion_matrix"]
    for metric in BINARY_METRIC_NAMES[:7]:
        assert _metric_from_counts(metric, tn, fp, fn, tp) == pytest.approx(reference[metric])


@pytest.mark.parametrize("metric", ["roc_auc", "balanced_accuracy", "f1", "pr_auc"])
def test_bootstrap_ci_contains_estimate_and_narrows(metric: str) -> None:
    y_small, s_small = _noisy(200, seed=11)
    y_big, s_big = _noisy(5000, seed=11)
    est = binary_metrics(y_small, s_small, threshold=0.5)[metric]
    low, high = bootstrap_ci(y_small, s_small, metric=metric, threshold=0.5, n_boot=300)
    assert low < est < high
    low2, high2 = bootstrap_ci(y_big, s_big, metric=metric, threshold=0.5, n_boot=300)
    assert (high2 - low2) < 0.5 * (high - low)
    # reproducible with a seed
    assert bootstrap_ci(y_small, s_small, metric=metric, threshold=0.5, n_boot=300) == (low, high)


def test_cluster_bootstrap_is_wider_for_correlated_groups() -> None:
    # 40 patients, 50 patches each; a patient's patches share a patient-level score offset
    rng = np.random.default_rng(4)
    n_pat, per = 40, 50
    patient_label = rng.integers(0, 2, n_pat)
    offset = rng.normal(0, 0.2, n_pat)
    groups = np.repeat(np.arange(n_pat), per)
    y = patient_label[groups]
    s = np.clip(0.5 + 0.1 * (2 * y - 1) + offset[groups] + rng.normal(0, 0.02, groups.size), 0, 1)
    item = bootstrap_ci(y, s, metric="roc_auc", threshold=0.5, n_boot=200)
    cluster = bootstrap_ci(y, s, metric="roc_auc", threshold=0.5, groups=groups, n_boot=200)
    assert (cluster[1] - cluster[0]) > 2 * (item[1] - item[0])


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_ci([1, 1, 1], [0.2, 0.5, 0.9], metric="roc_auc", threshold=0.5) == (
        None,
        None,
    )
    with pytest.raises(ConfigError, match="metric"):
        bootstrap_ci([0, 1], [0.2, 0.8], metric="auc", threshold=0.5)
    with pytest.raises(ConfigError, match="groups"):
        bootstrap_ci([0, 1], [0.2, 0.8], metric="f1", threshold=0.5, groups=[1])
