"""Stain normalization through the pipeline: prepare --stain, train, checkpoint, predict, serve,
and the ``breastpath stain`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from stain_support import HE, HE_OTHER, he_tile

from breastpath.cli.main import _register, cli
from breastpath.config import DataConfig, TrainConfig
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from breastpath.data.stain_cache import sample_rows
from breastpath.errors import CheckpointError, ConfigError
from breastpath.imaging import decode_image
from breastpath.inference.predictor import Predictor
from breastpath.stain import get_normalizer
from conftest import save_png


def _make_tree(root: Path, *, patients: int = 10, per_class: int = 5) -> Path:
    """IDC layout; even patients stained like ``HE``, odd ones like ``HE_OTHER``; cancer has
    more hematoxylin."""
    rng = np.random.default_rng(3)
    for p in range(patients):
        patient = str(20000 + p)
        stains = HE if p % 2 == 0 else HE_OTHER
        for label in (0, 1):
            scale = (0.35, 0.45) if label == 0 else (0.9, 0.25)
            for i in range(per_class):
                tile = he_tile(rng, (50, 50), stains=stains, scale=scale)
                name = f"{patient}_idx5_x{50 * i + 1}_y{50 * label + 1}_class{label}.png"
                save_png(root / patient / str(label) / name, tile)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return _make_tree(tmp_path_factory.mktemp("stain-tree") / "IDC")


@pytest.fixture(scope="module")
def raw_cache(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stain-raw") / "prepared"
    prepare([tree], out, config=DataConfig(test_frac=0.2, val_frac=0.2, seed=0))
    return out


@pytest.fixture(scope="module")
def stained_cache(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stain-vahadane") / "prepared"
    config = DataConfig(test_frac=0.2, val_frac=0.2, seed=0, stain="vahadane", stain_sample=12)
    prepare([tree], out, config=config)
    return out


@pytest.fixture(scope="module")
def stained_run(stained_cache, tmp_path_factory) -> Path:
    from breastpath.train.loop import train

    run = tmp_path_factory.mktemp("stain-run") / "run"
    config = TrainConfig.from_flat(
        epochs=1,
        batch_size=16,
        progress=False,
        model_args={"widths": [8, 16, 16], "hidden": 16},
        stain_augment="macenko",
    )
    train(stained_cache, run, config)
    return run


def test_target_is_fitted_on_a_seeded_sample_of_training_images_only(raw_cache, stained_cache):
    raw, stained = open_prepared(raw_cache), open_prepared(stained_cache)
    assert "stain" not in raw.meta and "stain_info" not in raw.meta
    info = stained.meta["stain_info"]
    assert info["method"] == "vahadane" and info["fitted_on"] == "train" and info["sample"] == 12
    train_rows = raw.indices("train")
    chosen = sample_rows(train_rows, count=12, seed=0)
    assert set(chosen) <= set(train_rows)
    expected = get_normalizer("vahadane", seed=0).fit(np.asarray(raw.images[chosen])).to_dict()
    assert stained.meta["stain"] == expected
    # a different sample of training rows (or test rows) gives a different target
    other = get_normalizer("vahadane", seed=0).fit(np.asarray(raw.images[raw.indices("test")]))
    assert other.to_dict()["target"] != stained.meta["stain"]["target"]


def test_every_split_is_normalized_and_statistics_follow(raw_cache, stained_cache):
    raw, stained = open_prepared(raw_cache), open_prepared(stained_cache)
    assert [r["path"] for r in raw.rows] == [r["path"] for r in stained.rows]
    for split in ("train", "val", "test"):
        rows = raw.indices(split)
        diff = np.abs(raw.images[rows].astype(int) - stained.images[rows].astype(int)).mean()
        assert diff > 1.0, split
    assert stained.meta["mean"] != raw.meta["mean"]

    # normalizing pulls the two stain appearances together: the per-patient colour spread shrinks
    def spread(data) -> float:
        means = [
            data.images[np.flatnonzero(data.patients == p)].reshape(-1, 3).mean(0)
            for p in np.unique(data.patients)
        ]
        return float(np.std(means, axis=0).mean())

    assert spread(stained) < spread(raw)


def test_checkpoint_carries_the_target_and_the_predictor_applies_it(stained_cache, stained_run):
    data = open_prepared(stained_cache)
    meta = json.loads((stained_run / "best.json").read_text())
    assert meta["stain"] == data.meta["stain"]
    assert meta["train"]["augment"]["stain_augment"] == "macenko"
    predictor = Predictor.from_checkpoint(stained_run)
    assert predictor.stain is not None and predictor.stain.method == "vahadane"
    rows = data.indices("test")[:6]
    decoded = [decode_image(data.rows[r]["path"]) for r in rows]
    # a raw file through the predictor == the normalized cache row, byte for byte
    assert np.array_equal(predictor.prepare(decoded), data.images[rows])
    # and scores the same as the cache row does
    from_files = predictor.predict_proba(predictor.prepare(decoded))
    from_cache = predictor.predict_proba(predictor.cache_input(data.images[rows], data.meta))
    np.testing.assert_allclose(from_files, from_cache, atol=1e-6)


def test_evaluating_a_raw_cache_normalizes_on_the_fly(raw_cache, stained_cache, stained_run):
    from breastpath.evaluate.pipeline import score_rows

    raw, stained = open_prepared(raw_cache), open_prepared(stained_cache)
    predictor = Predictor.from_checkpoint(stained_run)
    rows = raw.indices("test")
    np.testing.assert_allclose(
        score_rows(predictor, raw, rows), score_rows(predictor, stained, rows), atol=1e-6
    )


def test_mismatched_normalization_is_refused(raw_cache, stained_cache, stained_run, trained_run):
    raw, stained = open_prepared(raw_cache), open_prepared(stained_cache)
    plain = Predictor.from_checkpoint(trained_run)  # trained on raw images
    assert plain.stain is None
    block = np.asarray(stained.images[:4])
    with pytest.raises(CheckpointError, match="stain"):
        plain.cache_input(block, stained.meta)
    other = dict(stained.meta["stain"], target={**stained.meta["stain"]["target"]})
    other["target"]["max_concentrations"] = [1.0, 1.0]
    with pytest.raises(CheckpointError, match="stain"):
        Predictor.from_checkpoint(stained_run).cache_input(block, {"stain": other})
    # a raw model on raw data: untouched
    assert np.array_equal(plain.cache_input(np.asarray(raw.images[:4]), raw.meta), raw.images[:4])


def test_serve_scores_with_the_checkpoint_stain(stained_run, tree):
    from fastapi.testclient import TestClient

    from breastpath.serve.app import create_app

    predictor = Predictor.from_checkpoint(stained_run)
    path = next(iter(sorted(tree.rglob("*.png"))))
    expected = predictor.predict_images([decode_image(path)])[0].probability
    with TestClient(create_app(predictor)) as client:
        response = client.post(
            "/api/predict", files={"file": (path.name, path.read_bytes(), "image/png")}
        )
    assert response.status_code == 200, response.text
    assert response.json()["probability"] == pytest.approx(expected, abs=1e-6)
    # without the normalization the score differs: the stain step is really applied
    raw_input = predictor.resize([decode_image(path)])
    unnormalized = predictor.cancer_probability(predictor.predict_proba(raw_input))[0]
    assert abs(unnormalized - expected) > 1e-6


def test_stain_augmentation_is_seeded_and_changes_images():
    from breastpath.data.augment import augment_batch

    rng = np.random.default_rng(0)
    batch = torch.from_numpy(np.stack([he_tile(rng, (32, 32)) for _ in range(8)]))
    mean, std = torch.zeros(3), torch.ones(3)

    def run(stain: str, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return augment_batch(
            batch, mean=mean, std=std, device="cpu", generator=generator, jitter=0.0, stain=stain
        )

    for method in ("hed", "ruifrok", "macenko"):
        a, b, c = run(method, 1), run(method, 1), run(method, 2)
        assert torch.equal(a, b), method
        assert not torch.equal(a, c), method
        plain = run("none", 1)
        assert (a - plain).abs().mean() > 1e-3, method


def test_unknown_stain_options_are_refused():
    with pytest.raises(ConfigError, match="stain"):
        DataConfig(stain="vahadan").validate()
    with pytest.raises(ConfigError, match="stain_augment"):
        TrainConfig.from_dict({"stain_augment": "tellez"})
    with pytest.raises(ConfigError, match="stain_sigma"):
        TrainConfig.from_dict({"stain_sigma": 2.0})


# ---------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


def test_cli_fit_apply_compare(runner, tmp_path):
    rng = np.random.default_rng(5)
    target = save_png(tmp_path / "target.png", he_tile(rng, (64, 64), stains=HE))
    sources = tmp_path / "in"
    for i in range(3):
        save_png(sources / "sub" / f"s{i}.png", he_tile(rng, (40, 48), stains=HE_OTHER))
    (sources / "broken.png").write_bytes(b"not a png")

    result = runner.invoke(
        cli, ["stain", "fit", str(target), "--method", "macenko", "--out", str(tmp_path / "t.json")]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["method"] == "macenko"

    result = runner.invoke(
        cli,
        [
            "stain",
            "apply",
            str(sources),
            "--target",
            str(tmp_path / "t.json"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "1 of 4" in result.output
    written = sorted((tmp_path / "out").rglob("*.png"))
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        "sub/s0.png",
        "sub/s1.png",
        "sub/s2.png",
    ]
    normalizer = get_normalizer("macenko", seed=0).fit(decode_image(target))
    original = decode_image(sources / "sub" / "s0.png")
    assert decode_image(written[0]).shape == original.shape
    assert np.array_equal(decode_image(written[0]), normalizer.transform(original))

    figure = tmp_path / "figure.png"
    result = runner.invoke(
        cli,
        ["stain", "compare", str(sources / "sub"), "--target", str(target), "--out", str(figure)],
    )
    assert result.exit_code == 0, result.output
    image = decode_image(figure)
    assert image.shape[0] > 200 and image.shape[1] > 400  # 4 rows x 4 columns of panels


def test_cli_errors_are_one_line(runner, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    result = runner.invoke(
        cli, ["stain", "fit", str(tmp_path / "bad.png"), "--out", str(tmp_path / "t.json")]
    )
    assert result.exit_code == 2 and "error:" in result.output
    assert not (tmp_path / "t.json").exists()
    result = runner.invoke(
        cli,
        [
            "stain",
            "apply",
            str(tmp_path),
            "--target",
            str(tmp_path / "missing.json"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2 and "error:" in result.output
    result = runner.invoke(
        cli, ["stain", "fit", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "t.json")]
    )
    assert result.exit_code == 2 and "no such file" in result.output


def test_split_views_of_a_stained_cache_are_refused(stained_cache, tmp_path):
    from breastpath.data.views import write_split_view
    from breastpath.errors import CacheError

    data = open_prepared(stained_cache)
    splits = {p: "train" for p in set(data.patients.tolist())}
    with pytest.raises(CacheError, match="stain"):
        write_split_view(data, tmp_path / "view", splits)
    assert not (tmp_path / "view" / "meta.json").exists()


def test_a_fixed_target_fitted_elsewhere_normalizes_the_cache_and_allows_folds(
    tree, raw_cache, tmp_path
):
    """``prepare --stain-target``: every image normalized to a target fitted on other images
    (here: tiles of a third stain); the cache carries it (so every checkpoint trained on it), and
    cross-validation views of it work."""
    from breastpath.data.views import write_split_view
    from breastpath.io import write_json
    from breastpath.stain import load_target_file

    rng = np.random.default_rng(11)
    other = np.stack([he_tile(rng, (50, 50), stains=HE, scale=(0.6, 0.6)) for _ in range(8)])
    target = get_normalizer("macenko").fit(other)
    write_json(tmp_path / "target.json", target.to_dict())
    out = tmp_path / "prepared"
    prepare(
        [tree],
        out,
        config=DataConfig(test_frac=0.2, val_frac=0.2, stain_target=str(tmp_path / "target.json")),
    )
    fixed, raw = open_prepared(out), open_prepared(raw_cache)
    assert fixed.meta["stain"] == target.to_dict()
    assert fixed.meta["stain_info"]["fitted_on"] == "target file"
    assert fixed.meta["stain_info"]["target"] == "target.json"  # the name, never a machine path
    expected = load_target_file(tmp_path / "target.json").transform(np.asarray(raw.images[:4]))
    np.testing.assert_array_equal(np.asarray(fixed.images[:4]), expected)
    splits = {p: "train" for p in set(fixed.patients.tolist())}
    view = open_prepared(write_split_view(fixed, tmp_path / "view", splits))
    assert view.meta["stain"] == target.to_dict()
    with pytest.raises(ConfigError, match="not both"):
        DataConfig(stain="macenko", stain_target="target.json").validate()
