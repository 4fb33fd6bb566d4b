"""IDC mosaics: patches back in place, edge and missing patches, truth and prediction grids.

The generated tree (tests/conftest.py ``make_idc_tree``) gives patient 10000 six class-0
patches at y=51 (the first only 37 pixels tall, an edge patch) and three class-1 patches at
y=101, on x = 51, 101, ...: the other three cells of the class-1 row are missing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from breastpath.cli.main import main
from breastpath.errors import DatasetLayoutError, SlideError
from breastpath.inference.predictor import Predictor
from breastpath.slide.mosaic import build_mosaic, load_patient, write_mosaic

PATIENT = "10000"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint("default", device="cpu", batch_size=4)


def _patch(idc_tree: Path, x: int, y: int, label: int) -> np.ndarray:
    name = f"{PATIENT}_idx5_x{x}_y{y}_class{label}.png"
    return np.asarray(Image.open(idc_tree / PATIENT / str(label) / name).convert("RGB"))


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0] and "Traceback" not in err


def test_patches_are_placed_by_their_coordinates(idc_tree, predictor):
    mosaic = build_mosaic(load_patient(idc_tree, patient=PATIENT), predictor=predictor)
    assert mosaic.origin == (51, 51) and mosaic.image.shape == (100, 300, 3)
    edge = _patch(idc_tree, 51, 51, 0)
    assert edge.shape == (37, 50, 3)
    np.testing.assert_array_equal(mosaic.image[:37, :50], edge)
    assert (mosaic.image[37:50, :50] == 255).all()  # below the short edge patch: background
    np.testing.assert_array_equal(mosaic.image[:50, 250:300], _patch(idc_tree, 301, 51, 0))
    np.testing.assert_array_equal(mosaic.image[50:, 100:150], _patch(idc_tree, 151, 101, 1))
    assert (mosaic.image[50:, 150:] == 255).all()  # missing patches: background
    assert mosaic.covered.sum() == 37 * 50 + 8 * 2500
    nan = np.nan
    np.testing.assert_array_equal(mosaic.truth, [[0, 0, 0, 0, 0, 0], [1, 1, 1, nan, nan, nan]])
    assert np.isfinite(mosaic.probability).sum() == 9


def test_probabilities_come_from_the_predictor_and_the_verdict_from_the_rule(idc_tree, predictor):
    patches = load_patient(idc_tree, patient=PATIENT)
    mosaic = build_mosaic(patches, predictor=predictor, threshold=0.5)
    single = [p.probability for p in predictor.predict_images(patches.images)]
    table = [row["probability"] for row in mosaic.rows]
    np.testing.assert_allclose(table, single, atol=1e-5)
    rule = predictor.verdict_rule(threshold=0.5, unit="patch")
    verdict = rule.apply(single)
    assert mosaic.score["verdict"] == verdict.to_dict() and mosaic.score["rule"] == rule.describe()
    assert mosaic.score["positive"] == verdict.positive
    assert mosaic.score["extent"] == pytest.approx(np.mean(np.array(single) >= 0.5), abs=1e-6)
    assert mosaic.score["true_extent"] == pytest.approx(3 / 9)
    assert mosaic.score["label"] == 1 and mosaic.score["idc_patches"] == 3
    assert mosaic.score["patches"] == 9 and mosaic.score["threshold"] == 0.5
    assert [r["predicted"] for r in mosaic.rows] == [int(p >= 0.5) for p in table]


def test_prepared_cache_and_patient_folder_give_the_same_mosaic(idc_tree, prepared_idc, predictor):
    from_tree = build_mosaic(load_patient(idc_tree, patient=PATIENT), predictor=predictor)
    from_folder = build_mosaic(
        load_patient(idc_tree / PATIENT, patient=PATIENT), predictor=predictor
    )
    from_cache = build_mosaic(load_patient(prepared_idc, patient=PATIENT), predictor=predictor)
    assert from_cache.score["source"] == "prepared"
    for other in (from_folder, from_cache):
        np.testing.assert_array_equal(other.image, from_tree.image)
        np.testing.assert_array_equal(other.truth, from_tree.truth)
        np.testing.assert_allclose(other.probability, from_tree.probability, atol=1e-6)


def test_unknown_patient_and_bad_sources(idc_tree, prepared_idc, tmp_path):
    with pytest.raises(SlideError, match="patient '99' not found"):
        load_patient(idc_tree, patient="99")
    with pytest.raises(SlideError, match="patient '99' not found"):
        load_patient(prepared_idc, patient="99")
    with pytest.raises(SlideError, match="no such folder"):
        load_patient(tmp_path / "nowhere", patient=PATIENT)
    Image.new("RGB", (50, 50), "white").save(tmp_path / "photo.png")
    with pytest.raises(DatasetLayoutError):
        load_patient(tmp_path, patient=PATIENT)


def test_written_files(idc_tree, predictor, tmp_path):
    mosaic = build_mosaic(load_patient(idc_tree, patient=PATIENT), predictor=predictor)
    paths = write_mosaic(tmp_path, mosaic)
    assert np.array_equal(np.asarray(Image.open(paths["mosaic"])), mosaic.image)
    figure = Image.open(paths["figure"])
    assert figure.width > 2 * 300 and figure.height > 100  # two panels and a legend
    with open(paths["patches"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and {r["label"] for r in rows} == {"0", "1"}
    summary = json.loads(paths["summary"].read_text())
    cut = summary["verdict"]["threshold"]
    called = np.mean([float(r["probability"]) >= cut for r in rows])
    assert summary["extent"] == pytest.approx(called, abs=1e-6)


def test_cli_mosaic(idc_tree, tmp_path, capsys):
    code, out, err = _run(capsys, "mosaic", idc_tree, "--patient", PATIENT, "--out", tmp_path)
    assert code == 0, err
    assert "9 patches (3 labelled IDC" in out and "(rule: " in out
    assert {p.name for p in tmp_path.iterdir()} == {
        "mosaic.png",
        "figure.png",
        "patches.csv",
        "patient.json",
    }
    code, _, err = _run(capsys, "mosaic", idc_tree, "--patient", "4242", "--out", tmp_path)
    _one_line_error(code, err, "patient '4242' not found")
    code, _, err = _run(capsys, "mosaic", tmp_path / "no", "--patient", "1", "--out", tmp_path)
    _one_line_error(code, err, "no such folder")


@pytest.mark.data
def test_real_idc_patient_mosaic_with_the_default_model(shared_data, tmp_path, capsys):
    """Patient 14211 of the real IDC sample (144 patches, 50 IDC), default model."""
    code, _, err = _run(
        capsys, "mosaic", shared_data / "idc", "--patient", "14211", "--out", tmp_path
    )
    assert code == 0, err
    with open(tmp_path / "patches.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 144
    assert int(np.array([int(r["label"]) for r in rows]).sum()) == 50
    # patches the input-quality gate flags (marking ink, debris) have no probability
    scored = [r for r in rows if not r["quality"]]
    assert all(r["probability"] == "" and r["predicted"] == "" for r in rows if r["quality"])
    probs = np.array([float(r["probability"]) for r in scored])
    labels = np.array([int(r["label"]) for r in scored])
    assert probs[labels == 1].mean() > probs[labels == 0].mean() + 0.3
    summary = json.loads((tmp_path / "patient.json").read_text())
    assert summary["not_assessed"] == len(rows) - len(scored) < 10
    assert summary["mean"] == pytest.approx(probs.mean(), abs=1e-5)
    cut = summary["verdict"]["threshold"]
    assert summary["extent"] == pytest.approx((probs >= cut).mean(), abs=1e-5)
    assert summary["label"] == 1 and summary["positive"] == summary["verdict"]["positive"]
    mosaic = np.asarray(Image.open(tmp_path / "mosaic.png"))
    xs, ys = [int(r["x"]) for r in rows], [int(r["y"]) for r in rows]
    assert mosaic.shape[:2] == (max(ys) - min(ys) + 50, max(xs) - min(xs) + 50)
    first = rows[0]
    top, left = int(first["y"]) - min(ys), int(first["x"]) - min(xs)
    patch = np.asarray(Image.open(first["path"]).convert("RGB"))
    np.testing.assert_array_equal(mosaic[top : top + patch.shape[0], left : left + 50], patch)
