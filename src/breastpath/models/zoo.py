"""timm backbones for transfer learning: EfficientNet-Lite, ResNet, Inception.

A :class:`TimmClassifier` wraps a timm model built with ``pretrained=False`` (timm never
downloads anything here; ImageNet weights come from local files, see
:mod:`breastpath.models.pretrained`). It knows its own preprocessing from timm's data config
(``mean``, ``std``, ``input_size``) and resizes whatever it is given to its working size inside
``forward`` (bilinear), so that a checkpoint keeps the cache's input size (IDC 50x50 patches)
and the :class:`~breastpath.inference.predictor.Predictor` preprocesses as for any other model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: breastpath model name -> timm architecture.
TIMM_MODELS: dict[str, str] = {
    "efficientnet_lite0": "efficientnet_lite0",
    "efficientnet_lite1": "efficientnet_lite1",
    "efficientnet_lite2": "efficientnet_lite2",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
}


class TimmClassifier(nn.Module):
    """A timm backbone with its data config and an input-resizing front.

    Parameters
    ----------
    arch
        timm architecture name (see :data:`TIMM_MODELS`).
    num_classes
        Output logits.
    input_size
        Side the backbone works at; ``None`` takes timm's default for ``arch`` (224 or 299).
    tag
        Optional timm pretrained tag (e.g. ``"tv_in1k"``) whose data config (mean/std) to use;
        it only selects the configuration, nothing is downloaded.
    drop_rate, drop_path_rate
        Dropout before the classifier and stochastic depth (where the backbone has it).

    Examples
    --------
    >>> import torch
    >>> net = TimmClassifier("resnet18", num_classes=2, input_size=64).eval()
    >>> net(torch.zeros(1, 3, 50, 50)).shape
    torch.Size([1, 2])
    >>> net.data_config["mean"]
    [0.485, 0.456, 0.406]
    """

    def __init__(
        self,
        arch: str,
        *,
        num_classes: int,
        input_size: int | None = None,
        tag: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        import timm
        from timm.data import resolve_model_data_config

        super().__init__()
        options: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
        if drop_path_rate:
            options["drop_path_rate"] = drop_path_rate
        full_name = f"{arch}.{tag}" if tag else arch
        self.backbone = timm.create_model(full_name, pretrained=False, **options)
        config = resolve_model_data_config(self.backbone)
        side = int(input_size or config["input_size"][-1])
        if side < 32:
            raise ValueError(f"input_size must be at least 32, got {side}")
        self.arch = arch
        self.num_classes = num_classes
        self.input_size = (side, side)
        self.data_config: dict[str, Any] = {
            "input_size": [3, side, side],
            "default_input_size": list(config["input_size"]),
            "mean": [float(v) for v in config["mean"]],
            "std": [float(v) for v in config["std"]],
            "interpolation": "bilinear",
            "source": f"timm {timm.__version__} data config of {full_name}",
        }
        head = self.backbone.get_classifier()
        if isinstance(head, nn.Linear):
            # timm's TF-style init draws U(+-1/sqrt(num_classes)): logits of +-30 over 1280
            # ImageNet features for 2 classes; a small head starts fine-tuning near 0.69 loss
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        classifier = self.backbone.pretrained_cfg.get("classifier") or "classifier"
        #: parameter-name prefixes of the classification head (the rest is the backbone)
        self.head_prefixes: tuple[str, ...] = (f"backbone.{classifier}",)
        #: where the weights came from (set by the builders; not saved in the state dict)
        self.init_info: dict[str, Any] = {"source": "scratch"}

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Bring an NCHW batch to the working size (no-op when it already is)."""
        if tuple(x.shape[-2:]) == self.input_size:
            return x
        shrink = x.shape[-1] > self.input_size[1] or x.shape[-2] > self.input_size[0]
        return F.interpolate(
            x, size=self.input_size, mode="bilinear", align_corners=False, antialias=shrink
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map (for Grad-CAM)."""
        return self.backbone.forward_features(self.resize(x))

    def forward_head(self, features: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(features, pre_logits=pre_logits)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier (the embeddings of the SVM hybrid)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_timm(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    **kwargs: Any,
) -> TimmClassifier:
    """Build a zoo model; ``pretrained=True`` loads its offline ImageNet weights."""
    from breastpath.models.pretrained import load_imagenet

    model = TimmClassifier(TIMM_MODELS[name], num_classes=num_classes, **kwargs)
    if pretrained:
        model.init_info = load_imagenet(model.backbone, name, optional=_strip(model.head_prefixes))
    return model


def _strip(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.removeprefix("backbone.") for p in prefixes)
