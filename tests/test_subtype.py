"""The 8-class BreakHis subtype task end to end on generated tiles (3 subtypes present)."""

from __future__ import annotations

import numpy as np

from breastpath.config import DataConfig, TrainConfig
from breastpath.data.prepare import prepare
from breastpath.evaluate.pipeline import evaluate_checkpoint
from breastpath.inference.predictor import Predictor
from breastpath.train.loop import train
from conftest import make_breakhis_tiles

SUBTYPES = [
    ("benign", "fibroadenoma", 0),
    ("benign", "tubular_adenoma", 0),
    ("malignant", "ductal_carcinoma", 1),
]


def _tint(image: np.ndarray, c: int) -> np.ndarray:
    """Each subtype its own colour cast (channel ``c`` raised)."""
    image[..., c] = np.clip(image[..., c].astype(int) + 30, 0, 255).astype(np.uint8)
    return image


def test_subtype_task_trains_evaluates_and_sums_malignant_classes(tmp_path):
    make_breakhis_tiles(tmp_path / "tiles", SUBTYPES, slides=4, tiles=4, size=(48, 48), tint=_tint)
    summary = prepare(
        [tmp_path / "tiles"],
        tmp_path / "prep",
        config=DataConfig(task="subtype", image_size=32, test_frac=0.25, val_frac=0.34),
    )
    assert summary["class_names"] == ["fibroadenoma", "tubular_adenoma", "ductal_carcinoma"]
    config = TrainConfig.from_flat(
        epochs=2, batch_size=8, progress=False, model_args={"widths": [8, 16, 16], "hidden": 32}
    )
    train(tmp_path / "prep", tmp_path / "run", config)

    predictor = Predictor.from_checkpoint(tmp_path / "run")
    assert predictor.cancer_classes == [2]
    probs = predictor.predict_proba(np.zeros((3, 32, 32, 3), np.uint8))
    np.testing.assert_allclose(predictor.cancer_probability(probs), probs[:, 2])

    result = evaluate_checkpoint(tmp_path / "run", tmp_path / "prep", tmp_path / "eval")
    assert result["classes"]["class_names"] == summary["class_names"]
    assert len(result["classes"]["confusion_matrix"]) == 3
    assert result["patch"]["n"] == summary["splits"]["test"]["images"]
