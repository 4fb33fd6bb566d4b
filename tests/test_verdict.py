"""The one verdict rule: the words printed are the rule applied, at every level."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath.errors import ConfigError
from breastpath.evaluate.patients import extent_agreement, patient_verdict_metrics
from breastpath.inference.verdict import NOT_ASSESSED, TASK_RULES, VerdictRule, rule_for

IDC = {"dataset": "idc", "threshold": 0.5, "cancer_classes": ["idc"]}


def test_a_patient_with_a_third_of_its_patches_called_idc_is_not_negative():
    # the defect: 31.5% of patches at or above the threshold, printed "negative"
    probs = np.r_[np.full(63, 0.9), np.full(137, 0.1)]
    verdict = rule_for(IDC, unit="patch").apply(probs)
    assert verdict.positive is True and verdict.label == "IDC present"
    assert verdict.extent == pytest.approx(0.315) and verdict.tiles_called == 63
    assert "31.5%" in verdict.text and verdict.rule in verdict.text


def test_presence_needs_both_the_count_and_the_share():
    rule = VerdictRule(reduction="presence", threshold=0.5, min_tiles=3, min_extent=0.05)
    assert not rule.apply([0.9, 0.9, 0.1]).positive  # two tiles: below the count
    many = np.r_[np.full(4, 0.9), np.full(196, 0.1)]  # 4 tiles but 2% of a large slide
    assert not rule.apply(many).positive
    assert rule.apply(np.r_[np.full(20, 0.9), np.full(180, 0.1)]).positive


@pytest.mark.parametrize(
    ("reduction", "probs", "positive", "score"),
    [
        ("mean", [0.2, 0.9, 0.6], True, 0.5667),
        ("mean", [0.2, 0.3, 0.6], False, 0.3667),
        ("top_k_mean", [0.1, 0.1, 0.1, 0.8, 0.6], True, 0.7),
        ("vote", [0.6, 0.7, 0.1, 0.2], True, 0.5),
        ("vote", [0.6, 0.1, 0.1, 0.2], False, 0.25),
    ],
)
def test_reductions(reduction, probs, positive, score):
    rule = VerdictRule(reduction=reduction, threshold=0.5, top_k=2)
    verdict = rule.apply(probs)
    assert verdict.positive is positive and verdict.score == pytest.approx(score, abs=1e-4)
    assert verdict.label == ("positive" if positive else "negative")


def test_no_assessed_tile_is_not_assessed_and_nan_is_not_assessed():
    rule = VerdictRule(reduction="presence", threshold=0.5)
    empty = rule.apply([np.nan, np.nan])
    assert empty.positive is None and empty.label == NOT_ASSESSED and empty.extent is None
    assert rule.apply([np.nan, 0.9]).tiles_assessed == 1


def test_rule_for_the_tasks_and_an_unknown_dataset():
    assert rule_for(IDC).reduction == TASK_RULES["idc"]["reduction"]
    breakhis = rule_for({"dataset": "breakhis-tiles", "threshold": 0.4}, threshold=0.7)
    assert (breakhis.reduction, breakhis.positive, breakhis.threshold) == ("mean", "malignant", 0.7)
    other = rule_for({"dataset": None, "threshold": 0.5, "cancer_classes": ["tumour"]})
    assert (other.positive, other.negative) == ("tumour", "not tumour")


def test_the_sentence_names_the_numbers_the_rule_uses():
    rule = VerdictRule(reduction="presence", threshold=0.42, min_tiles=2, min_extent=0.05)
    text = rule.describe()
    assert "at least 2 tiles" in text and "5.0%" in text and "0.42" in text


@pytest.mark.parametrize(
    "options",
    [
        {"reduction": "median"},
        {"threshold": float("nan")},
        {"threshold": 1.5},
        {"min_tiles": 0},
        {"min_extent": -0.1},
    ],
)
def test_bad_rules_are_config_errors(options):
    with pytest.raises(ConfigError):
        VerdictRule(**{"reduction": "presence", "threshold": 0.5, **options})


def test_groups_are_reduced_separately():
    rule = VerdictRule(reduction="presence", threshold=0.5, min_tiles=2)
    verdicts = rule.apply_groups(["b", "a", "b", "a", "b"], [0.9, 0.9, 0.8, 0.1, 0.1])
    assert list(verdicts) == ["a", "b"]
    assert verdicts["a"].positive is False and verdicts["b"].positive is True


def test_patient_metrics_presence_and_extent():
    rng = np.random.default_rng(0)
    patients, labels, scores = [], [], []
    for i, share in enumerate([0.0, 0.0, 0.1, 0.3, 0.5, 0.8]):
        n = 40
        y = (np.arange(n) < round(share * n)).astype(int)
        p = np.where(y == 1, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.4, n))
        patients += [f"p{i}"] * n
        labels += y.tolist()
        scores += p.tolist()
    rule = VerdictRule(reduction="presence", threshold=0.5, min_tiles=2)
    m = patient_verdict_metrics(patients, labels, scores, rule=rule, n_boot=200)
    assert m["presence"]["sensitivity"] == 1.0 and m["presence"]["specificity"] == 1.0
    assert m["extent"]["mae"] == 0.0 and m["extent"]["pearson_r"] == pytest.approx(1.0)
    assert m["negative_patients"] == 2 and any("only 2 negative" in w for w in m["warnings"])
    assert [r["true_extent"] for r in m["per_patient"]] == [0.0, 0.0, 0.1, 0.3, 0.5, 0.8]
    low, high = m["ci95"]["extent.pearson_r"]
    assert low <= 1.0 <= high + 1e-9


def test_unassessed_patches_count_for_neither_extent():
    rule = VerdictRule(reduction="presence", threshold=0.5)
    m = patient_verdict_metrics(
        ["a"] * 4, [1, 0, 0, 1], [0.9, 0.1, 0.2, np.nan], rule=rule, n_boot=0
    )
    row = m["per_patient"][0]
    assert row["tiles"] == 3 and row["true_extent"] == pytest.approx(1 / 3)
    assert row["extent"] == pytest.approx(1 / 3)


def test_icc_penalises_a_constant_offset_that_pearson_ignores():
    true = np.array([0.1, 0.2, 0.4, 0.6, 0.8])
    shifted = extent_agreement(true, true + 0.15)
    assert shifted["pearson_r"] == pytest.approx(1.0)
    assert shifted["icc"] < 0.9 and shifted["bias"] == pytest.approx(0.15)
    assert extent_agreement(true, true)["icc"] == pytest.approx(1.0)


def test_a_checkpoint_carries_its_verdict_numbers_and_they_are_validated():
    from breastpath.checkpoint.meta import FORMAT, parse_meta
    from breastpath.errors import CheckpointError

    raw = {
        "format": FORMAT,
        "model": {"name": "cancernet", "num_classes": 2},
        "input_size": [50, 50],
        "mean": [0.8, 0.6, 0.7],
        "std": [0.1, 0.2, 0.1],
        "class_names": ["non-IDC", "IDC"],
        "threshold": 0.4,
        "data": {"dataset": "idc"},
        "verdict": {"threshold": 0.6, "min_tiles": 3, "min_extent": 0.1},
    }
    meta = parse_meta(raw, source="x.json")
    assert meta.verdict == {"threshold": 0.6, "min_tiles": 3, "min_extent": 0.1}
    assert parse_meta(meta.to_dict(), source="again").verdict == meta.verdict
    rule = rule_for({"dataset": "idc", "threshold": meta.threshold, "verdict": meta.verdict})
    assert (rule.threshold, rule.min_tiles, rule.min_extent) == (0.6, 3, 0.1)
    for bad in ({"threshold": 2.0}, {"min_tiles": 0}, {"top_k": 3}, [0.5]):
        with pytest.raises(CheckpointError, match="verdict"):
            parse_meta({**raw, "verdict": bad}, source="x.json")
