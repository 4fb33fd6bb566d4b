"""A registry of model builders: ``create_model(name, *, num_classes, ...)``.

Names: ``cancernet`` (ours), the timm backbones of :data:`breastpath.models.zoo.TIMM_MODELS`
(``efficientnet_lite0``, ``resnet18``, ``resnet50``, ``inception_v3``, ``inception_resnet_v2``,
...) and ``svm_hybrid`` (a CNN backbone + RBF SVM head, rebuilt from a checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from breastpath.errors import UnknownModelError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a builder to the registry under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_BUILDERS)


def model_arguments(name: str) -> frozenset[str] | None:
    """The keyword arguments the builder of ``name`` accepts (besides ``num_classes`` and
    ``pretrained``); ``None`` when it takes any.

    Examples
    --------
    >>> sorted(model_arguments("efficientnet_lite0"))
    ['drop_path_rate', 'drop_rate', 'input_size', 'tag']
    """
    import inspect

    from breastpath.models.cancernet import CancerNet
    from breastpath.models.hybrid import SVMHybrid
    from breastpath.models.zoo import TIMM_MODELS, TimmClassifier

    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    target = {"cancernet": CancerNet, "svm_hybrid": SVMHybrid}.get(name)
    if target is None and name in TIMM_MODELS:
        target = TimmClassifier
    if target is None:
        return None
    parameters = inspect.signature(target.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters) - {"self", "arch", "num_classes", "pretrained"}


def create_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name
        A registered name (:func:`list_models`).
    num_classes
        Output logits.
    pretrained
        Load offline ImageNet weights (installed packages only; nothing is downloaded).
    weights
        A local state dict (timm/torchvision ``.pth``, ``.safetensors`` or a breastpath
        checkpoint) to start from instead; the classifier is kept only when its shape fits.
    **kwargs
        Model arguments (stored in checkpoints under ``model.args``).

    The model's ``init_info`` attribute says where its weights came from (``scratch`` when
    neither ``pretrained`` nor ``weights`` is given).

    Examples
    --------
    >>> net = create_model("cancernet", num_classes=2)
    >>> sum(p.numel() for p in net.parameters()) > 0
    True
    >>> net.init_info["source"]
    'scratch'
    """
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    model = _BUILDERS[name](
        num_classes=num_classes, pretrained=pretrained and weights is None, **kwargs
    )
    if weights is not None:
        from breastpath.models.pretrained import load_weights

        info = load_weights(model_body(model), weights, optional=_body_prefixes(model))
        info["source"] = f"weights file {Path(weights).name}"
        model.init_info = info
    elif not hasattr(model, "init_info"):
        model.init_info = {"source": "scratch"}
    return model


def model_body(model: nn.Module) -> nn.Module:
    """The module that holds a model's own weights (a timm backbone, else the model)."""
    return getattr(model, "backbone", model) if hasattr(model, "data_config") else model


def _body_prefixes(model: nn.Module) -> tuple[str, ...]:
    prefixes = head_prefixes(model)
    if model_body(model) is not model:
        prefixes = tuple(p.removeprefix("backbone.") for p in prefixes)
    return prefixes


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the classification head (what stage 1 of fine-tuning trains).

    Examples
    --------
    >>> head_prefixes(create_model("cancernet", num_classes=2))
    ('head', 'classifier')
    """
    return tuple(getattr(model, "head_prefixes", ("classifier", "fc", "head")))


def model_normalization(model: nn.Module) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` the model wants its inputs normalised with, when it knows them (timm's
    data config); ``None`` for models normalised with the training data's statistics."""
    config = getattr(model, "data_config", None)
    if not config:
        return None
    return list(config["mean"]), list(config["std"])


@register_model("cancernet")
def _cancernet(*, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    from breastpath.models.cancernet import CancerNet

    if pretrained:
        raise UnknownModelError(
            "cancernet has no pretrained ImageNet weights; use pretrained=False"
        )
    return CancerNet(num_classes=num_classes, **kwargs)


def _register_zoo() -> None:
    from breastpath.models.zoo import TIMM_MODELS, build_timm

    for zoo_name in TIMM_MODELS:

        def builder(*, num_classes: int, _name: str = zoo_name, **kwargs: Any) -> nn.Module:
            return build_timm(_name, num_classes=num_classes, **kwargs)

        register_model(zoo_name)(builder)


@register_model("svm_hybrid")
def _svm_hybrid(*, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    from breastpath.models.hybrid import SVMHybrid

    if pretrained:
        raise UnknownModelError("svm_hybrid is built by `breastpath train --head svm`")
    return SVMHybrid(num_classes=num_classes, **kwargs)


_register_zoo()
