"""The one checkpoint contract: typed, validated metadata + safetensors weights (or ONNX).

- :mod:`breastpath.checkpoint.meta`   :class:`CheckpointMeta` (every field validated on load)
- :mod:`breastpath.checkpoint.files`  save / resolve / load, sha256, bundled checkpoints
- :mod:`breastpath.checkpoint.build`  checkpoint -> ``nn.Module``; optimizer state <-> tensors
"""

from breastpath.checkpoint.build import build_model, optimizer_from_tensors, optimizer_to_tensors
from breastpath.checkpoint.files import (
    BUNDLED,
    BUNDLED_CARDS,
    Checkpoint,
    assets_dir,
    attach_int8,
    bundled_name,
    load_checkpoint,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
    save_onnx_pair,
    update_checkpoint_json,
)
from breastpath.checkpoint.meta import (
    FORMAT,
    CheckpointMeta,
    ModelSpec,
    default_cancer_classes,
    parse_meta,
)

__all__ = [
    "BUNDLED",
    "BUNDLED_CARDS",
    "FORMAT",
    "Checkpoint",
    "CheckpointMeta",
    "ModelSpec",
    "assets_dir",
    "attach_int8",
    "build_model",
    "bundled_name",
    "default_cancer_classes",
    "load_checkpoint",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "parse_meta",
    "read_meta",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_onnx_pair",
    "update_checkpoint_json",
]
