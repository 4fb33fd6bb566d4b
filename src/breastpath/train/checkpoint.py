"""Self-describing checkpoints: weights in safetensors, everything else in JSON.

A checkpoint is a pair ``<stem>.safetensors`` + ``<stem>.json``. The JSON carries the model name
and arguments, input size, mean/std, class names, decision threshold, data and training configs,
metrics, package version and the sha256 of the weights file, which is checked on every load.
Nothing is unpickled: safetensors holds only tensors and JSON only plain values.

Named checkpoints ship inside the package (``default``, ...): see :data:`BUNDLED`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from breastpath.errors import CheckpointError
from breastpath.io import atomic_write_bytes, write_json

FORMAT = "breastpath-checkpoint/1"

#: Checkpoints bundled in ``breastpath/assets``: name -> file stem.
BUNDLED = {"default": "cancernet_idc"}


@dataclass
class Checkpoint:
    """Loaded checkpoint: metadata plus tensors (``model.*``, and for resumable ones more)."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model.") :]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def model_state_prefixed(self) -> dict[str, torch.Tensor]:
        """Only the ``model.*`` tensors, keys unchanged (to re-save without optimizer state)."""
        return {k: v for k, v in self.tensors.items() if k.startswith("model.")}

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(
    stem: str | Path, *, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; return the JSON path."""
    from safetensors.torch import save

    stem = Path(stem)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save(flat)
    weights = stem.with_suffix(".safetensors")
    meta = {**meta, "format": FORMAT, "weights_file": weights.name, "weights_sha256": _sha256(data)}
    atomic_write_bytes(weights, data)
    write_json(stem.with_suffix(".json"), meta)
    return stem.with_suffix(".json")


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Turn a bundled name, a run folder, a ``.json``/``.safetensors`` path or a stem into the
    checkpoint's JSON path."""
    text = str(name_or_path)
    if text in BUNDLED:
        asset = resources.files("breastpath") / "assets" / f"{BUNDLED[text]}.json"
        path = Path(str(asset))
        if not path.is_file():
            raise CheckpointError(f"the bundled checkpoint {text!r} is not installed ({path})")
        return path
    path = Path(text)
    if path.is_dir():
        for candidate in ("best.json", "last.json"):
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"{path}: no best.json or last.json in this folder")
    if path.suffix in (".safetensors", ".json", ""):
        json_path = path.with_suffix(".json")
        if json_path.is_file():
            return json_path
    names = ", ".join(sorted(BUNDLED))
    raise CheckpointError(
        f"{text}: no such checkpoint (give a run folder, a .json/.safetensors "
        f"file, or one of: {names})"
    )


def load_checkpoint(name_or_path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint; raise :class:`CheckpointError` on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    json_path = resolve_checkpoint(name_or_path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path}: unreadable checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not a breastpath checkpoint")
    weights = json_path.parent / str(meta.get("weights_file", ""))
    if not weights.is_file() or weights.parent != json_path.parent:
        raise CheckpointError(f"{json_path}: weights file {meta.get('weights_file')!r} is missing")
    data = weights.read_bytes()
    if _sha256(data) != meta.get("weights_sha256"):
        raise CheckpointError(
            f"{weights}: sha256 does not match the checkpoint metadata (truncated or modified file)"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights}: unreadable weights ({exc})") from None
    return Checkpoint(meta=meta, tensors=tensors, path=json_path)


def build_model(checkpoint: Checkpoint, *, tta: str | None = None) -> torch.nn.Module:
    """Create the checkpoint's model and load its weights (strictly).

    ``tta`` (``"none"``, ``"flips"``, ``"dihedral"``; default: the checkpoint's ``tta`` entry,
    else none) wraps the model in :class:`~breastpath.models.tta.TestTimeAugmentation`.
    Nothing is downloaded: zoo models are built from the stored weights alone.
    """
    from breastpath.models import create_model
    from breastpath.models.tta import TTA_MODES, TestTimeAugmentation

    spec = checkpoint.meta.get("model", {})
    try:
        model = create_model(
            spec["name"], num_classes=int(spec["num_classes"]), **spec.get("args", {})
        )
    except KeyError as exc:
        raise CheckpointError(f"{checkpoint.path}: model description lacks {exc}") from None
    try:
        model.load_state_dict(checkpoint.model_state(), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{checkpoint.path}: weights do not match the model ({first})"
        ) from None
    mode = tta if tta is not None else str(checkpoint.meta.get("tta") or "none")
    if mode not in TTA_MODES:
        raise CheckpointError(f"{checkpoint.path}: unknown test-time augmentation {mode!r}")
    return model if mode == "none" else TestTimeAugmentation(model, mode=mode)


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
