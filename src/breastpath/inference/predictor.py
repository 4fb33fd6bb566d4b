"""``Predictor``: a checkpoint ready to score images; shared by the CLI, the web app and reports.

Preprocessing is the one used to build the cache (:func:`breastpath.data.transforms.fit_to_size`,
then the stain normalization the checkpoint carries, if any, then its mean/std), so a file
scores the same through every entry point.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from breastpath.checkpoint import Checkpoint, CheckpointMeta, build_model, load_checkpoint
from breastpath.choices import RUNTIMES
from breastpath.data.transforms import fit_to_size, to_model_array, to_model_input
from breastpath.errors import CheckpointError, ExplanationUnavailableError, InvalidImageError
from breastpath.imaging import ImageSource
from breastpath.inference.device import select_device
from breastpath.inference.quality import Quality
from breastpath.inference.quality import assess as assess_quality
from breastpath.inference.score import cancer_score
from breastpath.sandbox import DecodeSandbox, default_sandbox

if TYPE_CHECKING:
    from breastpath.inference.verdict import VerdictRule


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image.

    ``quality`` is the input-quality gate's verdict (:mod:`breastpath.inference.quality`). An
    image that fails it is **not assessed**: ``label`` and ``is_cancer`` are ``None``;
    ``probability`` and ``probabilities`` still hold the model's raw output, which is not a
    cancer probability for something that is not H&E tissue (``assessed`` says so). With
    ``allow_non_tissue=True`` (research only) a flagged image gets a label anyway, ``forced`` is
    True and ``assessed`` stays False.
    """

    probability: float  # the model's cancer score (IDC / malignant); see ``assessed``
    label: str | None  # class name of the decision; None when not assessed
    is_cancer: bool | None
    probabilities: dict[str, float]  # per class
    quality: dict[str, Any] | None = None
    forced: bool = False
    #: the tile map and verdict of an image larger than the input
    #: (:func:`breastpath.inference.tiles.image_tile_summary`), when asked for
    tiles: dict[str, Any] | None = None

    @property
    def assessed(self) -> bool:
        """Whether the image passed the quality gate and got its label on its merits."""
        return self.label is not None and not self.forced

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "probability": self.probability,
            "label": self.label,
            "is_cancer": self.is_cancer,
            "assessed": self.assessed,
            "probabilities": self.probabilities,
            "quality": self.quality,
        }
        if self.forced:
            out["forced"] = True
        return out


class Predictor:
    """Score images with a checkpoint.

    Examples
    --------
    >>> predictor = Predictor.from_checkpoint("default")  # doctest: +SKIP
    >>> predictor.predict_images([patch])[0].probability  # doctest: +SKIP
    0.93
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        compile: bool = False,
        runtime: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.meta: CheckpointMeta = checkpoint.meta
        self.device = select_device(device)
        #: what scores images: ``torch``, ``onnx`` (onnxruntime, CPU) or ``int8`` (the
        #: checkpoint's attached quantized network, onnxruntime); default: the checkpoint's own
        #: (``onnx`` for an exported pair).
        self.runtime = runtime or self.meta.runtime
        #: why the runtime is not the checkpoint's own (``None`` when it is): the int8 network
        #: gives way to the float one where its kernels saturate (``int8_kernels_exact``)
        self.runtime_note: str | None = None
        #: the runtime's own batch: onnxruntime keeps both cores busy from 256 rows, the torch
        #: models are fastest near 64 (docs/benchmarks.md); ``batch_size`` overrides it
        self.batch_size = batch_size or (64 if self.runtime == "torch" else 256)
        #: the torch model (Grad-CAM runs on it); ``None`` for an exported ONNX pair
        self.model: torch.nn.Module | None = None
        # int8 asked for by name is served even where its kernels are inexact
        self._forward = self._build_forward(compile=compile, int8_asked=runtime == "int8")
        self.mean = torch.tensor(self.meta.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(self.meta.std, dtype=torch.float32, device=self.device)
        self.class_names: list[str] = list(self.meta.class_names)
        self.input_size: tuple[int, int] = self.meta.input_size
        self.threshold = self.meta.threshold
        self.cancer_classes: list[int] = list(self.meta.cancer_classes)
        self.stain = stain_normalizer(self.meta, device=self.device)
        bias = self.meta.logit_bias
        self._logit_bias = None if bias is None else torch.tensor(bias, device=self.device)
        self._lock = threading.Lock()
        #: Grad-CAM's own lock: explanations (a server runs them on their own thread) and
        #: predictions run side by side (see :meth:`_explained_model`)
        self._explain_lock = threading.Lock()
        self._explain_copy: torch.nn.Module | None = None

    def _build_forward(self, *, compile: bool, int8_asked: bool) -> Any:
        """What maps a normalized NCHW batch to logits, for ``self.runtime``."""
        from breastpath.inference import onnx

        if self.runtime not in RUNTIMES:
            raise CheckpointError(
                f"unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIMES)}"
            )
        if self.checkpoint.onnx is not None:  # an exported pair: no torch weights at all
            if self.runtime != "onnx":
                raise CheckpointError(
                    f"{self.checkpoint.path}: an exported ONNX model runs with runtime onnx only"
                )
            return onnx.OnnxForward(self.checkpoint.onnx, threads=torch.get_num_threads())
        model = build_model(self.checkpoint).to(self.device).eval()
        self.model = model.to(memory_format=torch.channels_last)
        if self.runtime == "int8":
            if self.checkpoint.int8 is None:
                raise CheckpointError(
                    f"{self.checkpoint.path}: no int8 model is attached "
                    "(make one with `breastpath quantize`)"
                )
            if not onnx.int8_kernels_exact():
                if not int8_asked:
                    return self._float_instead_of_int8(model)
                self.runtime_note = onnx.INT8_INEXACT_NOTE
            return onnx.OnnxForward(self.checkpoint.int8, threads=torch.get_num_threads())
        if self.runtime == "onnx":
            return self._exported(model)
        return torch.compile(self.model) if compile else self.model

    def _exported(self, model: torch.nn.Module) -> Any:
        """``model`` (the float network) exported to ONNX and run by onnxruntime."""
        import copy

        from breastpath.inference import onnx

        data = onnx.export_onnx_bytes(copy.deepcopy(model), input_size=self.meta.input_size)
        return onnx.OnnxForward(data, threads=torch.get_num_threads())

    def _float_instead_of_int8(self, model: torch.nn.Module) -> Any:
        """The float network the int8 one approximates, where the int8 kernels are inexact
        (:func:`~breastpath.inference.onnx.int8_kernels_exact`): onnx when the exporter is
        installed, else torch; ``runtime_note`` says why."""
        from breastpath.inference.onnx import INT8_FALLBACK_NOTE, OnnxUnavailableError

        self.runtime_note = INT8_FALLBACK_NOTE
        try:
            forward = self._exported(model)
        except OnnxUnavailableError:
            self.runtime = "torch"
            return self.model
        self.runtime = "onnx"
        return forward

    @classmethod
    def from_checkpoint(cls, name_or_path: str | Path, **options: Any) -> Predictor:
        """Load a bundled name (``default``), a run folder or a checkpoint file."""
        return cls(load_checkpoint(name_or_path), **options)

    @property
    def name(self) -> str:
        return self.meta.display_name

    @property
    def can_explain(self) -> bool:
        """Whether Grad-CAM is available: it needs the torch model (not an ONNX-only pair)."""
        return self.model is not None

    def describe(self) -> dict[str, Any]:
        """Model name, version, classes, input size and threshold (for APIs and reports)."""
        return {
            "name": self.name,
            "model": self.meta.model.name,
            "version": self.meta.version or None,
            "classes": self.class_names,
            "cancer_classes": [self.class_names[i] for i in self.cancer_classes],
            "input_size": list(self.input_size),
            "input_fit": self.meta.input_fit,
            "threshold": self.threshold,
            "runtime": self.runtime,
            **({"runtime_note": self.runtime_note} if self.runtime_note else {}),
            "explanations": self.can_explain,
            "checkpoint": str(self.checkpoint.path.name),
            "dataset": self.meta.data.get("dataset"),
            **({"verdict": dict(self.meta.verdict)} if self.meta.verdict else {}),
        }

    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Bring decoded RGB images to the model's input: ``(N, H, W, 3)`` uint8 at the input
        size, stain-normalized when the checkpoint carries a stain target."""
        return self.normalize_stain(self.resize(images))

    def prepare_one(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        """:meth:`prepare` of one image, and what fitting it to the input size did (the action
        of :func:`~breastpath.data.transforms.fit_to_size`: padded, resized and cropped, ...)."""
        fitted, action = fit_to_size(image, self.input_size, fit=self.meta.input_fit)
        return self.normalize_stain(fitted[None])[0], action

    def resize(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded RGB images at the model's input size (no stain normalization)."""
        out = np.empty((len(images), *self.input_size, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            out[i], _ = fit_to_size(image, self.input_size, fit=self.meta.input_fit)
        return out

    def normalize_stain(self, batch: np.ndarray) -> np.ndarray:
        """Apply the checkpoint's stain normalization to a uint8 batch (unchanged without one).

        Images without usable tissue (blank, background) are left as they are.
        """
        if self.stain is None or len(batch) == 0:
            return batch
        from breastpath.stain import StainWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StainWarning)
            return np.asarray(self.stain.transform(batch))

    def cache_input(self, block: np.ndarray, cache_meta: dict[str, Any]) -> np.ndarray:
        """Rows read from a prepared cache, made ready for :meth:`predict_proba`.

        A cache normalized with the checkpoint's own target is used as it is; a raw cache is
        normalized now. A cache normalized to another target cannot be undone: refused with
        :class:`~breastpath.errors.CheckpointError`, as is a normalized cache for a checkpoint
        trained on raw images, and one whose larger images were fitted otherwise than the
        checkpoint's ``input_fit`` (cropped for a model of whole stretched fields, or the
        reverse: ``larger_image_fit`` in the cache's meta).
        """
        ours, theirs = self.meta.stain, cache_meta.get("stain")
        if theirs is not None and theirs != ours:
            raise CheckpointError(_STAIN_MISMATCH)
        fitted = cache_meta.get("larger_image_fit")
        if fitted is not None and fitted != self.meta.input_fit:
            raise CheckpointError(_fit_mismatch(fitted, self.meta.input_fit))
        if tuple(block.shape[1:3]) != self.input_size:
            block = self.resize(list(block))
        return block if theirs is not None else self.normalize_stain(block)

    @torch.inference_mode()
    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a ``(N, H, W, 3)`` uint8 batch at the input size."""
        if batch.ndim != 4 or tuple(batch.shape[1:3]) != self.input_size or batch.shape[3] != 3:
            raise InvalidImageError(
                f"expected a batch of shape (N, {self.input_size[0]}, "
                f"{self.input_size[1]}, 3), got {batch.shape}"
            )
        outputs = []
        with self._lock:
            for start in range(0, len(batch), self.batch_size):
                block = np.ascontiguousarray(batch[start : start + self.batch_size])
                logits = self._forward(self._model_input(block)).float()
                if self._logit_bias is not None:
                    logits = logits + self._logit_bias
                logits = logits / self.meta.temperature
                outputs.append(torch.softmax(logits, dim=1).cpu().numpy())
        if not outputs:
            return np.zeros((0, len(self.class_names)))
        return np.concatenate(outputs).astype(np.float64)

    def _model_input(self, block: np.ndarray) -> torch.Tensor | np.ndarray:
        """A uint8 NHWC block as the runtime takes it: a channels-last tensor on the device
        (torch), or a float32 NCHW array (onnxruntime: no torch threads compete with its own)."""
        if self.runtime == "torch":
            return to_model_input(
                torch.from_numpy(block), mean=self.mean, std=self.std, device=self.device
            )
        return to_model_array(block, mean=np.asarray(self.meta.mean), std=np.asarray(self.meta.std))

    def explain_target(self, probs: np.ndarray) -> list[int]:
        """Class explained by Grad-CAM per row: the cancer class of a binary model, otherwise
        the predicted class."""
        if len(self.class_names) == 2:
            return [self.cancer_classes[0]] * len(probs)
        return [int(i) for i in np.asarray(probs).argmax(axis=1)]

    def grad_cam(
        self, batch: np.ndarray, *, target_class: int | Sequence[int], normalize: bool = True
    ) -> np.ndarray:
        """Grad-CAM maps ``(N, H, W)`` float32 for a ``(N, H, W, 3)`` uint8 batch at the input size.

        See :func:`breastpath.models.gradcam.grad_cam`; ``normalize=False`` keeps the raw
        (comparable across images) map values.
        """
        from breastpath.models.gradcam import grad_cam

        if self.model is None:
            raise ExplanationUnavailableError(
                "Grad-CAM needs the torch weights; this model is an exported ONNX file"
            )
        targets = np.broadcast_to(np.asarray(target_class, dtype=np.int64), (len(batch),))
        maps = []
        with self._explain_lock:
            model = self._explained_model()
            for start in range(0, len(batch), self.batch_size):
                stop = start + self.batch_size
                chunk = torch.from_numpy(np.array(batch[start:stop]))  # writable copy
                x = to_model_input(chunk, mean=self.mean, std=self.std, device=self.device)
                cam = grad_cam(
                    model,
                    x,
                    target_class=torch.from_numpy(targets[start:stop].copy()),
                    normalize=normalize,
                )
                maps.append(cam.float().cpu().numpy())
        if not maps:
            return np.zeros((0, *self.input_size), dtype=np.float32)
        return np.concatenate(maps)

    def _explained_model(self) -> torch.nn.Module:
        """The network Grad-CAM runs on: the model itself when it is split into
        ``forward_features`` / ``forward_head`` (explained without hooks, nothing shared with a
        prediction running meanwhile), else a copy made once (the hook Grad-CAM puts on a layer
        must not see the forward passes of predictions)."""
        assert self.model is not None
        if hasattr(self.model, "forward_features") and hasattr(self.model, "forward_head"):
            return self.model
        if self._explain_copy is None:
            self._explain_copy = copy.deepcopy(self.model)
        return self._explain_copy

    def cancer_probability(self, probs: np.ndarray) -> np.ndarray:
        """The cancer score per row (:func:`~breastpath.inference.score.cancer_score`)."""
        return cancer_score(probs, self.meta)

    def to_predictions(
        self,
        probs: np.ndarray,
        quality: Sequence[Quality] | None = None,
        *,
        allow_non_tissue: bool = False,
    ) -> list[Prediction]:
        """Predictions from class probabilities; rows whose ``quality`` fails the gate get no
        label unless ``allow_non_tissue`` (research only)."""
        cancer = self.cancer_probability(probs)
        verdicts: Sequence[Quality | None] = quality if quality is not None else [None] * len(probs)
        results = []
        for row, p, verdict in zip(probs, cancer, verdicts, strict=True):
            if len(self.class_names) == 2:
                label = self.class_names[-1] if p >= self.threshold else self.class_names[0]
            else:
                label = self.class_names[int(row.argmax())]
            passed = verdict is None or verdict.assessed
            keep = passed or allow_non_tissue
            results.append(
                Prediction(
                    probability=float(p),
                    label=label if keep else None,
                    is_cancer=bool(p >= self.threshold) if keep else None,
                    probabilities={n: float(v) for n, v in zip(self.class_names, row, strict=True)},
                    quality=None if verdict is None else verdict.to_dict(),
                    forced=not passed and allow_non_tissue,
                )
            )
        return results

    def verdict_rule(self, *, threshold: float | None = None, unit: str = "tile") -> VerdictRule:
        """The one rule that turns this model's tile (or patch) probabilities into a verdict
        for an image, slide or patient (:func:`breastpath.inference.verdict.rule_for`)."""
        from breastpath.inference.verdict import rule_for

        return rule_for(self.describe(), threshold=threshold, unit=unit)

    def assess(self, images: Sequence[np.ndarray] | np.ndarray) -> list[Quality]:
        """The quality gate's verdict per image (:func:`~breastpath.inference.quality.assess`)."""
        return assess_quality(images)

    def predict_images(
        self, images: Sequence[np.ndarray], *, allow_non_tissue: bool = False
    ) -> list[Prediction]:
        """Predictions for decoded RGB images of any size, each passed through the quality gate.

        ``allow_non_tissue=True`` labels images the gate flags too (research only; they are
        marked ``forced``).
        """
        return self.to_predictions(
            self.predict_proba(self.prepare(images)),
            self.assess(images),
            allow_non_tissue=allow_non_tissue,
        )

    def predict_sources(
        self,
        sources: Sequence[ImageSource],
        *,
        allow_non_tissue: bool = False,
        sandbox: DecodeSandbox | None = None,
        tiles: bool = False,
        magnification: str | None = None,
        allow_magnification: bool = False,
    ) -> list[Prediction | InvalidImageError]:
        """Decode and score files or buffers; a bad one yields its error in its place.

        Decoding goes through ``sandbox`` (default: :func:`~breastpath.sandbox.default_sandbox`):
        small patches inline, anything else in worker processes with hard limits. With
        ``tiles`` an assessed image larger than the input also gets its tile map and verdict
        (``Prediction.tiles``), as the API gives it. A file whose magnification (``magnification``,
        else its name's) is not the model's gets a
        :class:`~breastpath.errors.MagnificationError` in its place, unless
        ``allow_magnification`` (:mod:`breastpath.inference.magnification`).
        """
        decoder = sandbox if sandbox is not None else default_sandbox()
        refused = [
            None if allow_magnification else self._magnification_error(s, magnification)
            for s in sources
        ]
        wanted = [s for s, r in zip(sources, refused, strict=True) if r is None]
        results = iter(decoder.decode_many(wanted) if wanted else [])
        decoded: list[np.ndarray | InvalidImageError] = []
        for error in refused:
            item = error if error is not None else next(results)
            decoded.append(item if isinstance(item, InvalidImageError) else item.pixels)
        good = [d for d in decoded if isinstance(d, np.ndarray)]
        predictions = (
            iter(self.predict_images(good, allow_non_tissue=allow_non_tissue)) if good else iter(())
        )
        out = [next(predictions) if isinstance(d, np.ndarray) else d for d in decoded]
        if tiles:
            out = [self._with_tiles(p, d) for p, d in zip(out, decoded, strict=True)]
        return out

    def _magnification_error(
        self, source: ImageSource, declared: str | None
    ) -> InvalidImageError | None:
        from breastpath.errors import MagnificationError
        from breastpath.inference.magnification import check_magnification, magnification_of

        name = str(source) if isinstance(source, (str, os.PathLike)) else None
        try:
            check_magnification(self.meta.data, declared or magnification_of(name))
        except MagnificationError as exc:
            return MagnificationError(f"{name or 'image'}: {exc}")
        return None

    def _with_tiles(
        self, prediction: Prediction | InvalidImageError, image: np.ndarray | InvalidImageError
    ) -> Prediction | InvalidImageError:
        if isinstance(prediction, InvalidImageError) or isinstance(image, InvalidImageError):
            return prediction
        if not prediction.assessed:
            return prediction
        from breastpath.inference.tiles import MAX_IMAGE_TILES, image_tile_summary

        summary = image_tile_summary(self, image, max_tiles=MAX_IMAGE_TILES)
        return prediction if summary is None else dataclasses.replace(prediction, tiles=summary)


_STAIN_MISMATCH = (
    "the data were stain-normalized to a different target than this checkpoint's (or the "
    "checkpoint was trained on raw images); prepare the data again without --stain"
)

_FIT_WORDS = {"crop": "centre-cropped", "stretch": "stretched whole (aspect not kept)"}


def _fit_mismatch(fitted: str, ours: str) -> str:
    """The one-line refusal of a cache whose larger images were fitted otherwise than the
    model saw its training images."""
    return (
        f"the data's larger images were {_FIT_WORDS.get(fitted, fitted)} when prepared, but this "
        f"model sees images {_FIT_WORDS[ours]}; prepare them again with --input-fit {ours}, or "
        "evaluate the image folder itself"
    )


def stain_normalizer(meta: CheckpointMeta, *, device: torch.device | None = None) -> Any:
    """The fitted stain normalizer a checkpoint carries (``meta.stain``), or ``None``.

    Raises :class:`~breastpath.errors.CheckpointError` when the stored target is unreadable.
    """
    data = meta.stain
    if not data:
        return None
    from breastpath.errors import StainError
    from breastpath.stain import normalizer_from_dict

    try:
        # numpy on the CPU; torch on an accelerator
        return normalizer_from_dict(
            data, device=device if device and device.type != "cpu" else None
        )
    except StainError as exc:
        raise CheckpointError(f"the checkpoint's stain target is unreadable: {exc}") from None
