"""CNN + SVM hybrid: embeddings from a CNN backbone, classified by an RBF SVM.

The backbone is any model of the registry that has ``forward_embedding`` (CancerNet's dense
layer, a timm backbone's pooled features); the head is an :class:`~breastpath.models.svm.
RBFSVMHead`. The whole thing is an ``nn.Module`` whose ``forward`` returns log-probabilities,
so a checkpoint of it is used by the same :class:`~breastpath.inference.predictor.Predictor` (its
softmax gives the SVM's calibrated probabilities back).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeGuard, cast

import torch
from torch import nn

from breastpath.models.svm import RBFSVMHead


class _Embedder(Protocol):
    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor: ...


class _Backbone(_Embedder, Protocol):
    """What the hybrid calls on its backbone (CancerNet and the zoo models have all of it)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, features: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor: ...


def _has_embedding(model: nn.Module) -> TypeGuard[_Embedder]:
    return hasattr(model, "forward_embedding")


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Embeddings of a batch: ``model.forward_embedding(x)``, flattened to ``(N, D)``."""
    if not _has_embedding(model):
        raise TypeError(f"{type(model).__name__} has no forward_embedding(); cannot embed")
    return model.forward_embedding(x).flatten(1)


class SVMHybrid(nn.Module):
    """A CNN backbone and an RBF-SVM head.

    Parameters
    ----------
    num_classes
        Classes of the SVM.
    backbone
        ``{"name", "num_classes", "args"}`` of the backbone, as in a checkpoint's ``model``.
    feature_dim, n_support
        Shapes of the SVM head's buffers.

    Examples
    --------
    >>> import torch
    >>> spec = {"name": "cancernet", "num_classes": 2, "args": {"hidden": 8}}
    >>> net = SVMHybrid(num_classes=2, backbone=spec, feature_dim=8, n_support=3).eval()
    >>> net(torch.zeros(2, 3, 50, 50)).exp().sum(1).round(decimals=4).tolist()
    [1.0, 1.0]
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: dict[str, Any],
        feature_dim: int,
        n_support: int,
    ) -> None:
        from breastpath.models.registry import create_model

        super().__init__()
        self.backbone = create_model(
            backbone["name"], num_classes=int(backbone["num_classes"]), **backbone.get("args", {})
        )
        self.svm = RBFSVMHead(num_classes=num_classes, feature_dim=feature_dim, n_support=n_support)
        self.num_classes = num_classes
        config = getattr(self.backbone, "data_config", None)
        if config:
            self.data_config = config

    @property
    def _net(self) -> _Backbone:
        """The backbone, typed as what these methods call on it (unchecked, as before)."""
        return cast(_Backbone, self.backbone)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last convolutional feature map."""
        return self._net.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities from the backbone's feature map (lets Grad-CAM see the SVM)."""
        return self.svm(self._net.forward_head(features, pre_logits=True).flatten(1))

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return embed(self.backbone, x)

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        return self.svm.decision_function(self.forward_embedding(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.svm(self.forward_embedding(x))
