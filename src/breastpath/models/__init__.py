"""Models: a registry of records (:func:`create_model`) over CancerNet, timm backbones and the
SVM hybrid; see :mod:`breastpath.models.registry` for how to add one.

Nothing here downloads weights: ImageNet weights come from locally installed packages
(:mod:`breastpath.models.pretrained`) or from a file given as ``weights=PATH``.
"""

from breastpath.models.registry import (
    ModelData,
    ModelRecord,
    create_model,
    get_record,
    head_prefixes,
    list_models,
    register,
    register_model,
    resolve_data_config,
)

__all__ = [
    "ModelData",
    "ModelRecord",
    "create_model",
    "get_record",
    "head_prefixes",
    "list_models",
    "register",
    "register_model",
    "resolve_data_config",
]
