"""The sections of a :class:`~breastpath.config.TrainConfig`, one job each (see
:mod:`breastpath.config`). Each field's ``help`` metadata is its command-line help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from breastpath.choices import (
    HEADS,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    STAIN_AUGMENTS,
    THRESHOLD_METRICS,
    TTA_MODES,
    Head,
    Monitor,
    Optimizer,
    Schedule,
    StainAugment,
    ThresholdMetric,
    TTAMode,
    check_choice,
)
from breastpath.config._base import _Config, _help
from breastpath.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig(_Config):
    """The network: a registered model, its arguments and where its weights start from."""

    name: str = field(default="cancernet", metadata=_help("Model name (see `breastpath models`)."))
    args: dict[str, Any] = field(
        default_factory=dict, metadata=_help("Model arguments (stored in the checkpoint).")
    )
    pretrained: bool = field(
        default=False,
        metadata=_help(
            "Start from offline ImageNet weights (installed packages; never downloaded)."
        ),
    )
    weights: str = field(
        default="", metadata=_help("Local state dict (timm/torchvision) to start from.")
    )
    tta: TTAMode = field(
        default="none", metadata=_help("Test-time augmentation stored in the checkpoint.")
    )

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("model must be a model name")
        if not isinstance(self.args, dict):
            raise ConfigError("model_args must be a mapping")
        check_choice(self.tta, TTA_MODES, what="tta")


@dataclass(frozen=True)
class OptimConfig(_Config):
    """Optimizer, batch, learning-rate schedule, loss shaping and two-stage fine-tuning
    (:mod:`breastpath.train.finetune`)."""

    optimizer: Optimizer = field(default="adagrad", metadata=_help("Optimizer."))
    lr: float = field(
        default=0.01, metadata=_help("Learning rate (of the head, with fine-tuning scales).")
    )
    momentum: float = field(default=0.9, metadata=_help("SGD momentum (Nesterov)."))
    weight_decay: float = field(default=0.0, metadata=_help("Weight decay."))
    batch_size: int = field(
        default=64,
        metadata=_help("The global batch: under torchrun each of N processes takes batch/N rows."),
    )
    schedule: Schedule = field(
        default="cosine", metadata=_help("Learning-rate schedule after the warm-up.")
    )
    warmup_epochs: int = field(default=0, metadata=_help("Epochs of linear learning-rate warm-up."))
    label_smoothing: float = field(
        default=0.0, metadata=_help("Label smoothing of the cross-entropy.")
    )
    class_weights: bool = field(
        default=True, metadata=_help("Weight the loss by inverse class frequency.")
    )
    freeze_epochs: int = field(
        default=0, metadata=_help("Epochs training only the head (backbone frozen).")
    )
    finetune_lr_scale: float = field(
        default=1.0, metadata=_help("lr factor after the frozen epochs.")
    )
    backbone_lr_scale: float = field(default=1.0, metadata=_help("Backbone lr / head lr."))
    ema_half_life: float = field(
        default=0.0,
        metadata=_help(
            "Half-life in epochs of an exponential moving average of the weights (0: off); "
            "with it, validation and the checkpoints use the average."
        ),
    )

    def validate(self) -> None:
        check_choice(self.optimizer, OPTIMIZERS, what="optimizer")
        check_choice(self.schedule, SCHEDULES, what="schedule")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("batch_size must be >= 1 and lr > 0")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("warmup_epochs and weight_decay must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if not 0 <= self.momentum < 1:
            raise ConfigError("momentum must be in [0, 1)")
        if self.finetune_lr_scale <= 0 or self.backbone_lr_scale < 0:
            raise ConfigError("finetune_lr_scale must be > 0 and backbone_lr_scale >= 0")
        if not 0 <= self.ema_half_life < 1e6:
            raise ConfigError("ema_half_life must be >= 0 (epochs; 0 turns the average off)")


@dataclass(frozen=True)
class AugmentConfig(_Config):
    """Training-time augmentation (:func:`breastpath.data.augment.augment_batch`)."""

    enabled: bool = field(
        default=True, metadata=_help("Flips, rotations and colour jitter while training.")
    )
    color_jitter: float = field(default=0.05, metadata=_help("Strength of the colour jitter."))
    grayscale_frac: float = field(
        default=0.0,
        metadata=_help(
            "Share of training images shown in grey (luminance), so that the model cannot rest "
            "on colour alone (breastpath.data.augment.random_grayscale)."
        ),
    )
    stain_augment: StainAugment = field(
        default="none",
        metadata=_help(
            "H&E stain augmentation: hed jitter, or Tellez concentration perturbation with each "
            "image's stains from ruifrok (fixed), macenko or vahadane."
        ),
    )
    stain_sigma: float = field(
        default=0.0,
        metadata=_help(
            "Stain augmentation strength (0: the method's default, 0.05 hed, else 0.2)."
        ),
    )
    background_frac: float = field(
        default=0.0,
        metadata=_help(
            "Share of each batch replaced by tissue-free frames labelled non-cancer, and, "
            "independently, given a white edge band (breastpath.data.augment.add_background)."
        ),
    )

    def validate(self) -> None:
        check_choice(self.stain_augment, STAIN_AUGMENTS, what="stain_augment")
        if not 0 <= self.background_frac <= 0.5:
            raise ConfigError("background_frac must be in [0, 0.5]")
        if not 0 <= self.stain_sigma < 1:
            raise ConfigError("stain_sigma must be in [0, 1)")
        if self.color_jitter < 0:
            raise ConfigError("color_jitter must be >= 0")
        if not 0 <= self.grayscale_frac <= 1:
            raise ConfigError("grayscale_frac must be in [0, 1]")


@dataclass(frozen=True)
class StopConfig(_Config):
    """The epoch budget, early stopping and how the decision threshold is chosen."""

    epochs: int = field(default=40, metadata=_help("Epochs at most."))
    max_steps_per_epoch: int = field(
        default=0, metadata=_help("Batches per epoch at most (0: the whole split).")
    )
    patience: int = field(
        default=8, metadata=_help("Stop after this many epochs without improvement.")
    )
    min_delta: float = field(
        default=1e-4, metadata=_help("Smallest change that counts as an improvement.")
    )
    monitor: Monitor = field(
        default="val_loss", metadata=_help("What early stopping and `best` follow.")
    )
    threshold_metric: ThresholdMetric = field(
        default="balanced_accuracy",
        metadata=_help("What the validation-chosen threshold maximises."),
    )

    def validate(self) -> None:
        check_choice(self.monitor, MONITORS, what="monitor")
        check_choice(self.threshold_metric, THRESHOLD_METRICS, what="threshold_metric")
        if self.epochs < 1:
            raise ConfigError("epochs must be >= 1")
        if self.max_steps_per_epoch < 0 or self.patience < 1:
            raise ConfigError("max_steps_per_epoch must be >= 0 and patience >= 1")
        if self.min_delta < 0:
            raise ConfigError("min_delta must be >= 0")


@dataclass(frozen=True)
class HeadConfig(_Config):
    """The classifier: trained end to end, or an RBF SVM on embeddings
    (:mod:`breastpath.train.hybrid`)."""

    kind: Head = field(
        default="linear", metadata=_help("svm: an RBF SVM on the backbone's embeddings.")
    )
    backbone_checkpoint: str = field(
        default="", metadata=_help("svm head: embed with this trained checkpoint.")
    )
    svm_c: tuple[float, ...] = field(
        default=(0.1, 1.0, 10.0),
        metadata=_help("svm head: C values tried; the best on validation wins."),
    )
    svm_max_train: int = field(
        default=4000, metadata=_help("svm head: at most this many training embeddings (0: all).")
    )

    def validate(self) -> None:
        check_choice(self.kind, HEADS, what="head")
        if not self.svm_c or any(c <= 0 for c in self.svm_c) or self.svm_max_train < 0:
            raise ConfigError("svm_c must be positive values and svm_max_train >= 0")


@dataclass(frozen=True)
class DistillConfig(_Config):
    """Knowledge distillation (:mod:`breastpath.train.distill`): a trained teacher's softened
    probabilities on each augmented training batch join the labels as targets."""

    teachers: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Teacher checkpoint (run, file or bundled name), or a crossval folder whose folds "
            "match (each fold then learns from its own); several teach as one ensemble (their "
            "softened probabilities averaged). None: no distillation."
        ),
    )
    weight: float = field(
        default=0.5,
        metadata=_help("Share of the loss from the teacher (the rest from the labels)."),
    )
    temperature: float = field(
        default=2.0, metadata=_help("Softmax temperature of teacher and student in that loss.")
    )

    def validate(self) -> None:
        if any(not teacher for teacher in self.teachers):
            raise ConfigError("teacher must name a checkpoint or a crossval folder")
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError("distill_weight must be in [0, 1]")
        if not 0.0 < self.temperature <= 100.0:
            raise ConfigError("distill_temperature must be in (0, 100]")


@dataclass(frozen=True)
class RuntimeConfig(_Config):
    """Where and how a run executes; not a training choice, so not saved in checkpoints."""

    device: str = field(default="auto", metadata=_help("auto, cpu or cuda[:N]."))
    num_threads: int = field(default=0, metadata=_help("torch threads (0: torch's default)."))
    amp: bool = field(default=True, metadata=_help("Mixed precision on CUDA."))
    compile: bool = field(default=False, metadata=_help("torch.compile the training step."))
    eval_batch_size: int = field(default=256, metadata=_help("Batch size of validation scoring."))
    progress: bool = field(default=True, metadata=_help("Show progress bars."))

    def validate(self) -> None:
        if self.num_threads < 0 or self.eval_batch_size < 1:
            raise ConfigError("num_threads must be >= 0 and eval_batch_size >= 1")
