"""A registry of model builders: ``create_model(name, *, num_classes, ...)``."""

from __future__ import annotations

from collections.abc import Callable
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


def create_model(
    name: str, *, num_classes: int, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build a model by name.

    Examples
    --------
    >>> net = create_model("cancernet", num_classes=2)
    >>> sum(p.numel() for p in net.parameters()) > 0
    True
    """
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return _BUILDERS[name](num_classes=num_classes, pretrained=pretrained, **kwargs)


@register_model("cancernet")
def _cancernet(*, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    from breastpath.models.cancernet import CancerNet

    if pretrained:
        raise UnknownModelError(
            "cancernet has no pretrained ImageNet weights; use pretrained=False"
        )
    return CancerNet(num_classes=num_classes, **kwargs)
