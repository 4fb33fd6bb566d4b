"""Patient-level cross-validation on a tiny generated BreakHis-like tile tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from breastpath.config import DataConfig, TrainConfig
from breastpath.data.cache import open_prepared
from breastpath.data.views import write_split_view
from breastpath.errors import CacheError, ConfigError
from breastpath.experiments.crossval import cross_validate, fold_splits, patient_folds
from breastpath.experiments.crossval_metrics import centre_scores
from conftest import save_png, synthetic_patch

SUBTYPES = {"benign": ("fibroadenoma", "tubular_adenoma"), "malignant": ("ductal_carcinoma",)}


def make_tile_tree(root: Path, *, per_class: int = 5, tiles: int = 4, seed: int = 0) -> Path:
    """``<benign|malignant>/<subtype>/<slide>/<slide>-200X-tileNN.png``, one patient per slide."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(("benign", "malignant")):
        for p in range(per_class):
            subtype = SUBTYPES[cls][p % len(SUBTYPES[cls])]
            slide = f"{100 + 10 * label + p}"
            for t in range(tiles):
                patch = synthetic_patch(rng, label, size=(32, 32))
                save_png(root / cls / subtype / slide / f"{slide}-200X-tile{t:02d}.png", patch)
    return root


@pytest.fixture(scope="module")
def prepared_tiles(tmp_path_factory) -> Path:
    from breastpath.data.prepare import prepare

    base = tmp_path_factory.mktemp("cv")
    tree = make_tile_tree(base / "tiles")
    out = base / "prepared"
    prepare([tree], out, config=DataConfig(image_size=32, seed=0))
    return out


def test_patient_folds_are_disjoint_stratified_and_seeded():
    patients = [f"p{i}" for i in range(10) for _ in range(3)]
    labels = [int(i >= 4) for i in range(10) for _ in range(3)]
    folds = patient_folds(patients, labels, k=3, seed=1)
    assert folds == patient_folds(patients, labels, k=3, seed=1)
    assert set(folds) == set(patients) and set(folds.values()) == {0, 1, 2}
    for fold in range(3):
        members = [p for p, f in folds.items() if f == fold]
        benign = sum(int(p[1:]) < 4 for p in members)
        assert 1 <= benign <= 2  # 4 benign patients over 3 folds
        assert 3 <= len(members) <= 4
    with pytest.raises(ConfigError):
        patient_folds(patients, labels, k=11)


def test_split_view_shares_images_and_rewrites_splits(prepared_tiles, tmp_path):
    data = open_prepared(prepared_tiles)
    fold_of = patient_folds(data.patients.tolist(), data.labels.tolist(), k=5, seed=0)
    splits = fold_splits(data, fold_of, 0, val_frac=0.25, seed=0)
    assert {p for p, s in splits.items() if s == "test"} == {
        p for p, f in fold_of.items() if f == 0
    }
    assert set(splits.values()) == {"train", "val", "test"}
    view = open_prepared(write_split_view(data, tmp_path / "view", splits))
    assert np.array_equal(np.asarray(view.images), np.asarray(data.images))
    expected = np.array([splits[p] for p in data.patients])
    assert np.array_equal(view.splits, expected)
    assert view.meta["mean"] != data.meta["mean"] or view.meta["split"] != data.meta["split"]
    with pytest.raises(CacheError):
        write_split_view(data, tmp_path / "bad", {"nobody": "train"})


def test_centre_scores_maps_each_threshold_to_half():
    s = np.array([0.0, 0.3, 0.3, 0.9, 1.0])
    t = np.array([0.3, 0.3, 0.6, 0.6, 0.6])
    c = centre_scores(s, t)
    assert c.tolist()[:3] == [0.0, 0.5, 0.25] and c[-1] == 1.0
    assert ((s >= t) == (c >= 0.5)).all()


def test_cross_validate_writes_pooled_oof_metrics(prepared_tiles, tmp_path):
    config = TrainConfig.from_flat(
        epochs=2,
        batch_size=8,
        lr=0.01,
        progress=False,
        model_args={"widths": [8, 16, 16], "hidden": 16},
    )
    out = tmp_path / "cv"
    result = cross_validate(prepared_tiles, out, config, folds=3, val_frac=0.3, n_boot=50)
    data = open_prepared(prepared_tiles)
    oof = (out / "oof_predictions.csv").read_text().splitlines()
    assert len(oof) == 1 + len(data.labels)  # every image scored once
    tested = [p for fold in result["per_fold"] for p in fold["test_patients"]]
    assert sorted(tested) == sorted(set(data.patients.tolist()))
    saved = json.loads((out / "crossval.json").read_text())
    assert saved["threshold_metric"] == config.stop.threshold_metric  # what the folds maximised
    pooled = saved["pooled"]
    for level in ("image", "patient"):
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            value = pooled[level][metric]
            low, high = pooled[level]["ci95"][metric]
            assert 0.0 <= low <= value <= high <= 1.0 or value is None
    assert pooled["patient"]["n"] == 10
    markdown = (out / "crossval.md").read_text()
    assert "Pooled out-of-fold" in markdown and "mean ± sd" in markdown
    for fold in range(3):
        run = json.loads((out / f"fold{fold}" / "run" / "best.json").read_text())
        assert run["data"]["split"]["fold"] == fold
    # resume reuses the finished folds (same settings: no training) and gives the same numbers
    import shutil

    shutil.rmtree(out / "fold0" / "run")
    again = cross_validate(
        prepared_tiles, out, config, folds=3, val_frac=0.3, n_boot=50, resume=True
    )
    assert not (out / "fold0" / "run").exists()
    assert again["pooled"]["image"]["accuracy"] == result["pooled"]["image"]["accuracy"]
    assert again["fold_seconds"] == result["fold_seconds"] > 0
    # a fold finished by an earlier version (its train settings one flat mapping, runtime
    # included) or on another device is reused too; other training choices are not
    done = json.loads((out / "fold1" / "fold.json").read_text())
    flat = {**config.to_flat(), "device": "cuda", "svm_c": list(config.head.svm_c)}
    done["settings"]["train"] = flat
    (out / "fold1" / "fold.json").write_text(json.dumps(done))
    shutil.rmtree(out / "fold1" / "run")
    cross_validate(prepared_tiles, out, config, folds=3, val_frac=0.3, n_boot=50, resume=True)
    assert not (out / "fold1" / "run").exists()
    from breastpath.experiments.crossval import _same_settings

    assert not _same_settings(
        {**done["settings"], "train": {**flat, "lr": 0.5}}, saved_settings(out)
    )


def saved_settings(out):
    """The settings of the last cross-validation written to ``out``."""
    saved = json.loads((out / "crossval.json").read_text())
    return {k: saved[k] for k in ("folds", "seed", "val_frac", "train")}


def test_cross_validate_subtype_task(tmp_path):
    from breastpath.data.prepare import prepare

    tree = make_tile_tree(tmp_path / "tiles", per_class=4, tiles=3, seed=1)
    prepared = tmp_path / "prepared"
    prepare([tree], prepared, config=DataConfig(image_size=32, task="subtype", seed=0))
    config = TrainConfig.from_flat(
        epochs=1,
        batch_size=8,
        progress=False,
        model_args={"widths": [8, 8, 8], "hidden": 8},
    )
    result = cross_validate(prepared, tmp_path / "cv", config, folds=2, val_frac=0.3, n_boot=20)
    image = result["pooled"]["image"]
    assert image["class_names"] == ["fibroadenoma", "tubular_adenoma", "ductal_carcinoma"]
    assert set(image["ci95"]) == {"accuracy", "balanced_accuracy"}


def test_crossval_cli(prepared_tiles, tmp_path):
    from click.testing import CliRunner

    from breastpath.cli.main import _register, cli

    _register()
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli,
        [
            "crossval",
            "--data",
            str(prepared_tiles),
            "--out",
            str(out),
            "--folds",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--threshold",
            "0.5",
            "--n-boot",
            "20",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pooled patient" in result.output
    assert json.loads((out / "crossval.json").read_text())["threshold"] == 0.5
    bad = CliRunner().invoke(
        cli, ["crossval", "--data", str(prepared_tiles), "--out", str(out), "--threshold", "x"]
    )
    assert bad.exit_code != 0
