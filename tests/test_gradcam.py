"""Grad-CAM: shapes and range, localisation on a model whose answer we know, layer choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from breastpath.models.cancernet import CancerNet
from breastpath.models.gradcam import grad_cam, last_conv_layer


class RedDetector(nn.Module):
    """Class 1 score = mean red activation; class 0 = its negative. Uses an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def _red_square(n: int = 2) -> torch.Tensor:
    x = torch.zeros(n, 3, 32, 32)
    x[0, 0, 4:12, 20:28] = 1.0  # top right
    if n > 1:
        x[1, 0, 20:30, 2:10] = 1.0  # bottom left
    return x


@pytest.mark.parametrize("layer", [None, "conv"])
def test_grad_cam_finds_the_evidence(layer):
    model = RedDetector().eval()
    x = _red_square()
    cam = grad_cam(model, x, target_class=1, layer=layer)
    assert cam.shape == (2, 32, 32) and cam.dtype == torch.float32
    assert float(cam.min()) >= 0.0 and float(cam.max()) == pytest.approx(1.0)
    assert torch.allclose(cam[0, 4:12, 20:28], torch.ones(8, 8))
    assert float(cam[0, 16:, :16].max()) == 0.0
    assert torch.allclose(cam[1, 20:30, 2:10], torch.ones(10, 8))
    assert float(cam[1, :16, 16:].max()) == 0.0


def test_no_positive_evidence_gives_zeros():
    cam = grad_cam(RedDetector().eval(), _red_square(), target_class=0)
    assert float(cam.abs().max()) == 0.0


def test_per_image_targets_and_raw_values():
    model = RedDetector().eval()
    cam = grad_cam(model, _red_square(), target_class=[1, 0], normalize=False)
    assert float(cam[0].max()) > 0 and float(cam[1].max()) == 0.0
    small = grad_cam(model, _red_square() * 0.5, target_class=1, normalize=False)
    assert float(small[0].max()) == pytest.approx(0.5 * float(cam[0].max()), rel=1e-5)


def test_cancernet_default_layer_and_no_side_effects():
    torch.manual_seed(0)
    net = CancerNet(num_classes=2, widths=(8, 16, 16), hidden=16).eval()
    x = torch.randn(3, 3, 50, 50)
    with torch.inference_mode():  # as inside Predictor.predict_proba
        cam = grad_cam(net, x, target_class=1)
    assert cam.shape == (3, 50, 50)
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
    assert all(p.grad is None for p in net.parameters())
    coarse = grad_cam(net, x, target_class=1, upsample=False)
    assert coarse.shape == (3, 6, 6)  # CancerNet's last feature map for 50x50 input
    # the same map through the generic path (hook on the last stage)
    hooked = grad_cam(net, x, target_class=1, layer=net.features, upsample=False)
    assert torch.allclose(coarse, hooked, atol=1e-5)


def test_last_conv_layer_and_errors():
    model = RedDetector()
    assert last_conv_layer(model) is model.conv
    with pytest.raises(ValueError, match=r"no nn\.Conv2d"):
        last_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="no submodule"):
        grad_cam(model, _red_square(), target_class=1, layer="nope")
    with pytest.raises(ValueError, match="target_class"):
        grad_cam(model, _red_square(), target_class=2)
    with pytest.raises(ValueError, match="entries"):
        grad_cam(model, _red_square(), target_class=[1, 1, 1])
    with pytest.raises(ValueError, match="N, C, H, W"):
        grad_cam(model, torch.zeros(3, 32, 32), target_class=1)
