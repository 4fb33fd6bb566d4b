"""Every set of allowed values, defined once.

Each set is a ``Literal`` type (what mypy checks) and the tuple of its values (what validation,
``click.Choice`` and error messages use), derived from the type so the two cannot drift apart.

Examples
--------
>>> TTA_MODES
('none', 'flips', 'dihedral')
>>> check_choice("adam", OPTIMIZERS, what="optimizer")
'adam'
"""

from __future__ import annotations

from typing import Literal, get_args

from breastpath.errors import ConfigError

TTAMode = Literal["none", "flips", "dihedral"]
StainMethod = Literal["none", "reinhard", "macenko", "vahadane"]
#: Tellez H&E augmentation with each image's stains found by Macenko or Vahadane, the fixed
#: Ruifrok vectors, or ``hed``: a simple HED jitter.
StainAugment = Literal["none", "hed", "ruifrok", "macenko", "vahadane"]
Optimizer = Literal["adagrad", "adam", "adamw", "sgd"]
Schedule = Literal["cosine", "step", "none"]
Monitor = Literal["val_loss", "val_auc"]
#: What a decision threshold maximises; ``f1_balanced_accuracy`` is the mean of the two.
ThresholdMetric = Literal["balanced_accuracy", "f1", "youden", "f1_balanced_accuracy"]
Head = Literal["linear", "svm"]
#: Heads of ``breastpath probe`` on frozen embeddings.
ProbeHead = Literal["linear", "logreg", "svm", "knn"]
Runtime = Literal["torch", "onnx", "int8"]
PatientReduce = Literal["mean", "max", "fraction"]
#: How tile probabilities become one verdict (breastpath.inference.verdict).
VerdictReduction = Literal["presence", "mean", "top_k_mean", "vote"]
#: Whole-slide readers; ``auto`` picks the one made for the format (see breastpath.slide.reader).
SlideBackend = Literal["auto", "openslide", "wsidicom", "tifffile"]
#: How an image larger than a model's input is brought to it: ``crop`` (shorter side resized,
#: centre crop, aspect kept) or ``stretch`` (the whole field resized, aspect not kept).
InputFit = Literal["crop", "stretch"]
#: What ``breastpath evaluate --split`` scores: one split of a prepared folder, or all of it.
EvalSplit = Literal["test", "val", "train", "all"]

TTA_MODES: tuple[str, ...] = get_args(TTAMode)
STAIN_METHODS: tuple[str, ...] = get_args(StainMethod)
STAIN_AUGMENTS: tuple[str, ...] = get_args(StainAugment)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
MONITORS: tuple[str, ...] = get_args(Monitor)
THRESHOLD_METRICS: tuple[str, ...] = get_args(ThresholdMetric)
HEADS: tuple[str, ...] = get_args(Head)
PROBE_HEADS: tuple[str, ...] = get_args(ProbeHead)
RUNTIMES: tuple[str, ...] = get_args(Runtime)
PATIENT_REDUCES: tuple[str, ...] = get_args(PatientReduce)
VERDICT_REDUCTIONS: tuple[str, ...] = get_args(VerdictReduction)
SLIDE_BACKENDS: tuple[str, ...] = get_args(SlideBackend)
EVAL_SPLITS: tuple[str, ...] = get_args(EvalSplit)
INPUT_FITS: tuple[str, ...] = get_args(InputFit)


def check_choice(value: object, allowed: tuple[str, ...], *, what: str) -> str:
    """``value`` when it is one of ``allowed``, else :class:`ConfigError` naming ``what``."""
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
    return str(value)
