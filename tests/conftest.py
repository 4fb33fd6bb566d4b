"""Shared fixtures: small generated image trees, a prepared cache and a quickly trained run.

Generated patches are H&E-like colour fields with noise; class 1 is darker and more purple, so a
model can learn the difference in a few steps. Tests that need the real images in
``../shared/data`` use the ``shared_data`` fixture and skip with a reason when it is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BREASTPATH_SHARED_DATA", REPO.parent / "shared" / "data"))


def _coarse(values: np.ndarray, factor: int, size) -> np.ndarray:
    """``values`` repeated ``factor`` times along both axes, cut to ``size``."""
    return values.repeat(factor, 0).repeat(factor, 1)[: size[0], : size[1]]


def synthetic_patch(rng: np.random.Generator, label: int, size=(50, 50)) -> np.ndarray:
    """An H&E-like RGB patch; positives are darker and bluer.

    Like tissue, and unlike pixel noise, it has spatial structure (the quality gate refuses
    structureless noise): colour varies in 2-pixel cells and nuclei are 3-pixel blobs.
    """
    base = np.array([225, 160, 200]) if label == 0 else np.array([150, 90, 170])
    height, width = size
    cells = rng.normal(0, 18, size=(-(-height // 2), -(-width // 2), 3))
    noise = _coarse(cells, 2, size) + rng.normal(0, 4, size=(*size, 3))
    nuclei = rng.random((-(-height // 3), -(-width // 3))) < (0.05 if label == 0 else 0.25)
    image = base + noise
    image[_coarse(nuclei, 3, size)] -= 60
    return np.clip(image, 0, 255).astype(np.uint8)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``breastpath ARGS`` in two processes under torchrun (one thread each). ``--standalone``
    makes it pick a free rendezvous port, so concurrent test runs cannot collide on a fixed one."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "breastpath",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def save_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_breakhis_tiles(
    root: Path,
    subtypes: Sequence[tuple[str, str, int]],
    *,
    slides: int,
    tiles: int,
    size: tuple[int, int] = (50, 50),
    tint: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> Path:
    """``<class>/<subtype>/<slide>/<slide>-200X-tileNN.png`` for each ``(class, subtype, label)``
    (the ``c``-th gets slides ``1000 * (c + 1) + k``AB, one patient each); ``tint(image, c)``
    marks a subtype's tiles."""
    rng = np.random.default_rng(0)
    for c, (cls, subtype, label) in enumerate(subtypes):
        for slide in range(slides):
            slide_id = f"{1000 * (c + 1) + slide}AB"
            for tile in range(tiles):
                image = synthetic_patch(rng, label, size=size)
                if tint is not None:
                    image = tint(image, c)
                name = f"{slide_id}-200X-tile{tile:02d}.png"
                save_png(root / cls / subtype / slide_id / name, image)
    return root


def make_idc_tree(
    root: Path, *, patients: int = 10, per_class: int = 6, seed: int = 0, short_edge: int = 1
) -> Path:
    """``<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``; a few edge patches are short."""
    rng = np.random.default_rng(seed)
    for p in range(patients):
        patient = str(10000 + p)
        for label in (0, 1):
            count = per_class if label == 0 or p % 3 else per_class // 2
            for i in range(count):
                height = 37 if (i < short_edge and label == 0) else 50
                x, y = 50 * (i + 1) + 1, 50 * (label + 1) + 1
                patch = synthetic_patch(rng, label, size=(height, 50))
                save_png(
                    root / patient / str(label) / f"{patient}_idx5_x{x}_y{y}_class{label}.png",
                    patch,
                )
    return root


@pytest.fixture(scope="session")
def idc_tree(tmp_path_factory) -> Path:
    return make_idc_tree(tmp_path_factory.mktemp("idc") / "IDC")


@pytest.fixture(scope="session")
def prepared_idc(idc_tree, tmp_path_factory) -> Path:
    from breastpath.config import DataConfig
    from breastpath.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "idc"
    prepare([idc_tree], out, config=DataConfig(test_frac=0.2, val_frac=0.2, seed=0))
    return out


@pytest.fixture(scope="session")
def trained_run(prepared_idc, tmp_path_factory) -> Path:
    """A CancerNet trained for a few steps on the generated patches (seconds on a CPU)."""
    from breastpath.config import TrainConfig
    from breastpath.train.loop import train

    run = tmp_path_factory.mktemp("runs") / "run"
    config = TrainConfig.from_flat(
        epochs=3,
        batch_size=16,
        lr=0.01,
        progress=False,
        patience=10,
        model_args={"widths": [8, 16, 16], "hidden": 32},
    )
    train(prepared_idc, run, config)
    return run


@pytest.fixture(scope="module")
def predictor():
    """The bundled default model (no training needed); a module may override it."""
    from breastpath.inference.predictor import Predictor

    return Predictor.from_checkpoint("default")


@pytest.fixture(scope="module")
def client(predictor):
    """An in-process API client serving this module's ``predictor``."""
    from fastapi.testclient import TestClient

    from breastpath.serve.app import create_app

    with TestClient(create_app(predictor), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "idc").is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA} (set BREASTPATH_SHARED_DATA)")
    return SHARED_DATA
