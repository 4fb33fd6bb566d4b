"""The whole flow on the real IDC and BreakHis images in ../shared/data (marker `data`)."""

from __future__ import annotations

import json

import pytest

from breastpath.config import DataConfig, TrainConfig
from breastpath.data.prepare import prepare
from breastpath.evaluate.pipeline import evaluate_checkpoint
from breastpath.train.loop import train

pytestmark = pytest.mark.data


@pytest.mark.slow
def test_short_training_on_real_idc_beats_chance_on_unseen_patients(shared_data, tmp_path):
    prepare([shared_data / "idc"], tmp_path / "idc")
    config = TrainConfig.from_flat(epochs=3, batch_size=64, lr=0.01, progress=False, seed=0)
    train(tmp_path / "idc", tmp_path / "run", config)
    result = evaluate_checkpoint(tmp_path / "run", tmp_path / "idc", tmp_path / "eval")
    assert result["patch"]["roc_auc"] > 0.80
    assert result["patient"]["n"] >= 30


def test_breakhis_tiles_and_originals_prepare_with_patient_split(shared_data, tmp_path):
    summary = prepare(
        [shared_data / "breakhis-tiles", shared_data / "breakhis"],
        tmp_path / "bh",
        config=DataConfig(seed=0),
    )
    assert summary["images"] == 564 + 11
    assert summary["class_names"] == ["benign", "malignant"]
    assert summary["resized"] == 11  # the 700x460 originals
    index = (tmp_path / "bh" / "index.csv").read_text().splitlines()[1:]
    patient_splits: dict[str, set[str]] = {}
    for line in index:
        fields = line.split(",")
        patient_splits.setdefault(fields[2], set()).add(fields[9])
    assert all(len(s) == 1 for s in patient_splits.values())
    sub = prepare(
        [shared_data / "breakhis-tiles"],
        tmp_path / "sub",
        config=DataConfig(task="subtype", seed=0),
    )
    assert len(sub["class_names"]) == 6


def test_bundled_model_on_real_idc_patients(shared_data, tmp_path):
    prepare([shared_data / "idc"], tmp_path / "idc")
    result = evaluate_checkpoint("default", tmp_path / "idc", tmp_path / "eval", split="test")
    meta = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert meta["patch"]["n"] == result["patch"]["n"] > 1000
    assert result["patch"]["roc_auc"] > 0.85
