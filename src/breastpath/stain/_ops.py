"""Array primitives shared by the stain normalizers, for numpy arrays and torch tensors.

The algorithms in this package are written once against a small backend object (:func:`ops_for`)
with the same methods for numpy and for torch, so the two backends run the same arithmetic: numpy
on the CPU, torch on whatever device the tensor lives on (CUDA included).

Conventions
-----------
* Images are ``uint8`` RGB, channels last. Internally a batch is flattened to ``(N, P, 3)``.
* Optical density (OD) is ``log(io) - log(I + 1)``; with the default ``io = 256`` white (255) has
  OD 0 and the conversion is exactly invertible: ``I = io * exp(-OD) - 1``.
* Luminosity is CIE L* / 100 of the sRGB pixel (D65); tissue is luminosity below a threshold
  (0.8 by default, as in staintools). Near-white background is everything else.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError

#: sRGB (D65) linear RGB -> XYZ, the matrix torchstain and OpenCV use.
RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def _torch() -> Any:
    import torch

    return torch


def is_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch when it is not loaded yet."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# --------------------------------------------------------------------------- lookup tables
@functools.lru_cache(maxsize=8)
def od_table(io: float) -> np.ndarray:
    """OD of each uint8 level: ``log(io) - log(v + 1)`` as float32, shape (256,)."""
    return (math.log(io) - np.log(np.arange(256, dtype=np.float64) + 1.0)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def linear_table() -> np.ndarray:
    """sRGB uint8 level -> linear light in [0, 1], float64, shape (256,)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


@functools.lru_cache(maxsize=1)
def luminance_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel tables whose sum is the relative luminance Y of a pixel (float64)."""
    lin = linear_table()
    return tuple(lin * w for w in RGB_TO_XYZ[1])  # type: ignore[return-value]


def luminance_threshold(luminosity: float) -> float:
    """The relative luminance Y at which CIE L* / 100 equals ``luminosity``."""
    f = (100.0 * luminosity + 16.0) / 116.0
    return f**3 if f > 6.0 / 29.0 else (f - 16.0 / 116.0) / 7.787


@functools.lru_cache(maxsize=8)
def pixel_order(n_pixels: int, seed: int) -> np.ndarray:
    """A seeded pseudo-random permutation of ``range(n_pixels)`` (cached).

    Keys come from an integer hash of the pixel index, so the order depends only on the image
    size and the seed: an image gets the same pixel sample alone or inside any batch, on numpy or
    on torch.
    """
    mask = np.uint64(0xFFFFFFFF)

    def mix(x: np.ndarray) -> np.ndarray:  # lowbias32, a bijection on 32-bit integers
        x = x & mask
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(0x7FEB352D)) & mask
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(0x846CA68B)) & mask
        x ^= x >> np.uint64(16)
        return x

    salt = mix(np.array([seed & 0xFFFFFFFF], dtype=np.uint64))[0]
    keys = mix(np.arange(n_pixels, dtype=np.uint64) ^ salt)
    return np.argsort(keys, kind="stable").astype(np.int64)


# --------------------------------------------------------------------------- backends
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

    def zeros(self, shape: tuple[int, ...], dtype: str = "float") -> np.ndarray:
        return np.zeros(shape, dtype={"float": np.float32, "bool": bool, "int": np.int64}[dtype])

    def full(self, shape: tuple[int, ...], value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float32)

    def ones_bool(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.ones(shape, dtype=bool)

    def amax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return np.max(x, axis=axis)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    cos = staticmethod(np.cos)
    sin = staticmethod(np.sin)
    floor = staticmethod(np.floor)
    cbrt = staticmethod(np.cbrt)
    arctan2 = staticmethod(np.arctan2)
    where = staticmethod(np.where)
    isfinite = staticmethod(np.isfinite)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)

    def clip(self, x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        return np.clip(x, lo, hi)

    def stack(self, xs: list[np.ndarray], axis: int = 0) -> np.ndarray:
        return np.stack(xs, axis=axis)

    def concat(self, xs: list[np.ndarray], axis: int = 0) -> np.ndarray:
        return np.concatenate(xs, axis=axis)

    def sort(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sort(x, axis=axis)

    def cumsum(self, x: np.ndarray, axis: int) -> np.ndarray:
        return np.cumsum(x, axis=axis)

    def take_along(self, x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
        return np.take_along_axis(x, index, axis=axis)

    def nonzero(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return np.nonzero(x)

    def eigh(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.eigh(x)

    def eigvalsh(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.eigvalsh(x)

    def percentile_all(self, x: np.ndarray, q: float, axis: int) -> np.ndarray:
        return np.percentile(x, q, axis=axis).astype(np.float32)

    def any(self, x: np.ndarray) -> bool:
        return bool(np.any(x))


class TorchOps:
    """torch backend, on the device of the data (float32)."""

    name = "torch"

    def __init__(self, device: Any) -> None:
        self.torch = _torch()
        self.device = self.torch.device(device)
        t = self.torch
        self.exp, self.log, self.sqrt, self.cos, self.sin = t.exp, t.log, t.sqrt, t.cos, t.sin
        self.floor, self.arctan2, self.isfinite = t.floor, t.atan2, t.isfinite
        self.maximum, self.minimum = t.maximum, t.minimum

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return self.torch.as_tensor(
            np.asarray(x), dtype=dtype or self.torch.float32, device=self.device
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    @functools.lru_cache(maxsize=16)  # noqa: B019 - a handful of tables per backend instance
    def _table(self, key: bytes) -> Any:
        return self.asarray(np.frombuffer(key, dtype=np.float32))

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

    def zeros(self, shape: tuple[int, ...], dtype: str = "float") -> Any:
        t = self.torch
        kind = {"float": t.float32, "bool": t.bool, "int": t.int64}[dtype]
        return t.zeros(shape, dtype=kind, device=self.device)

    def full(self, shape: tuple[int, ...], value: float) -> Any:
        return self.torch.full(shape, value, dtype=self.torch.float32, device=self.device)

    def ones_bool(self, shape: tuple[int, ...]) -> Any:
        return self.torch.ones(shape, dtype=self.torch.bool, device=self.device)

    def amax(self, x: Any, axis: int) -> Any:
        return self.torch.amax(x, dim=axis)

    def arange(self, n: int) -> Any:
        return self.torch.arange(n, device=self.device)

    def cbrt(self, x: Any) -> Any:
        return x.sign() * x.abs().pow(1.0 / 3.0)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.torch.where(cond, a, b)

    def clip(self, x: Any, lo: float | None = None, hi: float | None = None) -> Any:
        return self.torch.clamp(x, lo, hi)

    def stack(self, xs: list[Any], axis: int = 0) -> Any:
        return self.torch.stack(xs, dim=axis)

    def concat(self, xs: list[Any], axis: int = 0) -> Any:
        return self.torch.cat(xs, dim=axis)

    def sort(self, x: Any, axis: int = -1) -> Any:
        return self.torch.sort(x, dim=axis).values

    def cumsum(self, x: Any, axis: int) -> Any:
        return self.torch.cumsum(x, dim=axis)

    def take_along(self, x: Any, index: Any, axis: int) -> Any:
        return self.torch.take_along_dim(x, index, dim=axis)

    def nonzero(self, x: Any) -> tuple[Any, ...]:
        return self.torch.nonzero(x, as_tuple=True)

    def eigh(self, x: Any) -> tuple[Any, Any]:
        return self.torch.linalg.eigh(x)

    def eigvalsh(self, x: Any) -> Any:
        return self.torch.linalg.eigvalsh(x)

    def percentile_all(self, x: Any, q: float, axis: int) -> Any:
        n = x.shape[axis]
        pos = q / 100.0 * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        a = self.torch.kthvalue(x, lo + 1, dim=axis).values
        b = self.torch.kthvalue(x, hi + 1, dim=axis).values if hi != lo else a
        return a + (b - a) * (pos - lo)

    def any(self, x: Any) -> bool:
        return bool(x.any())


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

    ``restore(out)`` gives ``out`` back in the caller's form: the same container type (numpy
    array or torch tensor), device, and rank (a single image loses the batch axis). When
    ``device`` is given, numpy input is moved to a torch tensor on that device.
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
    single = images.ndim == 3
    batch = images[None] if single else images
    home = images.device if tensor else None
    if device is not None:
        torch = _torch()
        batch = (batch if tensor else torch.from_numpy(np.ascontiguousarray(batch))).to(device)
    elif not tensor:
        batch = np.ascontiguousarray(batch)

    def restore(out: Any) -> Any:
        if device is not None:
            out = out.to(home) if tensor else out.cpu().numpy()
        return out[0] if single else out

    return batch, restore


def split_images(images: Any) -> list[Any]:
    """Turn fit input (one image, a batch, or a list of either) into a list of arrays/tensors."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidImageError("no images given")
        return list(images)
    return [images]


# --------------------------------------------------------------------------- pixel math
# Float pixel data is kept planar, (N, C, P): per-channel arithmetic then runs on contiguous
# planes with plain element-wise operations (no BLAS calls, which stall on a busy CPU).


def tissue_mask(xp: Ops, rgb: Any, threshold: float) -> Any:
    """``(N, P)`` bool: luminosity (CIE L* / 100) below ``threshold``, for uint8 ``(N, P, 3)``."""
    tr, tg, tb = luminance_tables()
    y = xp.lut(tr, rgb[..., 0]) + xp.lut(tg, rgb[..., 1]) + xp.lut(tb, rgb[..., 2])
    return y < luminance_threshold(threshold)


def rgb_to_od(xp: Ops, rgb: Any, io: float = 256.0) -> Any:
    """Planar optical density ``(N, 3, P)`` float32, ``log(io) - log(I + 1)``, of uint8 pixels."""
    table = od_table(float(io))
    return xp.stack([xp.lut(table, rgb[..., c]) for c in range(3)], axis=1)


def od_to_rgb(xp: Ops, od: Any, io: float = 256.0) -> Any:
    """Inverse of :func:`rgb_to_od`: planar OD -> uint8 ``(N, P, 3)``, rounded and clipped."""
    return xp.stack([xp.to_uint8(io * xp.exp(-od[:, c]) - 1.0) for c in range(3)], axis=-1)


def combine(xp: Ops, planes: Any, weights: Any) -> Any:
    """``planes`` (N, K, P) times ``weights`` (N, J, K) or (J, K) -> (N, J, P), element-wise."""
    if weights.ndim == 2:
        weights = weights[None]
    rows = []
    for j in range(weights.shape[1]):
        acc = planes[:, 0] * weights[:, j, 0, None]
        for k in range(1, planes.shape[1]):
            acc = acc + planes[:, k] * weights[:, j, k, None]
        rows.append(acc)
    return xp.stack(rows, axis=1)


def second_moments(xp: Ops, planes: Any) -> Any:
    """``sum_p x x^T`` of planar ``(N, K, P)`` data -> ``(N, K, K)``, element-wise."""
    k = planes.shape[1]
    entries = {}
    for i in range(k):
        for j in range(i, k):
            entries[i, j] = entries[j, i] = (planes[:, i] * planes[:, j]).sum(1)
    return xp.stack([xp.stack([entries[i, j] for j in range(k)], axis=1) for i in range(k)], 1)


def rgb_to_lab(xp: Ops, rgb: Any) -> Any:
    """Planar CIE L*a*b* ``(N, 3, P)`` (D65; L in [0, 100]) of uint8 sRGB ``(N, P, 3)``."""
    lin = xp.stack([xp.lut(linear_table(), rgb[..., c]) for c in range(3)], axis=1)
    xyz = combine(xp, lin, xp.asarray(RGB_TO_XYZ / WHITE_D65[:, None]))
    f = xp.where(xyz > 0.008856, xp.cbrt(xp.clip(xyz, 0.0)), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=1)


def lab_to_rgb(xp: Ops, lab: Any) -> Any:
    """Inverse of :func:`rgb_to_lab`: planar L*a*b* -> uint8 ``(N, P, 3)`` (rounded, clipped)."""
    fy = (lab[:, 0] + 16.0) / 116.0
    f = xp.stack([fy + lab[:, 1] / 500.0, fy, fy - lab[:, 2] / 200.0], axis=1)
    xyz = xp.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / 7.787)
    lin = xp.clip(combine(xp, xyz, xp.asarray(XYZ_TO_RGB * WHITE_D65[None, :])), 0.0, 1.0)
    srgb = xp.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return xp.stack([xp.to_uint8(255.0 * srgb[:, c]) for c in range(3)], axis=-1)


def sample_pixels(xp: Ops, mask: Any, n: int, seed: int) -> tuple[Any, Any]:
    """Pick up to ``n`` pixels where ``mask`` (N, P) is true, uniformly at random per image.

    Returns ``(index, valid)``, both ``(N, min(n, P))``: pixel indices and whether each slot holds
    a masked pixel (images with fewer masked pixels are padded with invalid slots). The choice
    follows :func:`pixel_order`, so it is deterministic for a seed and batch-independent.
    """
    count, n_pixels = mask.shape
    n = min(n, n_pixels)
    order = xp.from_numpy(pixel_order(n_pixels, seed))
    ordered = mask[:, order]
    rank = xp.cumsum(ordered, axis=1)
    take = ordered & (rank <= n)
    rows, cols = xp.nonzero(take)
    slots = rank[rows, cols] - 1
    index = xp.zeros((count, n), dtype="int")
    valid = xp.zeros((count, n), dtype="bool")
    index[rows, slots] = order[cols]
    valid[rows, slots] = True
    return index, valid


def gather_pixels(xp: Ops, planes: Any, index: Any) -> Any:
    """Planar ``(N, C, P)`` at ``index`` (N, S) -> ``(N, C, S)``."""
    return xp.take_along(planes, index[:, None, :], axis=2)


def masked_percentile(xp: Ops, values: Any, valid: Any, q: float) -> Any:
    """Per-row ``q``-th percentile (linear, as numpy) of planar ``values`` (N, K, S) where
    ``valid`` (N, S); rows without a valid entry give 0. Returns ``(N, K)``."""
    inf = xp.full(values.shape, float("inf"))
    ordered = xp.sort(xp.where(valid[:, None, :], values, inf), axis=2)
    last = xp.clip(xp.int(valid.sum(1)) - 1, 0)
    pos = (q / 100.0) * xp.float(last)
    lo = xp.floor(pos)
    frac = (pos - lo)[:, None]
    lo_i = xp.int(lo)
    hi_i = xp.minimum(lo_i + 1, last)
    a = xp.take_along(ordered, lo_i[:, None, None], axis=2)[..., 0]
    b = xp.take_along(ordered, hi_i[:, None, None], axis=2)[..., 0]
    out = a + (b - a) * frac
    return xp.where((valid.sum(1) > 0)[:, None], out, xp.zeros(tuple(out.shape)))
