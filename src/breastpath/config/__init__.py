"""Configuration dataclasses, saved with every run and inside every checkpoint.

A training run is described by a :class:`TrainConfig` made of small frozen sections, each with
one job:

=============  ===========================  =====================================================
section        class                        fields
=============  ===========================  =====================================================
``model``      :class:`ModelConfig`         which network, its arguments, its starting weights,
                                            test-time augmentation
``optim``      :class:`OptimConfig`         optimizer, batch, schedule, loss shaping, fine-tuning
``augment``    :class:`AugmentConfig`       training-time colour and stain augmentation
``stop``       :class:`StopConfig`          epoch budget, early stopping, threshold criterion
``head``       :class:`HeadConfig`          linear head, or an RBF SVM on embeddings
``distill``    :class:`DistillConfig`       a teacher checkpoint, its loss share, temperature
``runtime``    :class:`RuntimeConfig`       where and how it runs (device, threads, AMP, ...)
=============  ===========================  =====================================================

plus the run's ``seed``. Everything but ``runtime`` decides the trained weights and is what a
checkpoint records as its ``train`` block (:meth:`TrainConfig.training_dict`); the runtime is
written next to it in a run's ``config.yaml`` only.

Every option also has a *flat* name (``lr``, ``epochs``, ``stain_augment``, ...): the
command-line flag (``--lr``), and the key of configs and checkpoints written by earlier
versions, which kept all options in one mapping. :data:`FLAT_KEYS` maps flat names to
``(section, field)``; a field's flat name is its own name except for :data:`RENAMED`.
:meth:`TrainConfig.from_dict` reads either form, :meth:`TrainConfig.from_flat` builds one from
flat options. The command-line options of ``train`` and ``crossval`` are generated from these
fields (their ``help`` metadata), so adding an option is one edit here.

Every config converts to and from plain dicts and YAML files; unknown keys are refused so that a
typo in ``run.yaml`` is not silently ignored.

Examples
--------
>>> config = TrainConfig.from_flat(model="resnet18", lr=3e-4, epochs=5, device="cpu")
>>> config.model.name, config.optim.lr, config.stop.epochs, config.runtime.device
('resnet18', 0.0003, 5, 'cpu')
>>> "runtime" in config.training_dict()
False
>>> TrainConfig.from_dict(config.to_dict()) == config
True
"""

from breastpath.choices import STAIN_AUGMENTS, STAIN_METHODS
from breastpath.config._base import dump_yaml, load_yaml
from breastpath.config.data import DataConfig
from breastpath.config.sections import (
    AugmentConfig,
    DistillConfig,
    HeadConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    StopConfig,
)
from breastpath.config.train import (
    FLAT_KEYS,
    RENAMED,
    SECTIONS,
    TrainConfig,
    flatten,
    option_fields,
    option_type,
)

__all__ = [
    "FLAT_KEYS",
    "RENAMED",
    "SECTIONS",
    "STAIN_AUGMENTS",
    "STAIN_METHODS",
    "AugmentConfig",
    "DataConfig",
    "DistillConfig",
    "HeadConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "StopConfig",
    "TrainConfig",
    "dump_yaml",
    "flatten",
    "load_yaml",
    "option_fields",
    "option_type",
]
