"""DDP through torchrun: two CPU processes (gloo) train exactly what one process trains, and
score a folder into the same CSV as one process."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from breastpath.data.augment import augment_batch
from breastpath.data.loader import BatchLoader, shard_bounds
from breastpath.train import distributed
from conftest import torchrun

#: Dropout masks are drawn per rank (on purpose), so the equality run trains without dropout.
TINY = {"widths": [8, 16, 16], "hidden": 32, "dropout": 0.0, "head_dropout": 0.0}


# -- pieces ---------------------------------------------------------------------------------------


def test_shards_partition_each_global_batch_in_order():
    images = np.zeros((123, 2, 2, 3), np.uint8)
    rows = np.arange(100, 123)
    one = BatchLoader(images, np.zeros(123, int), rows, batch_size=6, shuffle=True, seed=3)
    one.set_epoch(2)
    single = [b for _, _, b in one]
    shards = []
    for rank in range(3):
        loader = BatchLoader(
            images, np.zeros(123, int), rows, batch_size=6, shuffle=True, seed=3, rank=rank,
            world_size=3,
        )  # fmt: skip
        loader.set_epoch(2)
        assert len(loader) == len(one)
        shards.append([b for _, _, b in loader])
    for i, batch in enumerate(single):  # the last batch (5 rows) is split 2 + 2 + 1
        np.testing.assert_array_equal(np.concatenate([s[i] for s in shards]), batch)
    assert [shard_bounds(5, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 5)]
    # a last batch with fewer rows than ranks is dropped rather than leave a rank empty
    assert len(BatchLoader(images, np.zeros(123, int), rows[:13], batch_size=6, world_size=3)) == 2


@pytest.mark.parametrize("stain", ["none", "hed"])
def test_augmenting_the_padded_global_batch_matches_one_process(stain):
    """Each rank draws for the whole global batch and keeps its slice: rank-independent."""
    if stain != "none":
        pytest.importorskip("breastpath.stain")
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(40, 230, size=(7, 16, 16, 3), dtype=np.uint8))
    options = {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25), "device": "cpu"}
    options.update(jitter=0.1, stain=stain)
    expected = augment_batch(batch, generator=torch.Generator().manual_seed(5), **options)
    parts = []
    for rank in range(2):
        start, stop = shard_bounds(7, rank, 2)
        padded = distributed.pad_to_global(batch[start:stop], (start, stop, 7))
        out = augment_batch(padded, generator=torch.Generator().manual_seed(5), **options)
        parts.append(out[start:stop])
    torch.testing.assert_close(torch.cat(parts), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 3, 5, 4), (7, 5)])
def test_global_batchnorm_is_batchnorm_in_one_process(shape):
    """The layers DDP uses on CPU (float64 here): same output, gradients and running stats."""
    from breastpath.train.syncbn import globalize_batchnorm

    torch.manual_seed(0)
    reference = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1]).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    layer = copy.deepcopy(reference)
    assert globalize_batchnorm(layer, always=True) == []
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(*shape, dtype=torch.float64)
    (reference(x_ref) * weights).sum().backward()
    (layer(x_new) * weights).sum().backward()
    torch.testing.assert_close(layer(x), reference(x))
    torch.testing.assert_close(x_new.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    torch.testing.assert_close(layer.running_var, reference.running_var)
    assert int(layer.num_batches_tracked) == int(reference.num_batches_tracked) == 2
    layer.eval()
    torch.testing.assert_close(layer(x), reference.eval()(x))


def test_global_batchnorm_keeps_timm_activation():
    from timm.layers import BatchNormAct2d

    from breastpath.train.syncbn import globalize_batchnorm

    reference = BatchNormAct2d(4, act_layer=nn.ReLU)
    layer = copy.deepcopy(reference)
    assert globalize_batchnorm(layer, always=True) == []
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)
    assert float(layer(x).detach().min()) == 0.0


# -- DDP training equals one process --------------------------------------------------------------


def _val_probs(run: Path, data_dir: Path) -> np.ndarray:
    from breastpath.checkpoint import build_model, load_checkpoint
    from breastpath.data.cache import open_prepared
    from breastpath.inference.batches import predict_rows

    data = open_prepared(data_dir)
    state = load_checkpoint(run / "last.json")
    model = build_model(state)
    probs = predict_rows(
        model,
        data.images,
        data.indices("val"),
        mean=torch.tensor(state.meta.mean),
        std=torch.tensor(state.meta.std),
    )
    return probs


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_torchrun_two_processes_train_what_one_process_trains(prepared_idc, tmp_path, monkeypatch):
    """Same seed, same global batch, augmentation and class weights on: 2 gloo processes give the
    weights and validation probabilities of one process.

    torch's channels-last CPU batch norm sums in float32, so one process is itself only
    reproducible to about 1e-3 across thread counts (measured: losses 7e-3, val probs 7e-4
    between 1 and 2 threads). The tight comparison is therefore with one process whose batch norm
    uses the same float64-accumulated statistics as the DDP layers; the plain one-process run is
    checked at its own noise level. SGD at a small learning rate keeps float32 noise from being
    amplified (Adagrad's first steps are +-lr even for noise-sized gradients).
    """
    from breastpath.checkpoint import load_checkpoint
    from breastpath.config import TrainConfig
    from breastpath.models import create_model
    from breastpath.train import loop
    from breastpath.train import run as run_setup
    from breastpath.train.syncbn import globalize_batchnorm

    options = {
        "epochs": 2,
        "batch_size": 16,  # the global batch: 8 rows per process
        "lr": 0.001,
        "optimizer": "sgd",
        "model_args": TINY,
        "device": "cpu",
        "patience": 10,
        "progress": False,
    }  # augmentation and class weights stay on (the defaults)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"train": options}))
    torchrun(
        "train",
        "--data",
        str(prepared_idc),
        "--out",
        str(tmp_path / "ddp"),
        "--config",
        str(tmp_path / "train.yaml"),
    )
    config = TrainConfig.from_dict(options)
    loop.train(prepared_idc, tmp_path / "plain", config)

    def exact_batchnorm_model(*args, **kwargs):
        model = create_model(*args, **kwargs)
        assert globalize_batchnorm(model, always=True) == []
        return model

    monkeypatch.setattr(run_setup, "create_model", exact_batchnorm_model)
    loop.train(prepared_idc, tmp_path / "one", config)

    ddp, one, plain = (_history(tmp_path / name) for name in ("ddp", "one", "plain"))
    assert len(ddp) == 2  # written once, by rank 0
    for a, b, c in zip(ddp, one, plain, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), key
        for key in ("train_loss", "val_loss"):  # accuracies may flip a near-tie row
            assert float(a[key]) == pytest.approx(float(c[key]), abs=2e-2), key
    weights_ddp = load_checkpoint(tmp_path / "ddp" / "last.json").model_state()
    weights_one = load_checkpoint(tmp_path / "one" / "last.json").model_state()
    assert weights_ddp.keys() == weights_one.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_ddp[name], tensor, rtol=0, atol=2e-4, msg=name)
    probs_ddp = _val_probs(tmp_path / "ddp", prepared_idc)
    np.testing.assert_allclose(probs_ddp, _val_probs(tmp_path / "one", prepared_idc), atol=1e-4)
    np.testing.assert_allclose(probs_ddp, _val_probs(tmp_path / "plain", prepared_idc), atol=1e-2)
    meta = json.loads((tmp_path / "ddp" / "best.json").read_text())
    assert 0 < meta["threshold"] < 1


# -- sharded prediction ---------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_torchrun_two_processes_predict_a_folder_like_one_process(tmp_path):
    from breastpath.cli.main import main
    from conftest import save_png, synthetic_patch

    rng = np.random.default_rng(7)
    folder = tmp_path / "images"
    for i in range(11):  # an odd count: shards of 6 and 5
        save_png(folder / f"p{i % 3}" / f"patch_{i:02d}.png", synthetic_patch(rng, i % 2))
    (folder / "p0" / "broken.png").write_bytes(b"not a png")
    assert main(["predict", str(folder), "--out", str(tmp_path / "one.csv")]) == 0
    torchrun("predict", "--checkpoint", "default", str(folder), "--out", str(tmp_path / "two.csv"))

    one, two = _read_csv(tmp_path / "one.csv"), _read_csv(tmp_path / "two.csv")
    assert len(one) == 12
    assert [r["path"] for r in two] == [r["path"] for r in one]  # same (sorted) order
    # What is guaranteed: each image is scored by the same float32 model in both runs, but torch's
    # CPU kernels sum in an order that depends on the thread count (about 1e-7 relative), and the
    # CSV rounds to 6 decimals (up to 5e-7 per value). 1e-5 bounds both with margin; a sharding
    # bug (a wrong image, a wrong order) moves a probability by far more than 1e-3.
    tolerance = 1e-5
    for a, b in zip(two, one, strict=True):
        assert (a["threshold"], a["error"]) == (b["threshold"], b["error"])
        if b["probability"]:
            assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=tolerance)
            if abs(float(b["probability"]) - float(b["threshold"])) > tolerance:
                assert a["label"] == b["label"]
    assert sum(bool(r["error"]) for r in two) == 1
