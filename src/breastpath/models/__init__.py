"""Models: a registry (:func:`create_model`) over CancerNet, timm backbones and the SVM hybrid.

Nothing here downloads weights: ImageNet weights come from locally installed packages
(:mod:`breastpath.models.pretrained`) or from a file given as ``weights=PATH``.
"""

from breastpath.models.registry import (
    create_model,
    head_prefixes,
    list_models,
    model_normalization,
    register_model,
)

__all__ = ["create_model", "head_prefixes", "list_models", "model_normalization", "register_model"]
