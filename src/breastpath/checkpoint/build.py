"""Turn a loaded checkpoint into a ready model, and optimizer state into tensors and back."""

from __future__ import annotations

from typing import Any

import torch

from breastpath.checkpoint.files import Checkpoint
from breastpath.choices import TTA_MODES
from breastpath.errors import CheckpointError


def build_model(checkpoint: Checkpoint, *, tta: str | None = None) -> torch.nn.Module:
    """Create the checkpoint's model and load its weights (strictly).

    ``tta`` (``"none"``, ``"flips"``, ``"dihedral"``; default: the checkpoint's ``tta`` entry,
    else none) wraps the model in :class:`~breastpath.models.tta.TestTimeAugmentation`.
    Nothing is downloaded: zoo models are built from the stored weights alone.
    """
    from breastpath.models import create_model
    from breastpath.models.tta import TestTimeAugmentation

    if checkpoint.onnx is not None:
        raise CheckpointError(
            f"{checkpoint.path}: an exported ONNX model has no torch weights (use runtime onnx)"
        )
    spec = checkpoint.meta.model
    _check_layout(checkpoint)  # before allocating: absurd arguments never reach real memory
    try:
        model = create_model(spec.name, num_classes=spec.num_classes, **spec.args)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint.path}: field 'model.args': {exc}") from None
    try:
        model.load_state_dict(checkpoint.model_state(), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{checkpoint.path}: weights do not match the model ({first})"
        ) from None
    mode = tta if tta is not None else checkpoint.meta.tta
    if mode not in TTA_MODES:
        raise CheckpointError(f"{checkpoint.path}: unknown test-time augmentation {mode!r}")
    return model if mode == "none" else TestTimeAugmentation(model, mode=mode)


def _check_layout(checkpoint: Checkpoint) -> None:
    """Build the model on the meta device (no memory) and compare its tensor names and shapes
    with the stored weights; a mismatch is a one-line :class:`CheckpointError`."""
    from breastpath.models import create_model

    spec = checkpoint.meta.model
    try:
        with torch.device("meta"):
            skeleton = create_model(spec.name, num_classes=spec.num_classes, **spec.args)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint.path}: field 'model.args': {exc}") from None
    except (RuntimeError, NotImplementedError):  # a builder that needs real values: load decides
        return
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in checkpoint.model_state().items()}
    problems = [f"missing {k}" for k in expected if k not in stored]
    problems += [f"unexpected {k}" for k in stored if k not in expected]
    problems += [
        f"{k}: stored {stored[k]}, model {shape}"
        for k, shape in expected.items()
        if k in stored and stored[k] != shape
    ]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{checkpoint.path}: weights do not match the model ({'; '.join(problems[:3])}{more})"
        )


def optimizer_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        plain_state[str(index)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                plain_state[str(index)][name] = value
    return tensors, {"state": plain_state, "param_groups": state["param_groups"]}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in plain["state"].items()}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}
