"""Grad-CAM (Selvaraju et al. 2017): where in an image a CNN found evidence for a class.

The class score's gradient with respect to a convolutional feature map, averaged over space,
weights the map's channels; the ReLU of the weighted sum, upsampled to the input size and scaled
to ``[0, 1]`` per image, is the map.

Models with ``forward_features`` / ``forward_head`` (:class:`~breastpath.models.cancernet.
CancerNet`, timm models) use the output of ``forward_features`` by default; any other CNN uses
``layer`` (a module or its dotted name) or, when none is given, its last ``nn.Conv2d``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["grad_cam", "last_conv_layer"]


class _SplitModel(Protocol):
    """A model run in two steps: feature map, then head (CancerNet, timm models)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, features: torch.Tensor) -> torch.Tensor: ...


def _is_split(model: nn.Module) -> TypeGuard[_SplitModel]:
    return hasattr(model, "forward_features") and hasattr(model, "forward_head")


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model`` in registration order.

    Raises
    ------
    ValueError
        The model has no 2-D convolution.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer: pass layer=")
    return convs[-1]


def _resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no submodule {layer!r}") from None


def _targets(
    target_class: int | Sequence[int] | torch.Tensor, n: int, classes: int
) -> torch.Tensor:
    target = torch.as_tensor(target_class, dtype=torch.long).reshape(-1)
    if target.numel() == 1:
        target = target.expand(n)
    if target.numel() != n:
        raise ValueError(f"target_class has {target.numel()} entries for a batch of {n}")
    if bool(((target < 0) | (target >= classes)).any()):
        raise ValueError(f"target_class must be in [0, {classes}), got {target.tolist()}")
    return target


def _features_and_logits(
    model: nn.Module, x: torch.Tensor, layer: nn.Module | str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model once, keeping the feature map that the gradient is taken against."""
    if layer is None and _is_split(model):
        features = model.forward_features(x)
        return features, model.forward_head(features)
    module = _resolve_layer(model, layer) if layer is not None else last_conv_layer(model)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        # A clone keeps the captured map intact when the next layer works in place (ReLU).
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {module.__class__.__name__} was not used by the forward pass")
    return captured[-1], logits


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target_class: int | Sequence[int] | torch.Tensor,
    layer: nn.Module | str | None = None,
    upsample: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps of a batch for one class (or one class per image).

    Parameters
    ----------
    model
        A classifier returning logits ``(N, C)``; put it in ``eval()`` mode first (batch norm
        and dropout then act per image, so one backward pass serves the whole batch).
    x
        Model input ``(N, 3, H, W)``, already normalised as the model expects.
    target_class
        Class whose score is explained: one index for all images, or one per image.
    layer
        The feature map to explain: a module of ``model`` or its dotted name (``"features.2"``).
        Default: ``forward_features`` when the model has it, else the last ``nn.Conv2d``.
    upsample
        Resize the maps to ``(H, W)`` (bilinear); otherwise keep the feature map's size.
    normalize
        Scale each map by its own maximum. ``False`` keeps the raw values, which can be compared
        across images (normalise tiles of one image together, for instance).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float32 on ``x``'s device, non-negative; normalised, 1 marks the strongest
        evidence for the class in each image. An image without positive evidence is all zeros.

    Examples
    --------
    >>> import torch
    >>> from breastpath.models.cancernet import CancerNet
    >>> net = CancerNet(num_classes=2).eval()
    >>> grad_cam(net, torch.rand(2, 3, 50, 50), target_class=1).shape
    torch.Size([2, 50, 50])
    """
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()  # a normal tensor even when called under inference_mode
        features, logits = _features_and_logits(model, x, layer)
        if features.ndim != 4:
            raise ValueError(f"the explained layer gives shape {tuple(features.shape)}, not NCHW")
        target = _targets(target_class, x.shape[0], logits.shape[1]).to(logits.device)
        score = logits.gather(1, target[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, features)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features.detach()).sum(dim=1, keepdim=True)).float()
    if upsample:
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[:, 0].detach()
    if not normalize:
        return cam
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp_(0.0, 1.0)
