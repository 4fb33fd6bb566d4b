"""Issue 29, round two: option values that are not finite, checkpoints that are too deep or say no
threshold, and usage errors. Each is one ``error:`` line and exit status 2, never a traceback, a
server started with a NaN timeout, or a threshold made up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breastpath.checkpoint import load_checkpoint, read_meta
from breastpath.cli.main import main
from breastpath.errors import CheckpointError
from conftest import REPO, save_png, synthetic_patch
from reliability.test_cli_errors import _one_line
from test_checkpoint_meta import _copy_default


@pytest.fixture()
def no_server(monkeypatch):
    """Fail at once instead of loading a model and serving when an option got through."""

    def started(*args, **kwargs):
        raise AssertionError("the server was started")

    monkeypatch.setattr("breastpath.inference.predictor.Predictor.from_checkpoint", started)


BAD_FLOATS = [
    ("--max-upload-mb", "nan"),
    ("--max-upload-mb", "inf"),
    ("--max-batch-mb", "nan"),
    ("--max-megapixels", "inf"),
    ("--max-request-megapixels", "nan"),
    ("--keep-alive", "nan"),
    ("--timeout", "nan"),
    ("--body-timeout", "nan"),
    ("--header-timeout", "nan"),
    ("--header-timeout", "-inf"),
    ("--timeout", "1e300"),
    ("--max-upload-mb", "1e300"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_FLOATS, ids=[f"{f}={v}" for f, v in BAD_FLOATS])
def test_serve_refuses_a_float_option_that_is_not_finite_or_in_range(
    flag, value, no_server, capsys
):
    assert main(["serve", flag, value]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: Invalid value for '{flag}'"), line


# -- checkpoints -----------------------------------------------------------------------------


def test_a_checkpoint_nested_100000_deep_is_a_checkpoint_error(tmp_path):
    path = _copy_default(tmp_path)
    raw = json.loads(path.read_text())
    deep = 100_000
    text = json.dumps(raw)[:-1] + ', "extra": ' + "[" * deep + "]" * deep + "}"
    path.write_text(text)
    with pytest.raises(CheckpointError, match="nested deeper than"):
        read_meta(path)


def test_a_checkpoint_nested_past_the_limit_but_within_the_parser_is_refused(tmp_path):
    path = _copy_default(tmp_path)
    raw = json.loads(path.read_text())
    deep: object = 0
    for _ in range(200):  # json parses this; copying or printing it would recurse deeply
        deep = {"x": deep}
    raw["metrics"]["deep"] = deep
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="nested deeper than 32"):
        load_checkpoint(path)


def test_the_cli_answers_a_deep_checkpoint_in_one_line(tmp_path, capsys):
    path = _copy_default(tmp_path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    save_png(tmp_path / "patch.png", synthetic_patch(np.random.default_rng(0), 1))
    assert main(["predict", "--checkpoint", str(path), str(tmp_path / "patch.png")]) == 2
    assert "nested deeper than" in _one_line(capsys.readouterr().err)


def test_a_checkpoint_without_a_threshold_is_refused(tmp_path):
    path = _copy_default(tmp_path)
    raw = json.loads(path.read_text())
    del raw["threshold"]
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="field 'threshold': missing"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["default", "breakhis"])
def test_the_bundled_checkpoints_state_their_threshold(name):
    assert 0 < load_checkpoint(name).meta.threshold < 1


# -- usage errors: one line ------------------------------------------------------------------


USAGE_ERRORS = [
    (["serve", "--port", "70000"], "--port"),
    (["predict", "--batch-size", "0", "x.png"], "--batch-size"),
    (["predict", "--out", "."], "--out"),
    (["serve", "--no-such-option"], "--no-such-option"),
    (["no-such-command"], "no-such-command"),
]


@pytest.mark.parametrize(
    ("argv", "named"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS]
)
def test_a_usage_error_is_one_error_line(argv, named, capsys):
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and named in line, line


def test_help_and_version_still_exit_zero(capsys):
    assert main(["serve", "--help"]) == 0
    assert "Usage:" in capsys.readouterr().out
    assert main(["--version"]) == 0


def _broken_tiff(path: Path) -> Path:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((3, 64, 64, 3), np.uint8), photometric="rgb")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 3])  # its later pages point past the end
    return path


def test_slide_on_a_broken_tiff_prints_only_its_error_line(tmp_path):
    pytest.importorskip("tifffile")
    slide = _broken_tiff(tmp_path / "broken.tif")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "breastpath", "slide", str(slide), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("error: ") and "tifffile:" not in done.stderr.replace(line, "")


# -- every other float: the library's limits and configs, and the other commands' options ----


LIMIT_FIELDS = [
    "max_upload_bytes",
    "max_pixels",
    "max_files",
    "max_pending",
    "timeout_s",
    "header_timeout_s",
    "body_timeout_s",
    "keep_alive_s",
    "max_explain",
    "max_explain_tiles",
]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 0, True, "5"])
@pytest.mark.parametrize("name", LIMIT_FIELDS)
def test_serve_limits_refuse_nan_inf_and_out_of_range_values(name, value):
    from breastpath.errors import ConfigError
    from breastpath.serve.limits import ServeLimits

    with pytest.raises(ConfigError, match=f"ServeLimits.{name} must be"):
        ServeLimits(**{name: value})


def test_serve_limits_accept_their_defaults_and_no_waiting_explanations():
    from breastpath.serve.limits import ServeLimits

    assert ServeLimits(max_explain_pending=0, timeout_s=0.5).max_explain_pending == 0


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("OptimConfig", "lr", float("nan")),
        ("OptimConfig", "lr", float("inf")),
        ("OptimConfig", "weight_decay", float("nan")),
        ("OptimConfig", "momentum", float("nan")),
        ("OptimConfig", "momentum", 1.5),
        ("StopConfig", "min_delta", float("nan")),
        ("StopConfig", "min_delta", -1.0),
        ("AugmentConfig", "color_jitter", float("inf")),
        ("DistillConfig", "weight", float("nan")),
        ("HeadConfig", "svm_c", (1.0, float("nan"))),
        ("DataConfig", "test_frac", float("nan")),
        ("DataConfig", "val_frac", float("inf")),
    ],
)
def test_config_sections_refuse_floats_that_are_not_finite_or_in_range(section, name, value):
    import breastpath.config as config
    from breastpath.errors import ConfigError

    cls = getattr(config, section)
    with pytest.raises(ConfigError):
        cls.from_dict({name: value})
    with pytest.raises(ConfigError):
        cls(**{name: value}).validate()


def test_a_training_config_from_flat_options_refuses_nan():
    from breastpath.config import TrainConfig
    from breastpath.errors import ConfigError

    with pytest.raises(ConfigError, match="lr must be a finite number"):
        TrainConfig.from_flat(lr=float("nan"))


OTHER_FLOATS = [
    (["prepare", "--test-frac", "nan", "--out", "OUT", "SRC"], "--test-frac"),
    (["prepare", "--val-frac", "inf", "--out", "OUT", "SRC"], "--val-frac"),
    (["prepare", "--test-frac", "1.5", "--out", "OUT", "SRC"], "--test-frac"),
    (["probe", "--lr", "nan", "EMB"], "--lr"),
    (["probe", "--lr", "inf", "EMB"], "--lr"),
    (["probe", "--val-frac", "nan", "EMB"], "--val-frac"),
    (["crossval", "--val-frac", "nan", "--data", "SRC", "--out", "OUT"], "--val-frac"),
    (["crossval", "--lr", "nan", "--data", "SRC", "--out", "OUT"], "--lr"),
    (["crossval", "--min-delta", "inf", "--data", "SRC", "--out", "OUT"], "--min-delta"),
    (["train", "--lr", "nan", "--data", "SRC", "--out", "OUT"], "--lr"),
    (["train", "--color-jitter", "inf", "--data", "SRC", "--out", "OUT"], "--color-jitter"),
    (["slide", "--mpp", "nan", "SRC"], "--mpp"),
    (["mosaic", "--threshold", "nan", "SRC"], "--threshold"),
]


@pytest.mark.parametrize(
    ("argv", "named"), OTHER_FLOATS, ids=[" ".join(a[:3]) for a, _ in OTHER_FLOATS]
)
def test_other_commands_refuse_float_options_that_are_not_finite_or_in_range(
    argv, named, tmp_path, capsys
):
    places = {"OUT": str(tmp_path / "out"), "SRC": str(tmp_path), "EMB": str(tmp_path)}
    argv = [places.get(arg, arg) for arg in argv]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and named in line, line


def test_crossval_refuses_a_fixed_threshold_that_is_not_a_probability(tmp_path, capsys):
    argv = ["crossval", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--threshold"]
    assert main([*argv, "nan"]) == 2
    assert "--threshold" in _one_line(capsys.readouterr().err)
