"""CNN + SVM hybrid: the tensor SVM agrees with scikit-learn; the run is a safe checkpoint that
the Predictor uses like any other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from breastpath.checkpoint import build_model, load_checkpoint
from breastpath.config import TrainConfig
from breastpath.models import create_model
from breastpath.models.hybrid import SVMHybrid
from breastpath.models.svm import RBFSVMHead
from breastpath.train.hybrid import fit_svm
from breastpath.train.loop import train


def _sklearn_svm(k: int, seed: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), 40)
    x = rng.normal(size=(len(y), 7)) + 0.9 * y[:, None] + rng.normal(size=(1, 7))
    scaler = StandardScaler().fit(x)
    calibrated = CalibratedClassifierCV(
        SVC(C=3.0, kernel="rbf", gamma="scale", class_weight="balanced"),
        method="sigmoid",
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
        ensemble=False,
    ).fit(scaler.transform(x), y)
    test = rng.normal(size=(50, 7)) * 1.5 + 0.9 * (k - 1) / 2
    return scaler, calibrated, test


@pytest.mark.parametrize("k", [2, 3, 5])
def test_tensor_svm_matches_sklearn(k):
    scaler, calibrated, test = _sklearn_svm(k, seed=k)
    head = RBFSVMHead.from_sklearn(scaler, calibrated)
    svc = calibrated.calibrated_classifiers_[0].estimator
    features = torch.tensor(test)
    with torch.no_grad():
        np.testing.assert_allclose(
            head.decision_function(features).numpy(),
            svc.decision_function(scaler.transform(test)),
            rtol=1e-6,
            atol=1e-6,
        )
        expected = calibrated.predict_proba(scaler.transform(test))
        np.testing.assert_allclose(head.predict_proba(features).numpy(), expected, atol=1e-6)
        # a softmax over forward() (what the Predictor applies) gives the same probabilities
        np.testing.assert_allclose(head(features).softmax(1).numpy(), expected, atol=1e-5)


def test_svm_head_round_trips_through_a_state_dict():
    scaler, calibrated, test = _sklearn_svm(3, seed=1)
    head = RBFSVMHead.from_sklearn(scaler, calibrated)
    shape = head.support_vectors.shape
    fresh = RBFSVMHead(num_classes=3, feature_dim=shape[1], n_support=shape[0])
    fresh.load_state_dict(head.state_dict(), strict=True)
    x = torch.tensor(test, dtype=torch.float32)
    torch.testing.assert_close(fresh.predict_proba(x), head.predict_proba(x))


def test_fit_svm_picks_c_on_validation():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = rng.normal(size=(120, 5)) + 1.2 * y[:, None]
    head, report = fit_svm(x[::2], y[::2], x[1::2], y[1::2], c_values=(0.1, 1.0, 10.0))
    assert report["C"] in (0.1, 1.0, 10.0)
    assert max(r["val_score"] for r in report["search"]) > 0.8
    assert report["n_support"] == head.support_vectors.shape[0]


def test_hybrid_run_is_a_safe_checkpoint_the_predictor_uses(trained_run, prepared_idc, tmp_path):
    from breastpath.data.cache import open_prepared
    from breastpath.inference.predictor import Predictor

    config = TrainConfig.from_flat(
        head="svm", backbone_checkpoint=str(trained_run / "best.json"), svm_c=(1.0, 10.0)
    )
    summary = train(prepared_idc, tmp_path / "svm", config)
    assert summary["svm"]["C"] in (1.0, 10.0)
    files = sorted(p.name for p in (tmp_path / "svm").iterdir())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib", ".pt", ".pth"))]
    meta = json.loads((tmp_path / "svm" / "best.json").read_text())
    assert meta["model"]["name"] == "svm_hybrid"
    assert meta["model"]["args"]["backbone"]["name"] == "cancernet"
    assert meta["svm"]["calibration"].startswith("sigmoid")
    assert 0.0 < meta["threshold"] < 1.0

    model = build_model(load_checkpoint(tmp_path / "svm")).eval()
    assert isinstance(model, SVMHybrid)
    predictor = Predictor.from_checkpoint(tmp_path / "svm")
    data = open_prepared(prepared_idc)
    patches = np.array(data.images[:6])
    probs = predictor.predict_proba(patches)
    with torch.no_grad():
        x = (
            torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
            - predictor.mean.view(1, 3, 1, 1)
        ) / predictor.std.view(1, 3, 1, 1)
        expected = model.svm.predict_proba(model.forward_embedding(x)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert meta["metrics"]["val_at_threshold"]["roc_auc"] > 0.8


def test_hybrid_builds_with_a_zoo_backbone():
    spec = {"name": "resnet18", "num_classes": 2, "args": {"input_size": 32}}
    net = create_model("svm_hybrid", num_classes=2, backbone=spec, feature_dim=512, n_support=4)
    assert net.data_config["mean"] == [0.485, 0.456, 0.406]
    with torch.no_grad():
        out = net.eval()(torch.zeros(2, 3, 50, 50))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))
