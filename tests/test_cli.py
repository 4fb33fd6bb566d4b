"""The command line: prepare and predict outputs; one `error:` line and exit 2 on bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import breastpath
from breastpath.checkpoint import load_checkpoint, save_checkpoint
from breastpath.cli.main import main
from conftest import REPO, save_png, synthetic_patch


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


#: ``prepare`` opens its tqdm bar before scanning, so an early error follows an empty bar
#: ("decoding: 0img ..."); see test_prepare_error_has_no_progress_bar.


def _assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and stderr is exactly one ``error:`` line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _images(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    return [
        save_png(folder / f"img{i}.png", synthetic_patch(rng, i % 2, size=(50, 50)))
        for i in range(count)
    ]


# -- version and prepare --------------------------------------------------------------------------


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"breastpath, version {breastpath.__version__}"


def test_prepare_writes_the_cache(capsys, idc_tree, tmp_path):
    out_dir = tmp_path / "prepared"
    code, out, err = _run(
        capsys, "prepare", idc_tree, "--out", out_dir, "--val-frac", "0.2", "--workers", "1"
    )
    assert code == 0, err
    for name in ("images.u8", "index.csv", "splits.csv", "summary.json", "meta.json"):
        assert (out_dir / name).is_file(), name
    summary = json.loads((out_dir / "summary.json").read_text())
    meta = json.loads((out_dir / "meta.json").read_text())
    n_files = len(list(idc_tree.rglob("*.png")))
    assert summary["images"] == n_files
    assert (out_dir / "images.u8").stat().st_size == n_files * 50 * 50 * 3
    assert meta["class_names"] == ["non-IDC", "IDC"]
    table = out.splitlines()
    for split in ("train", "val", "test"):
        row = next(line for line in table if line.startswith(split))
        assert str(summary["splits"][split]["images"]) in row
    assert sum(summary["splits"][s]["images"] for s in ("train", "val", "test")) == n_files
    assert "error:" not in err


# -- predict --------------------------------------------------------------------------------------


def test_predict_writes_one_row_per_image(capsys, trained_run, tmp_path):
    folder = tmp_path / "images"
    files = _images(folder, 5)
    (folder / "readme.txt").write_text("not scored")
    out_file = tmp_path / "preds.csv"
    code, out, err = _run(capsys, "predict", "--checkpoint", trained_run, folder, "--out", out_file)
    assert code == 0, err
    assert "wrote 5 rows" in out
    rows = _read_rows(out_file.read_text())
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in files)
    best = json.loads((trained_run / "best.json").read_text())
    for row in rows:
        assert 0.0 <= float(row["probability"]) <= 1.0
        assert row["label"] in best["class_names"]
        assert float(row["threshold"]) == pytest.approx(best["threshold"])
        assert row["error"] == ""


def test_predict_gives_a_larger_image_its_tile_verdict(capsys, trained_run, tmp_path):
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.tiles import cut_tiles

    rng = np.random.default_rng(3)
    large = synthetic_patch(rng, 1, size=(120, 160))
    large[:, 100:] = 245  # glass on the right: those tiles are not assessed
    save_png(tmp_path / "large.png", large)
    save_png(tmp_path / "patch.png", synthetic_patch(rng, 0))
    out_file = tmp_path / "preds.csv"
    code, _, err = _run(capsys, "predict", "--checkpoint", trained_run, tmp_path, "--out", out_file)
    assert code == 0, err
    rows = {Path(r["path"]).name: r for r in _read_rows(out_file.read_text())}
    scored = sum(r["assessed"] == "1" for r in rows.values())
    above = sum(
        r["assessed"] == "1" and float(r["probability"]) >= float(r["threshold"])
        for r in rows.values()
    )
    summary = f"summary: 2 file(s); {scored} scored, {above} at or above the threshold"
    assert summary in err and "0 not scored" in err
    assert rows["patch.png"]["tile_verdict"] == "" and rows["patch.png"]["tiles"] == ""
    row = rows["large.png"]
    predictor = Predictor.from_checkpoint(trained_run)
    grid = cut_tiles(large, predictor.input_size).check()
    assessed = grid.assessed.ravel()
    probs = predictor.cancer_probability(predictor.predict_proba(grid.tiles[assessed]))
    verdict = predictor.verdict_rule().apply(probs)
    assert (int(row["tiles"]), int(row["tiles_assessed"])) == (12, assessed.sum()) == (12, 6)
    assert row["tile_verdict"] == verdict.label
    assert float(row["tile_extent"]) == pytest.approx(verdict.extent, abs=1e-4)


def test_predict_to_stdout_agrees_with_the_predictor(capsys, trained_run, tmp_path):
    from breastpath.inference.predictor import Predictor

    files = _images(tmp_path / "images", 3, seed=1)
    code, out, err = _run(capsys, "predict", "--checkpoint", trained_run, *files)
    assert code == 0, err
    rows = _read_rows(out)
    assert [Path(r["path"]) for r in rows] == files
    expected = Predictor.from_checkpoint(trained_run).predict_sources(files)
    for row, prediction in zip(rows, expected, strict=True):
        assert float(row["probability"]) == pytest.approx(prediction.probability, abs=1e-6)


def test_predict_reports_a_corrupt_file_and_scores_the_rest(capsys, trained_run, tmp_path):
    folder = tmp_path / "mixed"
    good = _images(folder, 3, seed=2)
    data = (good[0]).read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])
    out_file = tmp_path / "preds.csv"
    code, _, err = _run(capsys, "predict", "--checkpoint", trained_run, folder, "--out", out_file)
    assert code == 0, err
    assert "1 of 4" in err
    assert "Traceback" not in err
    rows = {Path(r["path"]).name: r for r in _read_rows(out_file.read_text())}
    assert set(rows) == {"broken.png", *(p.name for p in good)}
    assert rows["broken.png"]["probability"] == ""
    assert "broken.png" in rows["broken.png"]["error"]
    for path in good:
        assert rows[path.name]["error"] == ""
        assert 0.0 <= float(rows[path.name]["probability"]) <= 1.0


def test_predict_with_only_bad_files_fails(capsys, trained_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, out, err = _run(capsys, "predict", "--checkpoint", trained_run, bad)
    _assert_one_line_error(code, err, "none of the 1 file(s) could be read")
    assert "bad.png" in _read_rows(out)[0]["error"]


@pytest.mark.parametrize("size", ["0", "-1"])
def test_predict_rejects_a_bad_batch_size(capsys, trained_run, tmp_path, size):
    files = _images(tmp_path / "images", 1)
    code, out, err = _run(
        capsys, "predict", "--checkpoint", trained_run, *files, "--batch-size", size
    )
    assert code == 2
    assert "Traceback" not in err and "--batch-size" in err
    assert out == ""


def test_predict_out_must_not_be_a_folder(capsys, trained_run, tmp_path):
    files = _images(tmp_path / "images", 1)
    (tmp_path / "folder").mkdir()
    code, _, err = _run(
        capsys, "predict", "--checkpoint", trained_run, *files, "--out", tmp_path / "folder"
    )
    assert code == 2
    assert "Traceback" not in err and "is a directory" in err


# -- errors: exit 2, one `error:` line, no traceback ----------------------------------------------


def test_prepare_missing_folder(capsys, tmp_path):
    code, _, err = _run(capsys, "prepare", tmp_path / "nowhere", "--out", tmp_path / "out")
    _assert_one_line_error(code, err, "nowhere", "no such file or folder")


def test_prepare_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "prepare", tmp_path / "empty", "--out", tmp_path / "out")
    _assert_one_line_error(code, err, "empty", "no image files")


def test_prepare_folder_without_images(capsys, tmp_path):
    source = tmp_path / "docs"
    source.mkdir()
    (source / "notes.txt").write_text("hello")
    (source / "table.csv").write_text("a,b\n1,2\n")
    code, _, err = _run(capsys, "prepare", source, "--out", tmp_path / "out")
    _assert_one_line_error(code, err, "no image files")


def test_prepare_unknown_layout(capsys, tmp_path):
    source = tmp_path / "deep"
    rng = np.random.default_rng(0)
    for i in range(4):
        save_png(source / "a" / "b" / f"c{i}" / f"image{i}.png", synthetic_patch(rng, i % 2))
    code, _, err = _run(capsys, "prepare", source, "--out", tmp_path / "out")
    _assert_one_line_error(code, err, "unknown layout")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_prepare_error_has_no_progress_bar(capsys, tmp_path):
    code, _, err = _run(capsys, "prepare", tmp_path / "nowhere", "--out", tmp_path / "out")
    _assert_one_line_error(code, err, "nowhere")


def test_predict_missing_checkpoint(capsys, tmp_path):
    _images(tmp_path / "images", 1)
    code, _, err = _run(
        capsys, "predict", "--checkpoint", tmp_path / "no_run.json", tmp_path / "images"
    )
    _assert_one_line_error(code, err, "no_run", "no such checkpoint")


def test_predict_missing_input(capsys, trained_run, tmp_path):
    code, _, err = _run(capsys, "predict", "--checkpoint", trained_run, tmp_path / "absent")
    _assert_one_line_error(code, err, "absent")


def _copy_checkpoint(trained_run: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("best.json", "best.safetensors"):
        shutil.copy(trained_run / name, target / name)
    return target


def test_predict_tampered_checkpoint(capsys, trained_run, tmp_path):
    run = _copy_checkpoint(trained_run, tmp_path / "tampered")
    weights = run / "best.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    _images(tmp_path / "images", 1)
    code, _, err = _run(capsys, "predict", "--checkpoint", run, tmp_path / "images")
    _assert_one_line_error(code, err, "sha256")


def test_predict_weights_that_do_not_match_the_model(capsys, trained_run, tmp_path):
    original = load_checkpoint(trained_run)
    meta = original.meta.to_dict()
    meta["model"] = {**meta["model"], "args": {"widths": [4, 8, 8], "hidden": 16}}
    (tmp_path / "mismatch").mkdir()
    save_checkpoint(tmp_path / "mismatch" / "best", tensors=original.tensors, meta=meta)
    assert load_checkpoint(tmp_path / "mismatch").meta.model.args["hidden"] == 16
    _images(tmp_path / "images", 1)
    code, _, err = _run(
        capsys, "predict", "--checkpoint", tmp_path / "mismatch", tmp_path / "images"
    )
    _assert_one_line_error(code, err, "weights do not match the model")


def test_train_missing_data(capsys, tmp_path):
    code, _, err = _run(
        capsys, "train", "--data", tmp_path / "nothing", "--out", tmp_path / "run", "--no-progress"
    )
    _assert_one_line_error(code, err, "nothing")
    assert not (tmp_path / "run" / "best.json").exists()


def test_evaluate_missing_checkpoint(capsys, prepared_idc, tmp_path):
    code, _, err = _run(
        capsys,
        "evaluate",
        "--checkpoint",
        tmp_path / "no_run",
        "--data",
        prepared_idc,
        "--out",
        tmp_path / "ev",
    )
    _assert_one_line_error(code, err, "no_run")


def test_usage_error_has_no_traceback(capsys):
    code, _, err = _run(capsys, "predict")
    assert code == 2  # click's usage errors also exit 2
    assert "Traceback" not in err
    assert err.strip().startswith("error: ") and err.strip().count("\n") == 0  # one line
    assert "--help" in err


# -- as a real process -----------------------------------------------------------------------------


def _subprocess(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "breastpath.cli.main", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_subprocess_version():
    result = _subprocess("--version")
    assert result.returncode == 0, result.stderr
    assert breastpath.__version__ in result.stdout


def test_subprocess_error_is_one_line(trained_run, tmp_path):
    result = _subprocess("predict", "--checkpoint", trained_run, tmp_path / "nowhere.png")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere.png'}: no such file or folder"
    ]


def test_subprocess_prepare_error(tmp_path):
    result = _subprocess("prepare", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'nowhere'}: no such file or folder"]


def test_subprocess_predict(trained_run, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(synthetic_patch(np.random.default_rng(3), 1)).save(buffer, format="JPEG")
    path = tmp_path / "patch.jpg"
    path.write_bytes(buffer.getvalue())
    result = _subprocess("predict", "--checkpoint", trained_run, path)
    assert result.returncode == 0, result.stderr
    rows = _read_rows(result.stdout)
    assert len(rows) == 1 and 0.0 <= float(rows[0]["probability"]) <= 1.0


# -- one way to give the checkpoint; the positional form of earlier versions still works ----------


def test_predict_takes_the_checkpoint_as_an_option_and_defaults_to_the_bundled_model(
    capsys, trained_run, tmp_path
):
    files = _images(tmp_path / "images", 2)
    code, out, err = _run(capsys, "predict", "--checkpoint", trained_run, *files)
    assert code == 0, err
    assert "deprecated" not in err
    chosen = _read_rows(out)
    code, out, err = _run(capsys, "predict", *files)  # no --checkpoint: the default model
    assert code == 0, err
    assert [r["path"] for r in _read_rows(out)] == [r["path"] for r in chosen]


def test_the_positional_checkpoint_is_a_deprecated_alias(capsys, trained_run, tmp_path):
    files = _images(tmp_path / "images", 2)
    code, new, _ = _run(capsys, "predict", "--checkpoint", trained_run, *files)
    assert code == 0
    code, old, err = _run(capsys, "predict", trained_run, *files)
    assert code == 0, err
    assert old == new
    assert "deprecated" in err and f"--checkpoint {trained_run}" in err

    for command in ("evaluate", "export"):
        extra = ["--data", tmp_path] if command == "evaluate" else []
        code, _, err = _run(
            capsys, command, tmp_path / "no_run", *extra, "--out", tmp_path / "x.onnx"
        )
        lines = err.strip().splitlines()
        assert code == 2 and "Traceback" not in err
        assert lines[0].startswith("warning:") and "deprecated" in lines[0], command
        assert lines[-1].startswith("error:") and "no_run" in lines[-1], command


def test_the_checkpoint_is_given_once(capsys, trained_run, tmp_path):
    code, _, err = _run(
        capsys, "evaluate", trained_run, "--checkpoint", trained_run, "--data", tmp_path,
        "--out", tmp_path / "ev",
    )  # fmt: skip
    assert code == 2 and "once" in err and "Traceback" not in err


def test_export_format_is_a_deprecated_no_op(capsys, tmp_path):
    code, _, err = _run(
        capsys, "export", "--checkpoint", tmp_path / "no_run", "--format", "onnx",
        "--out", tmp_path / "m.onnx",
    )  # fmt: skip
    assert code == 2
    assert "--format is deprecated" in err and "no_run" in err.strip().splitlines()[-1]


# -- training options come from the config dataclasses --------------------------------------------


def _params(command) -> dict:
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("name", ["train", "crossval"])
def test_every_config_option_is_a_flag_with_its_allowed_values(name):
    import importlib
    import typing

    import click

    from breastpath.cli.options import NOT_FLAGS
    from breastpath.config import option_fields, option_type

    params = _params(importlib.import_module(f"breastpath.cli.{name}").command)
    for key in set(option_fields()) - NOT_FLAGS:
        assert key in params, f"{name} has no flag for {key}"
        hint = option_type(key)
        if typing.get_origin(hint) is typing.Literal:
            assert isinstance(params[key].type, click.Choice)
            assert tuple(params[key].type.choices) == typing.get_args(hint), key


def test_compare_budget_flags_default_to_the_budget():
    import dataclasses

    from breastpath.cli.compare import command
    from breastpath.experiments.compare import Budget

    params = _params(command)
    for item in dataclasses.fields(Budget):
        name = "threads" if item.name == "num_threads" else item.name
        assert params[name].default == item.default, item.name


def test_train_reads_flat_and_nested_config_files_alike(tmp_path):
    import yaml

    from breastpath.cli.train import train_config
    from breastpath.config import TrainConfig

    flat = {"model": "resnet18", "lr": 0.002, "epochs": 4, "stain_augment": "hed", "device": "cpu"}
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    nested = TrainConfig.from_flat(flat)
    run_yaml = {"train": nested.training_dict(), "runtime": nested.runtime.to_dict(), "data": {}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_yaml))
    options = {"input_size": None, "preset": False}
    for name in ("flat.yaml", "run.yaml"):
        config = train_config({}, config_file=str(tmp_path / name), **options)
        assert config == nested, name
    # flags win over the file, and a preset only fills what neither gives
    config = train_config(
        {"lr": 0.5, "epochs": None}, config_file=str(tmp_path / "flat.yaml"), input_size=64,
        preset=True,
    )  # fmt: skip
    assert (config.optim.lr, config.stop.epochs) == (0.5, 4)
    assert config.optim.optimizer == "adam" and config.model.args == {"input_size": 64}


def test_models_lists_the_registry_and_train_names_it(capsys):
    from breastpath.models.registry import list_models

    code, out, err = _run(capsys, "models")
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names == list_models() and "cancernet" in names
    code, out, err = _run(capsys, "train", "--help")
    assert "breastpath models" in out and "list_models" not in out


def test_an_unknown_model_is_refused_before_anything_is_said_of_its_weights(
    capsys, prepared_idc, tmp_path
):
    code, out, err = _run(
        capsys, "train", "--data", prepared_idc, "--out", tmp_path / "r", "--model", "resnet9000"
    )
    line = _assert_one_line_error(code, err, "unknown model 'resnet9000'")
    assert "from scratch" not in err + out and line
