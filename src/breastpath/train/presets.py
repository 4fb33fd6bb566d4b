"""Per-backbone optimizer presets, as in the seed projects (each model's registry record holds
its own, :attr:`breastpath.models.registry.ModelRecord.preset`).

* CancerNet: Adagrad, lr 0.01 (the PyImageSearch tutorial).
* InceptionV3: SGD with Nesterov momentum 0.9, lr 0.01.
* ResNet50 and InceptionResNetV2: Adam, lr 1e-4.
* ResNet18: Adam, lr 3e-4; EfficientNet-Lite: AdamW, lr 1e-3, weight decay 1e-5.

With ImageNet weights (``pretrained``) and a budget of at least :data:`MIN_EPOCHS_TO_FREEZE`
epochs, the preset adds two-stage fine-tuning: one epoch with the backbone frozen, then every
layer at half the rate with the backbone at half the head's. Shorter budgets fine-tune every
layer from the first step: on the IDC dev data (EfficientNet-Lite0 at 64 px, 2 x 40 steps of 64
patches, CPU) plain AdamW at 1e-3 reached validation ROC-AUC 0.852, a frozen first epoch then
0.3e-3 reached 0.817, and a 0.3x backbone rate 0.825.
A preset only fills defaults: options given in a config file or on the command line win.
"""

from __future__ import annotations

from typing import Any

from breastpath.models.registry import get_record

#: Added when starting from ImageNet weights with enough epochs.
FINETUNE: dict[str, Any] = {"freeze_epochs": 1, "finetune_lr_scale": 0.5, "backbone_lr_scale": 0.5}
MIN_EPOCHS_TO_FREEZE = 5


def preset(name: str, *, pretrained: bool = False, epochs: int | None = None) -> dict[str, Any]:
    """Flat TrainConfig options for ``name`` (empty for a model without a preset).

    ``epochs`` (when known) decides whether two-stage fine-tuning fits the budget.

    Examples
    --------
    >>> preset("resnet50")
    {'optimizer': 'adam', 'lr': 0.0001}
    >>> preset("efficientnet_lite0", pretrained=True, epochs=10)["freeze_epochs"]
    1
    >>> "freeze_epochs" in preset("efficientnet_lite0", pretrained=True, epochs=3)
    False
    """
    record = get_record(name)
    options = dict(record.preset)
    long_enough = epochs is None or epochs >= MIN_EPOCHS_TO_FREEZE
    if pretrained and record.transfer and long_enough:
        options.update(FINETUNE)
    return options
