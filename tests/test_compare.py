"""``breastpath compare``: equal budgets, one split, one table (Markdown + JSON)."""

from __future__ import annotations

import json

import pytest

from breastpath.cli.main import main
from breastpath.errors import ConfigError
from breastpath.experiments.compare import Budget, model_config, parse_models
from breastpath.models.pretrained import has_offline_weights


def test_parse_models_checks_names():
    assert parse_models("cancernet,svm:resnet18") == ["cancernet", "svm:resnet18"]
    with pytest.raises(ConfigError, match="unknown model"):
        parse_models("cancernet,alexnet")
    with pytest.raises(ConfigError, match="twice"):
        parse_models("cancernet,cancernet")


def test_every_model_gets_the_same_budget_and_its_own_preset():
    budget = Budget(epochs=2, max_steps_per_epoch=5, input_size=64, batch_size=32)
    configs = {
        n: model_config(n, budget).to_flat() for n in ("cancernet", "resnet50", "inception_v3")
    }
    for config in configs.values():
        assert (config["epochs"], config["max_steps_per_epoch"], config["batch_size"]) == (2, 5, 32)
    assert (
        configs["cancernet"]["optimizer"] == "adagrad" and configs["cancernet"]["model_args"] == {}
    )
    assert configs["resnet50"]["optimizer"] == "adam" and not configs["resnet50"]["pretrained"]
    assert configs["resnet50"]["model_args"] == {"input_size": 64}
    assert configs["inception_v3"]["optimizer"] == "sgd"
    weighted = model_config("resnet50", budget, weights={"resnet50": "/w/resnet50.pth"}).model
    assert weighted.weights == "/w/resnet50.pth" and not weighted.pretrained
    tuned = model_config("resnet50", Budget(epochs=6), weights={"resnet50": "w"})
    assert tuned.optim.freeze_epochs
    hybrid = model_config("svm:efficientnet_lite0", budget)
    assert hybrid.head.kind == "svm"
    assert hybrid.model.pretrained == has_offline_weights("efficientnet_lite0")


def test_compare_writes_one_table(capsys, prepared_idc, trained_run, tmp_path):
    models = "cancernet,svm:cancernet"
    if has_offline_weights("efficientnet_lite0"):
        models += ",efficientnet_lite0"
    argv = [
        "compare",
        "--data",
        str(prepared_idc),
        "--models",
        models,
        "--out",
        str(tmp_path / "cmp"),
        "--epochs",
        "2",
        "--max-steps-per-epoch",
        "3",
        "--batch-size",
        "16",
        "--input-size",
        "32",
        "--baseline",
        str(trained_run),
        "--n-boot",
        "50",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| model | init |" in out and "patches/s" in out
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rows = {r["model"]: r for r in result["results"]}
    assert set(rows) == {*models.split(","), f"{trained_run} (as shipped)"}
    for row in rows.values():
        assert {"patch", "patient", "patch_ci", "throughput", "parameters"} <= set(row)
        assert row["throughput"]["patches_per_s"] > 0
        assert 0.0 <= row["patch"]["balanced_accuracy"] <= 1.0
    assert rows["svm:cancernet"]["init"].startswith("SVM on cancernet (breastpath checkpoint")
    assert rows[f"{trained_run} (as shipped)"]["train_seconds"] is None
    assert result["budget"]["epochs"] == 2 and result["machine"]["cpu_count"] >= 1
    assert (tmp_path / "cmp" / "comparison.md").read_text().count("\n|") == len(rows) + 1


def test_svm_on_a_model_without_weights_needs_it_trained_first(prepared_idc, tmp_path):
    from breastpath.experiments.compare import compare_models

    with pytest.raises(ConfigError, match="list cancernet before"):
        compare_models(prepared_idc, tmp_path, models=["svm:cancernet"], budget=Budget(epochs=1))
