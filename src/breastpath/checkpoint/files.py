"""Self-describing checkpoints: weights in safetensors, everything else in JSON.

A checkpoint is a pair ``<stem>.safetensors`` + ``<stem>.json``. The JSON carries the model name
and arguments, input size, mean/std, class names, decision threshold, data and training configs,
metrics, package version and the sha256 of the weights file, which is checked on every load.
Nothing is unpickled: safetensors holds only tensors and JSON only plain values.

Saving is crash-safe: the weights are first written whole under a staging name
``<stem>.<sha256[:16]>.safetensors``, then the JSON (the commit point), then the staged file is
renamed to ``<stem>.safetensors``. A process killed at any moment leaves a pair that loads: the
old one, or the new JSON whose weights are still under the staging name (the loader finds them by
their hash). The next save removes what a killed save left behind.

An exported ONNX pair (``<stem>.onnx`` + ``<stem>.json``, see :mod:`breastpath.export.onnx`) loads
the same way: its JSON says ``runtime: onnx`` and holds the sha256 of the ``.onnx`` file, which is
checked like the weights' (the :class:`Checkpoint` then has ``onnx`` bytes and no tensors).

A checkpoint may also carry an int8 copy of its network (:func:`attach_int8`, made by
:func:`breastpath.inference.quantize.quantize_int8`): ``<stem>.int8-<sha256[:16]>.onnx`` beside the
weights, named in the JSON with its sha256 (``int8_file``, ``int8_sha256``) and verified on load
(the :class:`Checkpoint` then has both tensors and ``int8`` bytes). The runtime ``int8`` scores
with it; Grad-CAM still uses the float weights.

Named checkpoints ship inside the package (``default``, ``breakhis``): see :data:`BUNDLED`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from breastpath.checkpoint.meta import FORMAT, MAX_DEPTH, CheckpointMeta, parse_meta
from breastpath.errors import CheckpointError
from breastpath.io import atomic_write_bytes, remove_stale_temps, write_json

MAX_METADATA_BYTES = 16 * 2**20  # a checkpoint's JSON is a few KB; refuse to parse a huge one

#: Checkpoints bundled in ``breastpath/assets``: name -> file stem. ``default`` scores 50x50 IDC
#: patches; ``breakhis`` scores 200X BreakHis images (benign vs malignant).
BUNDLED = {"default": "efficientnet_idc", "breakhis": "efficientnet_breakhis"}

#: Model card of each bundled checkpoint, in ``breastpath/assets``: name -> file name.
BUNDLED_CARDS = {"default": "MODEL_CARD.md", "breakhis": "MODEL_CARD_breakhis.md"}


def assets_dir() -> Path:
    """The folder of the bundled checkpoints and their model cards."""
    return Path(str(resources.files("breastpath") / "assets"))


def bundled_name(path: str | Path) -> str | None:
    """The bundled name (``default``, ``breakhis``, ...) of a checkpoint file, else ``None``.

    Examples
    --------
    >>> bundled_name(assets_dir() / "efficientnet_breakhis.json")
    'breakhis'
    >>> bundled_name("runs/x/best.json") is None
    True
    """
    path = Path(path)
    if path.parent.resolve() != assets_dir().resolve():
        return None
    return next((name for name, stem in BUNDLED.items() if stem == path.stem), None)


@dataclass
class Checkpoint:
    """Loaded checkpoint: metadata plus tensors (``model.*``, and for resumable ones more), or
    the model bytes of an exported ONNX pair."""

    meta: CheckpointMeta
    tensors: dict[str, torch.Tensor]
    path: Path
    onnx: bytes | None = None
    #: the statically quantized ONNX network (runtime ``int8``), when one is attached
    int8: bytes | None = None

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
    stem: str | Path,
    *,
    tensors: dict[str, torch.Tensor],
    meta: CheckpointMeta | Mapping[str, Any],
) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically, as a pair (see the module
    docstring); return the JSON path. One process at a time may save a given ``stem``.

    ``meta`` may be a plain mapping: it is validated like a loaded one (:func:`parse_meta`).
    """
    if not isinstance(meta, CheckpointMeta):
        meta = parse_meta({**meta, "format": FORMAT}, source=f"{stem}: new checkpoint")
    from safetensors.torch import save

    stem = Path(stem)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save(flat)
    digest = _sha256(data)
    weights = stem.with_suffix(".safetensors")
    plain = meta.to_dict()
    plain.update(runtime="torch", weights_file=weights.name, weights_sha256=digest)
    for key in ("onnx_file", "onnx_sha256", "onnx_opset", "int8_file", "int8_sha256"):
        plain.pop(key, None)  # new weights: an attached int8 copy no longer matches them
    staged = _staged(weights, digest)
    weights.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(weights)  # of a save that was killed part-way
    atomic_write_bytes(staged, data)
    write_json(stem.with_suffix(".json"), plain)  # the commit point
    os.replace(staged, weights)
    return stem.with_suffix(".json")


def update_checkpoint_json(
    json_path: str | Path, changes: Mapping[str, Any], *, write: bool
) -> tuple[CheckpointMeta, CheckpointMeta]:
    """A checkpoint's JSON with top-level ``changes`` merged in, every other key as it is:
    validated (:func:`parse_meta`), refused (:class:`CheckpointError`) when the weights
    reference would change, and with ``write`` rewritten and read back. Returns the metadata
    before and after."""
    json_path = Path(json_path)
    raw = json.loads(json_path.read_text(encoding="utf-8"))
    before = read_meta(json_path)
    body = {**raw, **changes}
    after = parse_meta(body, source=str(json_path))
    weights = (before.weights_file, before.weights_sha256)
    if (after.weights_file, after.weights_sha256) != weights:
        raise CheckpointError(f"{json_path}: refusing, the weights reference would change")
    if write:
        write_json(json_path, body)
        after = read_meta(json_path)
        assert (after.weights_file, after.weights_sha256) == weights
    return before, after


def save_onnx_pair(
    out: str | Path, *, model: bytes, meta: CheckpointMeta, opset: int, extra: Mapping[str, Any]
) -> Path:
    """Write ``<out>.onnx`` and ``<out>.json``: an exported checkpoint (runtime ``onnx``) that
    loads like any other; return the ``.onnx`` path. The JSON is ``meta`` without its torch
    weights, int8 attachment and resume state, with the ONNX file's name, sha256 and opset,
    plus ``extra`` keys (validated like a loaded checkpoint before anything is written)."""
    onnx = Path(out).with_suffix(".onnx")
    plain = meta.to_dict()
    for key in ("weights_file", "weights_sha256", "resume", "int8_file", "int8_sha256"):
        plain.pop(key, None)
    plain.update(extra)
    plain.update(runtime="onnx", onnx_file=onnx.name, onnx_sha256=_sha256(model), onnx_opset=opset)
    parse_meta(plain, source=f"{onnx.with_suffix('.json')}: exported checkpoint")
    atomic_write_bytes(onnx, model)
    write_json(onnx.with_suffix(".json"), plain)
    return onnx


def _staged(weights: Path, digest: str) -> Path:
    """Where new weights wait until their JSON is written: ``<stem>.<sha256[:16]>.safetensors``."""
    return weights.with_name(f"{weights.stem}.{digest[:16]}{weights.suffix}")


def _remove_leftovers(weights: Path) -> None:
    """Delete staged weights and temp files that a killed save of this checkpoint left behind."""
    remove_stale_temps(weights.parent, prefix=f"{weights.stem}.")
    staged = re.compile(rf"{re.escape(weights.stem)}\.[0-9a-f]{{16}}{re.escape(weights.suffix)}")
    for path in weights.parent.iterdir():
        if staged.fullmatch(path.name):
            path.unlink(missing_ok=True)


def _read_weights(weights: Path, digest: object) -> bytes | None:
    """The bytes of ``weights``, or of its staged copy when a save was killed after committing
    the JSON but before the rename (found by ``digest``); None when neither exists."""
    data = weights.read_bytes() if weights.is_file() else None
    if data is not None and _sha256(data) == digest:
        return data
    if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest):
        staged = _staged(weights, digest)
        if staged.is_file() and _sha256(candidate := staged.read_bytes()) == digest:
            return candidate
    return data


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Turn a bundled name, a run folder, a ``.json``/``.safetensors`` path or a stem into the
    checkpoint's JSON path."""
    text = str(name_or_path)
    if text in BUNDLED:
        path = assets_dir() / f"{BUNDLED[text]}.json"
        if not path.is_file():
            raise CheckpointError(f"the bundled checkpoint {text!r} is not installed ({path})")
        return path
    path = Path(text)
    if path.is_dir():
        for candidate in ("best.json", "last.json"):
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"{path}: no best.json or last.json in this folder")
    if path.suffix in (".safetensors", ".json", ".onnx", ""):
        json_path = path.with_suffix(".json")
        if json_path.is_file():
            return json_path
    names = ", ".join(sorted(BUNDLED))
    raise CheckpointError(
        f"{text}: no such checkpoint (give a run folder, a .json/.safetensors/.onnx "
        f"file, or one of: {names})"
    )


def load_checkpoint(name_or_path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint; raise :class:`CheckpointError` on any problem."""
    json_path = resolve_checkpoint(name_or_path)
    meta = read_meta(json_path)
    if meta.runtime == "onnx":
        onnx = _verified_bytes(json_path, meta.onnx_file, meta.onnx_sha256, what="ONNX model")
        return Checkpoint(meta=meta, tensors={}, path=json_path, onnx=onnx)
    data = _verified_bytes(json_path, meta.weights_file, meta.weights_sha256, what="weights")
    int8 = None
    if meta.int8_file:
        int8 = _verified_bytes(json_path, meta.int8_file, meta.int8_sha256, what="int8 model")
    return Checkpoint(meta=meta, tensors=_tensors(data, json_path), path=json_path, int8=int8)


def attach_int8(name_or_path: str | Path, data: bytes, *, make_default: bool = True) -> Path:
    """Store ``data`` (int8 ONNX bytes of this checkpoint's network) beside a torch checkpoint
    and name it in its JSON; with ``make_default`` its runtime becomes ``int8``. Returns the
    JSON path.

    The file's name carries its hash, so the JSON (written last, the commit point) always names
    bytes that exist: a process killed part-way leaves the previous, loadable pair. A file a
    previous attach left behind is removed after the commit.
    """
    json_path = resolve_checkpoint(name_or_path)
    meta = read_meta(json_path)
    if meta.runtime == "onnx":
        raise CheckpointError(f"{json_path}: an exported ONNX pair has no torch weights to pair")
    digest = _sha256(data)
    target = json_path.with_name(f"{json_path.stem}.int8-{digest[:16]}.onnx")
    atomic_write_bytes(target, data)
    runtime = "int8" if make_default else ("torch" if meta.runtime == "int8" else meta.runtime)
    meta = meta.replace(int8_file=target.name, int8_sha256=digest, runtime=runtime)
    write_json(json_path, meta.to_dict())
    for old in json_path.parent.glob(f"{json_path.stem}.int8-*.onnx"):
        if old != target:
            old.unlink(missing_ok=True)
    return json_path


def read_meta(json_path: Path) -> CheckpointMeta:
    """The validated metadata of the checkpoint whose JSON is ``json_path``."""
    try:
        if json_path.stat().st_size > MAX_METADATA_BYTES:
            raise CheckpointError(f"{json_path}: checkpoint metadata larger than 16 MiB")
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path}: unreadable checkpoint metadata ({exc})") from None
    except RecursionError:  # nested deeper than the parser's stack: MAX_DEPTH refuses far less
        raise CheckpointError(
            f"{json_path}: checkpoint metadata nested deeper than {MAX_DEPTH} levels"
        ) from None
    return parse_meta(raw, source=str(json_path))


def _verified_bytes(json_path: Path, name: str, digest: str, *, what: str) -> bytes:
    """The bytes of the file ``name`` beside ``json_path``, checked against ``digest``."""
    target = json_path.parent / name
    data = None
    if name and target.parent == json_path.parent:
        data = _read_weights(target, digest) if what == "weights" else _read_plain(target)
    if data is None:
        raise CheckpointError(f"{json_path}: {what} file {name!r} is missing")
    if _sha256(data) != digest:
        raise CheckpointError(
            f"{target}: sha256 does not match the checkpoint metadata (truncated or modified file)"
        )
    return data


def _read_plain(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror})") from None


def _tensors(data: bytes, json_path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{json_path}: unreadable weights ({exc})") from None
