"""``CheckpointMeta``: the typed, validated JSON half of every checkpoint.

Every field a checkpoint carries is checked on load: a wrong type, a NaN threshold, an absurd size,
an unknown model or model argument is a :class:`~breastpath.errors.CheckpointError` that names the
field, never a traceback deep in the model code and never a huge allocation. The decision
``threshold`` is required (every checkpoint this package ever wrote states it; a missing one is
refused rather than silently taken as 0.5), and the JSON may nest at most :data:`MAX_DEPTH`
levels. Checkpoints written by earlier versions still load: ``positive_index`` is dropped (its
meaning is ``cancer_classes``), ``cancer_classes`` is derived from the class names, and a timm
model's ``input_size`` argument is read as the model's ``working_size``.

Two sizes, two names:

* ``input_size`` (height, width): every image is fitted to it before the model sees it
  (:func:`breastpath.data.transforms.fit_to_size`, the way ``input_fit`` says: ``crop``, or
  ``stretch`` for a model whose training images were whole fields resized without keeping
  their aspect); the cache holds images of this size.
* ``working_size``: the resolution the network itself computes at (a timm backbone resizes its
  input to it inside ``forward``); ``None`` when it is ``input_size``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from breastpath.choices import INPUT_FITS, RUNTIMES, TTA_MODES, InputFit, Runtime, TTAMode
from breastpath.errors import CheckpointError

FORMAT = "breastpath-checkpoint/1"
MAX_SIDE = 4096  # no model here works on larger inputs; bigger values are corrupt metadata
MAX_CLASSES = 1000
#: Deepest nesting of lists and mappings a checkpoint's JSON may have (the bundled ones: 7).
MAX_DEPTH = 32


def default_cancer_classes(class_names: Sequence[str]) -> tuple[int, ...]:
    """Indices of the classes that mean cancer: the malignant subtypes of a BreakHis subtype
    model, else the last class (``IDC``, ``malignant``).

    Examples
    --------
    >>> default_cancer_classes(["non-IDC", "IDC"])
    (1,)
    >>> names = ["adenosis", "fibroadenoma", "ductal_carcinoma", "lobular_carcinoma"]
    >>> default_cancer_classes(names)
    (2, 3)
    """
    from breastpath.data.index import BENIGN_SUBTYPES, SUBTYPE_NAMES

    if len(class_names) > 2 and set(class_names) <= set(SUBTYPE_NAMES):
        return tuple(i for i, n in enumerate(class_names) if n not in BENIGN_SUBTYPES)
    return (len(class_names) - 1,)


@dataclass(frozen=True)
class ModelSpec:
    """Which registered model to build, with which arguments."""

    name: str
    num_classes: int
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "args": dict(self.args)}


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything needed to use a checkpoint's weights (see the module docstring)."""

    model: ModelSpec
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    cancer_classes: tuple[int, ...]
    threshold: float = 0.5
    threshold_rule: str = ""
    #: temperature of the stored probabilities: ``softmax(logits / temperature)``; the threshold
    #: applies to the cancer score at this temperature (1.0: the network's own softmax)
    temperature: float = 1.0
    #: added to the logits before the temperature: ``softmax((logits + logit_bias) / T)``
    #: (Platt scaling of a binary model: a shift the temperature alone cannot make)
    logit_bias: tuple[float, ...] | None = None
    working_size: tuple[int, int] | None = None
    #: how a larger image is brought to ``input_size`` (:data:`breastpath.choices.INPUT_FITS`)
    input_fit: InputFit = "crop"
    name: str = ""
    version: str = ""
    tta: TTAMode = "none"
    runtime: Runtime = "torch"
    stain: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    init: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] | None = None
    #: microns per pixel of the images the model was trained on, when known (slides use it)
    mpp: float | None = None
    #: the numbers of this model's verdict rule (``threshold``, ``min_tiles``, ``min_extent``)
    #: chosen on patients (breastpath.experiments.verdict_cv); None: the task's defaults at the
    #: model's threshold (breastpath.inference.verdict)
    verdict: dict[str, Any] | None = None
    epoch: int = 0
    weights_file: str = ""
    weights_sha256: str = ""
    onnx_file: str = ""
    onnx_sha256: str = ""
    onnx_opset: int = 0
    #: a statically quantized ONNX copy of the network beside the weights (runtime ``int8``)
    int8_file: str = ""
    int8_sha256: str = ""
    resume: dict[str, Any] | None = None
    #: other keys, kept verbatim (an SVM report, a cross-validation summary, ...)
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def display_name(self) -> str:
        """The model's name for people: ``name``, else the architecture."""
        return self.name or self.model.name

    @property
    def is_binary(self) -> bool:
        return len(self.class_names) == 2

    def replace(self, **changes: Any) -> CheckpointMeta:
        """A copy with ``changes`` applied and validated (``extra=`` replaces the extra keys)."""
        raw = self.to_dict()
        if "extra" in changes:
            for key in self.extra:
                raw.pop(key, None)
            raw.update(changes.pop("extra"))
        raw.update(_plain(changes))
        return parse_meta(raw, source="checkpoint metadata")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``<stem>.json`` holds); unset optional fields are left out."""
        out: dict[str, Any] = {"format": self.format}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name not in ("extra", "format") and value is not None:
                out[item.name] = _plain({item.name: value})[item.name]
        out.update(self.extra)
        return out


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, ModelSpec):
            value = value.to_dict()
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


_KNOWN = {f.name for f in dataclasses.fields(CheckpointMeta)} - {"extra"}
_DROPPED = {"positive_index"}  # written by 0.1 and never read: cancer_classes says it


def parse_meta(raw: object, *, source: str) -> CheckpointMeta:
    """Validate a checkpoint's JSON mapping into a :class:`CheckpointMeta`.

    Raises :class:`CheckpointError` naming ``source`` and the offending field.

    Examples
    --------
    >>> meta = parse_meta({"format": FORMAT, "model": {"name": "cancernet", "num_classes": 2},
    ...     "input_size": [50, 50], "mean": [0.8, 0.6, 0.7], "std": [0.1, 0.2, 0.1],
    ...     "class_names": ["non-IDC", "IDC"], "threshold": 0.6}, source="x.json")
    >>> meta.cancer_classes, meta.threshold
    ((1,), 0.6)
    >>> parse_meta({**meta.to_dict(), "threshold": float("nan")}, source="x.json")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    breastpath.errors.CheckpointError: x.json: field 'threshold': must be a finite number ...
    """
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: not a breastpath checkpoint (metadata is not a mapping)")
    if json_depth(raw) > MAX_DEPTH:
        raise CheckpointError(
            f"{source}: checkpoint metadata nested deeper than {MAX_DEPTH} levels"
        )
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{source}: not a breastpath checkpoint (format {raw.get('format')!r})"
        )
    check = _Checker(source)
    class_names = check.names("class_names", raw.get("class_names"))
    model = check.model(raw.get("model"), num_classes=len(class_names))
    values: dict[str, Any] = {
        "model": model,
        "class_names": class_names,
        "input_size": check.size("input_size", raw.get("input_size")),
        "mean": check.triple("mean", raw.get("mean"), positive=False),
        "std": check.triple("std", raw.get("std"), positive=True),
        "cancer_classes": check.cancer_classes(raw.get("cancer_classes"), class_names),
        "threshold": check.unit("threshold", check.required("threshold", raw)),
        "temperature": check.bounded("temperature", raw.get("temperature", 1.0), 0.05, 20.0),
        "logit_bias": check.logit_bias(raw.get("logit_bias"), classes=len(class_names)),
        "working_size": check.working_size(raw, model),
        "input_fit": check.choice("input_fit", raw.get("input_fit") or "crop", INPUT_FITS),
        "tta": check.choice("tta", raw.get("tta") or "none", TTA_MODES),
        "runtime": check.choice("runtime", raw.get("runtime") or "torch", RUNTIMES),
        "mpp": check.optional_positive("mpp", raw.get("mpp")),
        "verdict": check.verdict(raw.get("verdict")),
        "epoch": check.integer("epoch", raw.get("epoch", 0), low=0, high=10**7),
        "onnx_opset": check.integer("onnx_opset", raw.get("onnx_opset", 0), low=0, high=100),
    }
    for key in ("threshold_rule", "name", "version", "weights_file", "weights_sha256",
                "onnx_file", "onnx_sha256", "int8_file", "int8_sha256"):  # fmt: skip
        values[key] = check.text(key, raw.get(key, ""))
    for key in ("data", "train", "metrics", "init"):
        values[key] = check.mapping(key, raw.get(key, {}))
    for key in ("stain", "data_config", "resume"):
        values[key] = check.mapping(key, raw[key]) if raw.get(key) is not None else None
    if values["runtime"] == "int8" and not values["int8_file"]:
        raise check.fail("runtime", "is 'int8' but no int8 model is attached (int8_file)")
    extra = {k: v for k, v in raw.items() if k not in _KNOWN and k not in _DROPPED}
    return CheckpointMeta(**values, extra=extra)


def json_depth(value: object) -> int:
    """How deeply lists and mappings nest in ``value`` (a scalar: 0), without recursion.

    >>> json_depth({"a": [1, {"b": []}]}), json_depth({"a": 1}), json_depth(3)
    (4, 1, 0)
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:  # deeper is refused anyway: no need to walk it all
            stack.extend((child, depth + 1) for child in children)
    return deepest


class _Checker:
    """Field validators that raise :class:`CheckpointError` naming the source and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: field {name!r}: {problem}")

    def integer(self, name: str, value: object, *, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(name, f"must be an integer in [{low}, {high}], got {value!r}")
        return value

    def required(self, name: str, raw: Mapping[str, Any]) -> object:
        if name not in raw:
            raise self.fail(name, "missing (every checkpoint states its decision threshold)")
        return raw[name]

    def number(self, name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(name, f"must be finite, got {value!r}")
        return float(value)

    def unit(self, name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, f"must be a finite number in [0, 1], got {value!r}")
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise self.fail(name, f"must be a finite number in [0, 1], got {value!r}")
        return float(value)

    def bounded(self, name: str, value: object, low: float, high: float) -> float:
        number = self.number(name, value)
        if not low <= number <= high:
            raise self.fail(name, f"must be in [{low}, {high}], got {value!r}")
        return number

    def logit_bias(self, value: object, *, classes: int) -> tuple[float, ...] | None:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or len(value) != classes:
            raise self.fail("logit_bias", f"must be a list of {classes} numbers, got {value!r}")
        return tuple(self.bounded("logit_bias", v, -50.0, 50.0) for v in value)

    def verdict(self, value: object) -> dict[str, Any] | None:
        """The verdict rule's numbers: known keys only, each in its range."""
        if value is None:
            return None
        numbers = self.mapping("verdict", value)
        unknown = set(numbers) - {"threshold", "min_tiles", "min_extent"}
        if unknown:
            raise self.fail("verdict", f"unknown keys {sorted(unknown)}")
        out: dict[str, Any] = {}
        for key in ("threshold", "min_extent"):
            if key in numbers:
                out[key] = self.unit(f"verdict.{key}", numbers[key])
        if "min_tiles" in numbers:
            out["min_tiles"] = self.integer(
                "verdict.min_tiles", numbers["min_tiles"], low=1, high=10**6
            )
        return out

    def optional_positive(self, name: str, value: object) -> float | None:
        if value is None:
            return None
        number = self.number(name, value)
        if number <= 0:
            raise self.fail(name, f"must be positive, got {value!r}")
        return number

    def text(self, name: str, value: object) -> str:
        if not isinstance(value, str) or len(value) > 10_000:
            raise self.fail(name, f"must be a string, got {type(value).__name__}")
        return value

    def mapping(self, name: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a mapping, got {type(value).__name__}")
        return value

    def choice(self, name: str, value: object, allowed: tuple[str, ...]) -> Any:
        if value not in allowed:
            raise self.fail(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def size(self, name: str, value: object) -> tuple[int, int]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise self.fail(name, f"must be [height, width], got {value!r}")
        h, w = (self.integer(name, v, low=1, high=MAX_SIDE) for v in value)
        return h, w

    def triple(self, name: str, value: object, *, positive: bool) -> tuple[float, float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise self.fail(name, f"must be 3 numbers (R, G, B), got {value!r}")
        numbers = tuple(self.number(name, v) for v in value)
        if positive and min(numbers) <= 0:
            raise self.fail(name, f"must be positive, got {value!r}")
        return numbers  # type: ignore[return-value]

    def names(self, name: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not 2 <= len(value) <= MAX_CLASSES:
            raise self.fail(name, f"must be a list of 2 to {MAX_CLASSES} class names")
        if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
            raise self.fail(name, "class names must be distinct non-empty strings")
        return tuple(value)

    def cancer_classes(self, value: object, class_names: tuple[str, ...]) -> tuple[int, ...]:
        if value is None:
            return default_cancer_classes(class_names)
        n = len(class_names)
        if not isinstance(value, (list, tuple)) or not value:
            raise self.fail(
                "cancer_classes", f"must be a non-empty list of class indices, got {value!r}"
            )
        indices = tuple(self.integer("cancer_classes", v, low=0, high=n - 1) for v in value)
        if len(set(indices)) != len(indices) or len(indices) >= n:
            raise self.fail("cancer_classes", "must be distinct and leave at least one class out")
        return tuple(sorted(indices))

    def model(self, value: object, *, num_classes: int) -> ModelSpec:
        from breastpath.models.registry import list_models, model_arguments

        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise self.fail("model", f"must be a mapping with a name, got {value!r}")
        name = value["name"]
        if name not in list_models():
            raise self.fail("model.name", f"unknown model {name!r}")
        count = self.integer("model.num_classes", value.get("num_classes"), low=2, high=MAX_CLASSES)
        if count != num_classes:
            raise self.fail("model.num_classes", f"{count} but there are {num_classes} class names")
        args = self.mapping("model.args", value.get("args", {}))
        allowed = model_arguments(name)
        unknown = sorted(set(args) - allowed) if allowed is not None else []
        if unknown:
            raise self.fail("model.args", f"unknown argument(s) of {name}: {', '.join(unknown)}")
        side = args.get("input_size")
        if side is not None:
            self.integer("model.args.input_size", side, low=8, high=MAX_SIDE)
        return ModelSpec(name=name, num_classes=count, args=dict(args))

    def working_size(self, raw: dict[str, Any], model: ModelSpec) -> tuple[int, int] | None:
        if raw.get("working_size") is not None:
            return self.size("working_size", raw["working_size"])
        side = model.args.get("input_size")
        return (side, side) if isinstance(side, int) else None
