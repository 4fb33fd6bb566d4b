"""A frozen backbone + a small head trained on its embeddings (``breastpath probe``).

The registered model ``probe`` is what a probe checkpoint rebuilds: its arguments name the
backbone (a registry name and its arguments), where its weights come from (a local file, the
offline ImageNet package, or a breastpath checkpoint) with that file's sha256, and the head
(``linear``: one linear layer, also used for logistic regression and the linear SVM; ``knn``:
the training embeddings and their labels). Only the head's tensors are in the checkpoint; the
backbone is rebuilt from its recorded weights, whose sha256 must still match.

The backbone is held outside the module tree (``state_dict`` and ``parameters`` are the
head's), always in eval mode, and moved with the model by ``.to()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from breastpath.errors import CheckpointError, ExplanationUnavailableError


@dataclass
class Backbone:
    """A built backbone and where its weights came from (what a probe checkpoint records)."""

    module: nn.Module
    name: str
    args: dict[str, Any]
    weights: str = ""
    pretrained: bool = False
    sha256: str = ""
    #: normalization the backbone expects; None: the training data's (CancerNet)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The ``backbone*`` arguments of a ``probe`` model."""
        return {
            "backbone": self.name,
            "backbone_args": dict(self.args),
            "backbone_weights": self.weights,
            "backbone_pretrained": self.pretrained,
            "backbone_sha256": self.sha256,
        }


def build_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = False,
    args: dict[str, Any] | None = None,
    sha256: str = "",
) -> Backbone:
    """Build ``name`` as a frozen embedder (eval mode, no gradients).

    ``weights`` may be a local state dict, or a breastpath checkpoint (a ``.json`` path or a
    bundled name such as ``default``) whose model must be ``name``: its arguments, class count
    and normalization are then taken from it. ``pretrained`` loads the offline ImageNet weights
    of a zoo model. When ``sha256`` is given the weights file must still have it.
    """
    from breastpath.models.pretrained import file_sha256, offline_weights_path
    from breastpath.models.registry import create_model, resolve_data_config

    args = dict(args or {})
    # 2 classes: a zoo model keeps the head its weights file may hold (an ImageNet one is
    # skipped by shape); embeddings are taken before any head
    num_classes, mean, std = 2, None, None
    path = _resolve_weights(weights)
    if path is not None and path.suffix == ".json":
        from breastpath.checkpoint import read_meta

        meta = read_meta(path)
        if meta.model.name != name:
            raise CheckpointError(f"{path}: holds a {meta.model.name} model, not {name}")
        args, num_classes = dict(meta.model.args), meta.model.num_classes
        mean, std = meta.mean, meta.std
    source = path if path is not None else (offline_weights_path(name) if pretrained else None)
    if torch.empty(0).device.type == "meta":  # a layout check: no weights, nothing to verify
        module = create_model(name, num_classes=num_classes, **args)
        return Backbone(module=module, name=name, args=args, mean=mean, std=std)
    digest = file_sha256(source) if source is not None and source.is_file() else ""
    if sha256 and digest != sha256:
        raise CheckpointError(
            f"backbone weights {source}: sha256 {digest[:12] or 'missing file'} does not match "
            f"the recorded {sha256[:12]} (the file changed since the probe was trained)"
        )
    module = create_model(
        name, num_classes=num_classes, pretrained=pretrained, weights=path, **args
    )
    module.eval().requires_grad_(False)
    config = resolve_data_config(name, args)
    if config is not None:
        mean, std = config.mean, config.std
    return Backbone(
        module=module,
        name=name,
        args=args,
        weights="" if weights is None else str(weights),
        pretrained=pretrained,
        sha256=digest,
        mean=mean,
        std=std,
        info=dict(getattr(module, "init_info", {})),
    )


def _resolve_weights(weights: str | Path | None) -> Path | None:
    if weights is None or str(weights) == "":
        return None
    from breastpath.checkpoint import BUNDLED, resolve_checkpoint

    text = str(weights)
    if text in BUNDLED or Path(text).suffix == ".json":
        return resolve_checkpoint(text)
    return Path(text)


def embed_batch(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` embeddings: ``forward_embedding`` when the model has one, else ``forward``
    (a foundation model built with ``num_classes=0``)."""
    fn: Callable[[torch.Tensor], torch.Tensor] = getattr(model, "forward_embedding", model)
    return fn(x).flatten(1)


class ProbeModel(nn.Module):
    """A frozen backbone and a probe head; ``forward`` returns logits.

    Parameters
    ----------
    num_classes
        Classes of the head.
    backbone, backbone_args, backbone_weights, backbone_pretrained, backbone_sha256
        The backbone (see :func:`build_backbone`).
    head
        ``linear`` (also logistic regression), ``svm`` (an RBF SVM, log-probabilities) or
        ``knn``.
    feature_dim
        Embedding length.
    knn_k, knn_size
        Neighbours and stored training embeddings of a ``knn`` head.
    n_support
        Support vectors of an ``svm`` head.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        backbone: str,
        feature_dim: int,
        backbone_args: dict[str, Any] | None = None,
        backbone_weights: str = "",
        backbone_pretrained: bool = False,
        backbone_sha256: str = "",
        head: str = "linear",
        knn_k: int = 20,
        knn_size: int = 0,
        n_support: int = 0,
    ) -> None:
        super().__init__()
        built = build_backbone(
            backbone,
            weights=backbone_weights or None,
            pretrained=backbone_pretrained,
            args=backbone_args,
            sha256=backbone_sha256,
        )
        self._frozen = [built.module]  # a list: not a submodule, not in state_dict
        self.num_classes = num_classes
        self.head_kind = head
        self.knn_k = knn_k
        if head == "linear":
            self.head: nn.Module = nn.Linear(feature_dim, num_classes)
        elif head == "svm":
            from breastpath.models.svm import RBFSVMHead

            self.head = RBFSVMHead(
                num_classes=num_classes, feature_dim=feature_dim, n_support=n_support
            )
        elif head == "knn":
            self.head = KNNHead(
                num_classes=num_classes, feature_dim=feature_dim, size=knn_size, k=knn_k
            )
        else:
            raise ValueError(f"unknown probe head {head!r}; use linear, svm or knn")
        config = getattr(built.module, "data_config", None)
        if config:
            self.data_config = config
        self.head_prefixes: tuple[str, ...] = ("head",)

    @property
    def backbone(self) -> nn.Module:
        return self._frozen[0]

    def _apply(self, fn: Callable, recurse: bool = True) -> ProbeModel:
        self._frozen[0] = self._frozen[0]._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> ProbeModel:
        super().train(mode)
        self._frozen[0].eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Grad-CAM's hook: a frozen-backbone probe gives no explanation (one clear error)."""
        raise ExplanationUnavailableError(
            "Grad-CAM is not available for a probe on a frozen backbone"
        )

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return embed_batch(self.backbone, x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_embedding(x))


class KNNHead(nn.Module):
    """Cosine k-nearest-neighbour vote over stored (L2-normalised) training embeddings;
    returns log vote fractions (a smoothed log-probability)."""

    bank: torch.Tensor
    labels: torch.Tensor

    def __init__(self, *, num_classes: int, feature_dim: int, size: int, k: int = 20) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("bank", torch.zeros(size, feature_dim))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bank = self.bank.to(x.dtype)
        similarity = torch.nn.functional.normalize(x, dim=1) @ bank.T
        k = min(self.k, len(bank))
        top = similarity.topk(k, dim=1).indices
        votes = torch.zeros(len(x), self.num_classes, device=x.device)
        votes.scatter_add_(1, self.labels[top], torch.ones_like(top, dtype=votes.dtype))
        return torch.log((votes + 0.5) / (k + 0.5 * self.num_classes))
