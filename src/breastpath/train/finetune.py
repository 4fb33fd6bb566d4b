"""Two-stage fine-tuning and discriminative learning rates.

Stage 1 (the first ``freeze_epochs`` epochs) trains only the classification head at ``lr``,
with the backbone frozen (no gradients, batch-norm statistics fixed). Stage 2 trains every layer
on the schedule of :func:`~breastpath.train.optim.lr_at` over the remaining epochs, scaled by
``finetune_lr_scale``, and the backbone's learning rate is ``backbone_lr_scale`` times the
head's (discriminative learning rates). The head is what the model's registry record names
(:attr:`~breastpath.models.registry.ModelRecord.head_prefixes`): the timm classifier, CancerNet's
dense head.

With the defaults (no freezing, both scales 1) the optimizer gets one parameter group and the
learning rate of :func:`~breastpath.train.optim.lr_at`: plain training, unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from breastpath.config import TrainConfig
from breastpath.models import head_prefixes
from breastpath.train.optim import lr_at


def _is_head(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_plain(config: TrainConfig) -> bool:
    """True when the config asks for neither freezing nor different learning rates."""
    optim = config.optim
    return (
        optim.freeze_epochs == 0
        and optim.backbone_lr_scale == 1.0
        and optim.finetune_lr_scale == 1.0
    )


def param_groups(model: nn.Module, config: TrainConfig) -> list[Any]:
    """Parameters for the optimizer: one group when plain, else ``backbone`` and ``head``
    groups with an ``lr_scale`` each (the loop sets ``lr = base lr x lr_scale``)."""
    if is_plain(config):
        return list(model.parameters())
    prefixes = head_prefixes(config.model.name)
    head: list[nn.Parameter] = []
    body: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        (head if _is_head(name, prefixes) else body).append(param)
    if not head:
        raise ValueError(f"{type(model).__name__}: no head parameters under {prefixes}")
    return [
        {"params": body, "lr_scale": config.optim.backbone_lr_scale, "group": "backbone"},
        {"params": head, "lr_scale": 1.0, "group": "head"},
    ]


def base_lr(epoch: int, config: TrainConfig) -> float:
    """The head's learning rate in ``epoch`` (0-based).

    Examples
    --------
    >>> config = TrainConfig.from_flat(epochs=4, lr=0.1, freeze_epochs=1, finetune_lr_scale=0.5)
    >>> [round(base_lr(e, config), 4) for e in range(4)]
    [0.1, 0.05, 0.0378, 0.0133]
    """
    optim, epochs = config.optim, config.stop.epochs
    if is_plain(config):
        return lr_at(epoch, optim, epochs=epochs)
    if epoch < optim.freeze_epochs:
        return optim.lr
    stage = lr_at(
        epoch - optim.freeze_epochs,
        optim.replace(freeze_epochs=0),
        epochs=max(epochs - optim.freeze_epochs, 1),
    )
    return stage * optim.finetune_lr_scale


def set_learning_rates(optimizer: Any, epoch: int, config: TrainConfig) -> float:
    """Write this epoch's learning rate into every group; return the head's."""
    lr = base_lr(epoch, config)
    frozen = epoch < config.optim.freeze_epochs
    for group in optimizer.param_groups:
        is_backbone = group.get("group") == "backbone"
        group["lr"] = 0.0 if frozen and is_backbone else lr * group.get("lr_scale", 1.0)
    return lr


def set_stage(model: nn.Module, epoch: int, config: TrainConfig, *, freeze_grads: bool) -> bool:
    """Freeze or unfreeze the backbone for ``epoch``; call after ``model.train()``.

    Frozen: backbone batch-norm layers go to eval mode and, when ``freeze_grads`` (not under
    DDP, which needs a fixed set of gradients), backbone parameters stop requiring gradients.
    Returns whether the backbone is frozen.
    """
    if config.optim.freeze_epochs == 0:
        return False
    frozen = epoch < config.optim.freeze_epochs
    prefixes = head_prefixes(config.model.name)
    if freeze_grads:
        for name, param in model.named_parameters():
            if not _is_head(name, prefixes):
                param.requires_grad_(not frozen)
    if frozen:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not _is_head(name, prefixes):
                module.eval()
    return frozen
