"""scripts/breakhis_loso_finetune.py: leave-one-subtype-out splits and one fine-tuned run, tiny."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from breastpath.config import DataConfig, TrainConfig
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from conftest import make_breakhis_tiles

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "breakhis_loso_finetune.py"
SUBTYPES = [
    ("benign", "fibroadenoma", 0),
    ("benign", "tubular_adenoma", 0),
    ("malignant", "ductal_carcinoma", 1),
    ("malignant", "mucinous_carcinoma", 1),
]


@pytest.fixture(scope="module")
def loso():
    spec = importlib.util.spec_from_file_location("breakhis_loso_finetune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["breakhis_loso_finetune"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loso")
    make_breakhis_tiles(root / "tiles", SUBTYPES, slides=3, tiles=3)
    prepare([root / "tiles"], root / "prep", config=DataConfig(image_size=32, test_frac=0.0))
    return root / "prep"


def test_the_held_out_subtype_is_the_test_split_and_nothing_else(loso, prepared):
    data = open_prepared(prepared)
    splits = loso.subtype_splits(data, "ductal_carcinoma", val_frac=0.2, seed=0)
    subtypes = {str(p): row["subtype"] for p, row in zip(data.patients, data.rows, strict=True)}
    assert {p for p, s in splits.items() if s == "test"} == {
        p for p, t in subtypes.items() if t == "ductal_carcinoma"
    }
    assert {s for p, s in splits.items() if subtypes[p] != "ductal_carcinoma"} == {"train", "val"}


def test_one_subtype_is_trained_without_and_scored(loso, prepared, tmp_path):
    data = open_prepared(prepared)
    config = TrainConfig.from_dict(
        {"epochs": 1, "batch_size": 8, "progress": False, "model_args": {"widths": [8, 8, 8]}}
    )
    out = tmp_path / "mucinous"
    result = loso.run_subtype(data, "mucinous_carcinoma", out, config, threshold=0.5)
    assert result["class"] == "malignant" and result["images"] == 9
    assert sorted(result["patients"]) == ["4000", "4001", "4002"]
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["mean_score"] <= 1.0
    assert loso.run_subtype(data, "mucinous_carcinoma", out, config, threshold=0.5) == result
