"""Array backends for the stain code: the same small set of operations for numpy and torch.

The algorithms in this package are written once against a backend object (:func:`ops_for`), so
numpy and torch run the same arithmetic: numpy on the CPU (also for CPU tensors, where it is the
faster choice), torch on the device of the data (CUDA included). Also: validating an image or
batch and giving results back in the caller's form (:func:`as_batch`).
"""

from __future__ import annotations

import builtins
import functools
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError


def _torch() -> Any:
    import torch

    return torch


def is_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch when it is not loaded yet."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class NumpyOps:
    """numpy backend (CPU, float32)."""

    name = "numpy"
    device = None

    def asarray(self, x: Any, dtype: Any = np.float32) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def lut(self, table: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take(table.astype(np.float32), index)

    def from_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def float(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32, copy=False)

    def int(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64, copy=False)

    def to_uint8(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def zeros(self, shape: tuple[builtins.int, ...], dtype: str = "float") -> np.ndarray:
        return np.zeros(shape, dtype={"float": np.float32, "bool": bool, "int": np.int64}[dtype])

    def full(self, shape: tuple[builtins.int, ...], value: builtins.float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float32)

    def ones_bool(self, shape: tuple[builtins.int, ...]) -> np.ndarray:
        return np.ones(shape, dtype=bool)

    def amax(self, x: np.ndarray, axis: builtins.int) -> np.ndarray:
        return np.max(x, axis=axis)

    def arange(self, n: builtins.int) -> np.ndarray:
        return np.arange(n)

    # the numpy functions themselves (no wrapper call), typed as numpy types them for arrays
    # (a ufunc of an array gives Any); listed so that array-or-tensor arguments check
    exp: staticmethod[[Any], Any] = staticmethod(np.exp)
    sqrt: staticmethod[[Any], Any] = staticmethod(np.sqrt)
    cos: staticmethod[[Any], Any] = staticmethod(np.cos)
    sin: staticmethod[[Any], Any] = staticmethod(np.sin)
    floor: staticmethod[[Any], Any] = staticmethod(np.floor)
    cbrt: staticmethod[[Any], Any] = staticmethod(np.cbrt)
    arctan2: staticmethod[[Any, Any], Any] = staticmethod(np.arctan2)
    where: staticmethod[[Any, Any, Any], np.ndarray] = staticmethod(np.where)
    isfinite: staticmethod[[Any], Any] = staticmethod(np.isfinite)
    minimum: staticmethod[[Any, Any], Any] = staticmethod(np.minimum)

    def clip(
        self, x: np.ndarray, lo: builtins.float | None = None, hi: builtins.float | None = None
    ) -> np.ndarray:
        if hi is None:  # np.maximum / np.minimum: much less overhead than np.clip
            if lo is None:
                raise TypeError("clip needs lo or hi")
            return np.maximum(x, lo)
        return np.minimum(x, hi) if lo is None else np.clip(x, lo, hi)

    def stack(self, xs: list[np.ndarray], axis: builtins.int = 0) -> np.ndarray:
        return np.stack(xs, axis=axis)

    def concat(self, xs: list[np.ndarray], axis: builtins.int = 0) -> np.ndarray:
        return np.concatenate(xs, axis=axis)

    def sort(self, x: np.ndarray, axis: builtins.int = -1) -> np.ndarray:
        return np.sort(x, axis=axis)

    def cumsum(self, x: np.ndarray, axis: builtins.int) -> np.ndarray:
        return np.cumsum(x, axis=axis)

    def take_along(self, x: np.ndarray, index: np.ndarray, axis: builtins.int) -> np.ndarray:
        return np.take_along_axis(x, index, axis=axis)

    def nonzero(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return np.nonzero(x)

    def eigh(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.eigh(x)

    def eigvalsh(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.eigvalsh(x)

    def percentile_all(self, x: np.ndarray, q: builtins.float, axis: builtins.int) -> np.ndarray:
        return np.percentile(x, q, axis=axis).astype(np.float32)


class TorchOps:
    """torch backend, on the device of the data (float32)."""

    name = "torch"

    def __init__(self, device: Any) -> None:
        self.torch = _torch()
        self.device = self.torch.device(device)
        t = self.torch
        self.exp, self.sqrt, self.cos, self.sin = t.exp, t.sqrt, t.cos, t.sin
        self.floor, self.arctan2, self.isfinite, self.minimum = (
            t.floor,
            t.atan2,
            t.isfinite,
            t.minimum,
        )

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        array = np.array(x, dtype=np.float32)
        return self.torch.as_tensor(array, dtype=dtype or self.torch.float32, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    @functools.lru_cache(maxsize=16)  # noqa: B019 - a handful of tables per backend instance
    def _table(self, key: bytes) -> Any:
        return self.asarray(np.frombuffer(key, dtype=np.float32).copy())

    def lut(self, table: np.ndarray, index: Any) -> Any:
        return self._table(table.astype(np.float32).tobytes())[index.long()]

    def from_numpy(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def float(self, x: Any) -> Any:
        return x.float()

    def int(self, x: Any) -> Any:
        return x.long()

    def to_uint8(self, x: Any) -> Any:
        return self.torch.round(x).clamp_(0, 255).to(self.torch.uint8)

    def zeros(self, shape: tuple[builtins.int, ...], dtype: str = "float") -> Any:
        t = self.torch
        kind = {"float": t.float32, "bool": t.bool, "int": t.int64}[dtype]
        return t.zeros(shape, dtype=kind, device=self.device)

    def full(self, shape: tuple[builtins.int, ...], value: builtins.float) -> Any:
        return self.torch.full(shape, value, dtype=self.torch.float32, device=self.device)

    def ones_bool(self, shape: tuple[builtins.int, ...]) -> Any:
        return self.torch.ones(shape, dtype=self.torch.bool, device=self.device)

    def amax(self, x: Any, axis: builtins.int) -> Any:
        return self.torch.amax(x, dim=axis)

    def arange(self, n: builtins.int) -> Any:
        return self.torch.arange(n, device=self.device)

    def cbrt(self, x: Any) -> Any:
        return x.sign() * x.abs().pow(1.0 / 3.0)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.torch.where(cond, a, b)

    def clip(
        self, x: Any, lo: builtins.float | None = None, hi: builtins.float | None = None
    ) -> Any:
        return self.torch.clamp(x, lo, hi)

    def stack(self, xs: list[Any], axis: builtins.int = 0) -> Any:
        return self.torch.stack(xs, dim=axis)

    def concat(self, xs: list[Any], axis: builtins.int = 0) -> Any:
        return self.torch.cat(xs, dim=axis)

    def sort(self, x: Any, axis: builtins.int = -1) -> Any:
        return self.torch.sort(x, dim=axis).values

    def cumsum(self, x: Any, axis: builtins.int) -> Any:
        return self.torch.cumsum(x, dim=axis)

    def take_along(self, x: Any, index: Any, axis: builtins.int) -> Any:
        return self.torch.take_along_dim(x, index, dim=axis)

    def nonzero(self, x: Any) -> tuple[Any, ...]:
        return self.torch.nonzero(x, as_tuple=True)

    def eigh(self, x: Any) -> tuple[Any, Any]:
        return self.torch.linalg.eigh(x)

    def eigvalsh(self, x: Any) -> Any:
        return self.torch.linalg.eigvalsh(x)

    def percentile_all(self, x: Any, q: builtins.float, axis: builtins.int) -> Any:
        n = x.shape[axis]
        pos = q / 100.0 * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        a = self.torch.kthvalue(x, lo + 1, dim=axis).values
        b = self.torch.kthvalue(x, hi + 1, dim=axis).values if hi != lo else a
        return a + (b - a) * (pos - lo)


Ops = NumpyOps | TorchOps
_NUMPY = NumpyOps()


@functools.lru_cache(maxsize=8)
def _torch_ops(device: str) -> TorchOps:
    return TorchOps(device)


def ops_for(x: Any) -> Ops:
    """The backend for an array: numpy for numpy arrays, torch (on its device) for tensors."""
    return _torch_ops(str(x.device)) if is_tensor(x) else _NUMPY


# --------------------------------------------------------------------------- input handling
def as_batch(images: Any, *, device: Any = None) -> tuple[Any, Callable[[Any], Any]]:
    """Validate one image or a batch and return ``(batch NxHxWx3, restore)``.

    The batch is what the algorithms run on: a numpy array for numpy input and for CPU tensors
    (numpy is the faster CPU backend; no copy is made), a tensor for tensors on an accelerator.
    ``device`` (e.g. ``"cuda"``, or ``"cpu"`` to force the torch backend) moves the work to torch
    on that device. ``restore(out)`` gives ``out`` back in the caller's form: the same type,
    device and rank (a single image loses the batch axis).
    """
    tensor = is_tensor(images)
    if not tensor and not isinstance(images, np.ndarray):
        raise InvalidImageError(
            f"expected a uint8 image array or tensor, got {type(images).__name__}"
        )
    if tensor:
        torch = _torch()
        if images.dtype != torch.uint8:
            raise InvalidImageError(f"expected a uint8 tensor, got {images.dtype}")
    elif images.dtype != np.uint8:
        raise InvalidImageError(f"expected a uint8 array, got {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise InvalidImageError(
            f"expected an (H, W, 3) image or an (N, H, W, 3) batch, got shape {tuple(images.shape)}"
        )
    if images.shape[-3] == 0 or images.shape[-2] == 0:
        raise InvalidImageError(f"image has no pixels (shape {tuple(images.shape)})")
    single = images.ndim == 3
    batch = images[None] if single else images
    home = images.device if tensor else None
    if device is not None:
        torch = _torch()
        if tensor:
            source = batch
        else:  # input is only read, so a read-only array (a memmap cache) is fine
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                source = torch.from_numpy(np.ascontiguousarray(batch))
        batch = source.to(device).contiguous()
    elif home is not None and home.type == "cpu":  # a CPU tensor (home is set for tensors)
        batch = np.ascontiguousarray(batch.detach().numpy())
    elif tensor:
        batch = batch.contiguous()
    else:
        batch = np.ascontiguousarray(batch)

    def restore(out: Any) -> Any:
        if tensor and isinstance(out, np.ndarray):
            out = _torch().from_numpy(np.ascontiguousarray(out))
        elif tensor:
            out = out.to(home)
        elif is_tensor(out):
            out = out.cpu().numpy()
        return out[0] if single else out

    return batch, restore


def split_images(images: Any) -> list[Any]:
    """Turn fit input (one image, a batch, or a list of either) into a list of arrays/tensors."""
    return list(images) if isinstance(images, (list, tuple)) else [images]
