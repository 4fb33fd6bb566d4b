"""Tests of breastpath.evaluate.plots and breastpath.evaluate.report."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from breastpath import __version__
from breastpath.errors import ConfigError, InvalidImageError
from breastpath.evaluate import plots
from breastpath.evaluate.aggregate import describe_patient_score, patient_scores
from breastpath.evaluate.metrics import binary_metrics, multiclass_metrics
from breastpath.evaluate.report import write_report


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    return y, s


def _png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def _pixels(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * plots.DPI), round(size[1] * plots.DPI)


def test_training_curves(tmp_path: Path) -> None:
    history = [
        {
            "epoch": i + 1,
            "train_loss": 1 / (i + 1),
            "val_loss": 1.1 / (i + 1),
            "train_acc": 0.6 + 0.03 * i,
            "val_acc": 0.55 + 0.03 * i,
            "val_auc": 0.7 + 0.02 * i,
            "lr": 1e-3 * 0.5**i,
        }
        for i in range(5)
    ]
    out = plots.plot_training_curves(history, tmp_path / "curves.png")
    assert _png_size(out) == _pixels(plots.TRAINING_CURVES_SIZE)
    # missing keys, None and NaN are tolerated, even an empty history
    sparse = [{"val_loss": 0.5}, {"train_loss": None, "val_acc": float("nan")}]
    assert _png_size(plots.plot_training_curves(sparse, tmp_path / "s.png")) == _pixels(
        plots.TRAINING_CURVES_SIZE
    )
    assert _png_size(plots.plot_training_curves([], tmp_path / "e.png"))


def test_roc_and_pr(tmp_path: Path) -> None:
    y, s = _data()
    curves = {"patch": (y, s), "patient": (y[:30], s[:30]), "one class": ([1, 1], [0.2, 0.9])}
    roc = plots.plot_roc(curves, tmp_path / "roc.png")
    pr = plots.plot_pr(curves, tmp_path / "sub" / "pr.png")
    assert _png_size(roc) == _pixels(plots.CURVE_SIZE)
    assert _png_size(pr) == _pixels(plots.CURVE_SIZE)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
    with pytest.raises(ConfigError):
        plots.plot_roc({}, tmp_path / "x.png")


def test_confusion_matrix_plot(tmp_path: Path) -> None:
    out = plots.plot_confusion_matrix([[50, 5], [8, 37]], ["non-IDC", "IDC"], tmp_path / "cm.png")
    assert _png_size(out) == _pixels(plots.confusion_matrix_size(2))
    with pytest.raises(ConfigError, match="class names"):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "x.png")


def test_prediction_grid(tmp_path: Path) -> None:
    y, s = _data(60)
    images = np.random.default_rng(0).integers(0, 256, (60, 50, 50, 3), dtype=np.uint8)
    out = plots.plot_prediction_grid(
        images, y, s, threshold=0.5, class_names=["non-IDC", "IDC"], path=tmp_path / "g.png"
    )
    assert _png_size(out) == _pixels(plots.prediction_grid_size(8))
    # empty groups (no negatives at all) still give a full grid
    out = plots.plot_prediction_grid(
        images[:3],
        [1, 1, 1],
        [0.9, 0.8, 0.1],
        threshold=0.5,
        class_names=["non-IDC", "IDC"],
        path=tmp_path / "g2.png",
        n_per_group=4,
    )
    assert _png_size(out) == _pixels(plots.prediction_grid_size(4))
    with pytest.raises(InvalidImageError):
        plots.plot_prediction_grid(
            images[..., 0], y, s, threshold=0.5, class_names=["a", "b"], path=tmp_path / "x.png"
        )


@pytest.fixture()
def report_inputs(tmp_path: Path) -> dict:
    rng = np.random.default_rng(1)
    patients = np.arange(400) % 25
    y = (patients < 10).astype(int)  # patients 0-9 are positive: every patch labelled 1
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 0, 1)
    agg = patient_scores(patients, y, s)
    metrics = {
        "patch": binary_metrics(y, s, threshold=0.5),
        "patient": binary_metrics(agg["y_true"], agg["scores"], threshold=0.5),
    }
    roc = plots.plot_roc(
        {"patch": (y, s), "patient": (agg["y_true"], agg["scores"])}, tmp_path / "roc.png"
    )
    plots.plot_confusion_matrix(
        metrics["patch"]["confusion_matrix"], ["non-IDC", "IDC"], tmp_path / "cm.png"
    )
    return {
        "metrics": metrics,
        "plots": {"ROC curves": str(roc), "Patch confusion matrix": "cm.png"},
        "run_info": {
            "model": "cancernet",
            "checkpoint": "runs/a/best.safetensors",
            "split": "test",
            "threshold": 0.5,
            "class_names": ["non-IDC", "IDC"],
        },
        "notes": [describe_patient_score("mean"), "Scores <b>raw</b> & unnormalised."],
    }


def test_report_html_and_md(tmp_path: Path, report_inputs: dict) -> None:
    out_dir = tmp_path  # plots live in out_dir; "cm.png" is given relative to it
    html_path, md_path = write_report(out_dir, title="IDC <test> report", **report_inputs)
    assert html_path == out_dir / "report.html" and md_path == out_dir / "report.md"
    html = html_path.read_text(encoding="utf-8")
    md = md_path.read_text(encoding="utf-8")

    # self-contained: no remote references, images embedded
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 2
    assert base64.b64decode(uris[0]).startswith(b"\x89PNG")

    # metric values, sections, confusion matrix cells, run info, notes
    for section in ("patch", "patient"):
        m = report_inputs["metrics"][section]
        for key in ("accuracy", "balanced_accuracy", "sensitivity", "roc_auc", "pr_auc"):
            assert f"{m[key]:.4f}" in html
            assert f"{m[key]:.4f}" in md
        for v in (v for row in m["confusion_matrix"] for v in row):
            assert f">{v}<" in html
    assert "<th>patch</th>" in html and "<th>patient</th>" in html
    assert "Patient score = mean of its patch probabilities" in html
    assert "Patient score = mean of its patch probabilities" in md
    assert "cancernet" in html and __version__ in html
    assert "<dt>package version</dt>" in html
    assert "non-IDC" in html  # class names from run_info label the confusion matrix
    # autoescaping
    assert "IDC &lt;test&gt; report" in html and "&lt;b&gt;raw&lt;/b&gt; &amp;" in html

    # markdown: tables and relative image links
    assert "| Metric | patch | patient |" in md
    assert "](roc.png)" in md and "](cm.png)" in md
    assert not list(out_dir.glob(".report*"))


def test_report_multiclass_and_missing_values(tmp_path: Path) -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    mc = multiclass_metrics([0, 1, 2, 2], probs, class_names=["benign", "ductal", "lobular"])
    one = binary_metrics([1, 1, 1], [0.2, 0.6, 0.9])  # AUCs are None
    html_path, md_path = write_report(
        tmp_path / "new" / "dir",
        title="BreakHis",
        metrics={"subtype": mc, "slide": one},
        plots={},
        run_info={},
    )
    html = html_path.read_text(encoding="utf-8")
    assert "Per class: subtype" in html and "lobular" in html
    assert "F1 (macro)" in html and f"{mc['f1_macro']:.4f}" in html
    assert 'class="na"' in html  # undefined AUC and metrics a section lacks
    assert "Figures" not in html
    assert "package version" in html
    html_path, _ = write_report(
        tmp_path, title="t", metrics={}, plots={}, run_info={"breastpath version": "9.9"}
    )
    html = html_path.read_text(encoding="utf-8")
    assert "9.9" in html and "package version" not in html
    assert "| lobular |" in md_path.read_text(encoding="utf-8")


def test_report_missing_plot(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        write_report(tmp_path, title="t", metrics={}, plots={"x": "nope.png"}, run_info={})


def test_training_curves_count_epochs_in_whole_numbers(tmp_path, monkeypatch):
    captured = {}
    real = plots._save

    def keep(fig, path):
        captured["ticks"] = [
            [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            for ax in fig.axes[:1]
        ]
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_acc": 0.5 + e / 10}
            for e in (1, 2, 3)]  # fmt: skip
    plots.plot_training_curves(rows, tmp_path / "curves.png")
    assert all(float(t).is_integer() for t in captured["ticks"][0])


def test_reliability_diagram_is_drawn(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    out = plots.plot_reliability(y, p, tmp_path / "rel.png")
    assert out.stat().st_size > 1000
