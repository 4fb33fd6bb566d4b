"""A model trained at one magnification refuses images at another (CLI, API), unless allowed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from breastpath.cli.main import main
from breastpath.errors import MagnificationError
from breastpath.inference.magnification import (
    check_magnification,
    magnification_of,
    normalise,
    trained_at,
)
from conftest import save_png, synthetic_patch


def test_names_and_checks():
    assert magnification_of("SOB_M_DC-14-2523-400-010.png") == "400"
    assert magnification_of("22549AB-200X-tile03.png") == "200"
    assert magnification_of("10253_idx5_x501_y351_class1.png") is None
    assert normalise("100x") == "100" and normalise(None) is None
    with pytest.raises(MagnificationError):
        normalise("250")
    assert trained_at({"magnifications": ["200", "40"]}) == ("40", "200")
    assert check_magnification({}, "40") is None  # the model does not say: not checked
    with pytest.raises(MagnificationError, match=r"40X .* 200X"):
        check_magnification({"magnifications": ["200"]}, "40")


def test_training_records_the_magnifications(tmp_path):
    from breastpath.train.run import _magnifications

    class Data:
        def __init__(self, *values: str) -> None:
            self.rows = [{"magnification": v} for v in values]

    assert _magnifications(Data("200", "", "40")) == {"magnifications": ["40", "200"]}
    assert _magnifications(Data("")) == {}


@pytest.fixture(scope="module")
def breakhis():
    from breastpath.inference.predictor import Predictor

    return Predictor.from_checkpoint("breakhis")


def test_the_bundled_breakhis_model_states_200x(breakhis):
    assert trained_at(breakhis.meta.data) == ("200",)


def test_predict_refuses_a_40x_file_and_scores_it_when_allowed(breakhis, tmp_path, capsys):
    rng = np.random.default_rng(0)
    at40 = save_png(tmp_path / "SOB_B_F-14-9133-40-001.png", synthetic_patch(rng, 0, (230, 350)))
    at200 = save_png(tmp_path / "SOB_B_F-14-9133-200-001.png", synthetic_patch(rng, 0, (230, 350)))
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", "breakhis", str(tmp_path), "--out", str(out)]) == 0
    rows = {Path(r.split(",")[0]).name: r for r in out.read_text().splitlines()[1:]}
    assert "trained at 200X" in rows[at40.name] and "40X" in rows[at40.name]
    assert rows[at200.name].endswith(",")  # no error
    capsys.readouterr()
    args = ["predict", "--checkpoint", "breakhis", str(at40), "--out", str(out)]
    assert main([*args, "--allow-magnification-mismatch"]) == 0
    assert out.read_text().splitlines()[1].endswith(",")
    assert main([*args, "--magnification", "200"]) == 0  # the caller's word wins
    assert main(["predict", "--checkpoint", "breakhis", str(at200), "--magnification", "40"]) == 2


def test_api_refuses_a_40x_upload_with_422(breakhis):
    from fastapi.testclient import TestClient

    from breastpath.serve.app import create_app

    buffer = io.BytesIO()
    Image.fromarray(synthetic_patch(np.random.default_rng(1), 1, (230, 350))).save(buffer, "PNG")
    data = buffer.getvalue()
    with TestClient(create_app(breakhis)) as client:
        named = client.post("/api/predict", files={"file": ("SOB_M_DC-14-2523-40-010.png", data)})
        assert named.status_code == 422 and "trained at 200X" in named.json()["detail"]
        stated = client.post("/api/predict?magnification=100", files={"file": ("x.png", data)})
        assert stated.status_code == 422
        plain = client.post("/api/predict", files={"file": ("x.png", data)})
        assert plain.status_code == 200
        forced = client.post(
            "/api/predict?force=true", files={"file": ("SOB_M_DC-14-2523-40-010.png", data)}
        )
        assert forced.status_code == 200
