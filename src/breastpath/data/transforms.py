"""Bring one decoded image to the model's input size.

This is the only place that decides how an image of another size becomes a model input, and it is
used by the cache builder and by the :class:`~breastpath.inference.predictor.Predictor` alike.

Rule
----
* An image no larger than the target in both dimensions (IDC edge patches, 50 wide and less than
  50 tall) is **padded** with white at the bottom and right, where the slide ended, so tissue
  keeps its position on the 50-pixel grid.
* A larger image is resized so that its shorter side equals the target (area averaging, aspect
  ratio kept) and **center-cropped** to the target: ``fit="crop"``, the default.
* With ``fit="stretch"`` a larger image is instead resized whole to the target (area averaging,
  aspect ratio not kept): the way the BreakHis tiles were made from 700x460 fields, so a model
  trained on them sees a new field as it saw its training images (a checkpoint's ``input_fit``).
"""

from __future__ import annotations

import numpy as np
import torch

from breastpath.choices import INPUT_FITS, check_choice
from breastpath.errors import InvalidImageError

PAD_VALUE = 255


def fit_to_size(
    image: np.ndarray, size: tuple[int, int], *, fit: str = "crop"
) -> tuple[np.ndarray, str]:
    """Return ``image`` brought to ``size = (height, width)`` and what was done.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8 RGB array.
    size
        Target ``(height, width)``.
    fit
        What happens to a larger image: ``"crop"`` (resize the shorter side, centre crop) or
        ``"stretch"`` (resize the whole image, aspect not kept).

    Returns
    -------
    (array, action)
        The ``(height, width, 3)`` uint8 array and one of ``"none"``, ``"padded"``,
        ``"resized"`` (resized and cropped) or ``"stretched"``.

    Examples
    --------
    >>> import numpy as np
    >>> out, action = fit_to_size(np.zeros((40, 50, 3), np.uint8), (50, 50))
    >>> out.shape, action
    ((50, 50, 3), 'padded')
    >>> fit_to_size(np.zeros((460, 700, 3), np.uint8), (224, 224), fit="stretch")[1]
    'stretched'
    """
    check_choice(fit, INPUT_FITS, what="input fit")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImageError(
            f"expected an (H, W, 3) uint8 image, got shape {image.shape} and dtype {image.dtype}"
        )
    target_h, target_w = size
    height, width = image.shape[:2]
    if (height, width) == (target_h, target_w):
        return image, "none"
    if height <= target_h and width <= target_w:
        out = np.full((target_h, target_w, 3), PAD_VALUE, dtype=np.uint8)
        out[:height, :width] = image
        return out, "padded"
    if fit == "stretch":
        return _stretch(image, target_h, target_w), "stretched"
    return _resize_and_crop(image, target_h, target_w), "resized"


def _stretch(image: np.ndarray, target_h: int, target_w: int) -> np.ndarray:
    """The whole image resized to the target (area averaging; no intermediate image)."""
    from PIL import Image

    resized = Image.fromarray(image).resize((target_w, target_h), Image.Resampling.BOX)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))


#: Largest intermediate (pixels) of resize-then-crop; beyond it only the kept region is resampled.
MAX_RESIZE_PIXELS = 1 << 22


def _resize_and_crop(image: np.ndarray, target_h: int, target_w: int) -> np.ndarray:
    """Resize so the shorter side fits, then center-crop.

    An elongated image would make a huge intermediate (a 1 x 100,000 strip: 50 x 5,000,000
    pixels, 750 MB; 1 x 60,000,000: an overflow). When the resized image would have more than
    :data:`MAX_RESIZE_PIXELS` pixels, only the region that survives the crop is resampled
    (Pillow's ``box``), so the work is ``target_h x target_w`` pixels whatever the shape. The
    two paths agree up to where a source pixel sits exactly on a box edge.

    Examples
    --------
    >>> _resize_and_crop(np.zeros((1, 1_000_000, 3), np.uint8), 50, 50).shape
    (50, 50, 3)
    """
    from PIL import Image

    height, width = image.shape[:2]
    scale = max(target_h / height, target_w / width)
    new_h = max(target_h, round(height * scale))
    new_w = max(target_w, round(width * scale))
    top = (new_h - target_h) // 2
    left = (new_w - target_w) // 2
    source = Image.fromarray(image)
    if new_h * new_w <= MAX_RESIZE_PIXELS:
        resized = np.asarray(source.resize((new_w, new_h), Image.Resampling.BOX), dtype=np.uint8)
        return np.ascontiguousarray(resized[top : top + target_h, left : left + target_w])
    step_y, step_x = height / new_h, width / new_w
    box = (left * step_x, top * step_y, (left + target_w) * step_x, (top + target_h) * step_y)
    cropped = source.resize((target_w, target_h), Image.Resampling.BOX, box=box)
    return np.ascontiguousarray(np.asarray(cropped, dtype=np.uint8))


def resize_batch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An NCHW float batch bilinearly resized to ``size`` (antialiased when shrinking; a no-op
    when it already has that size): how a network brings any input to its working size.

    Examples
    --------
    >>> resize_batch(torch.zeros(2, 3, 50, 50), (96, 96)).shape
    torch.Size([2, 3, 96, 96])
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = x.shape[-1] > size[1] or x.shape[-2] > size[0]
    return torch.nn.functional.interpolate(
        x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink
    )


def to_model_input(
    images: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor, device: torch.device | str
) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (channels-last memory) on ``device``."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def to_model_array(images: np.ndarray, *, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """:func:`to_model_input` in numpy, for onnxruntime: uint8 NHWC -> normalised float32 NCHW,
    C-contiguous (no torch threads wake up, no channels-last copy).

    Examples
    --------
    >>> x = to_model_array(np.full((1, 2, 2, 3), 255, np.uint8), mean=np.zeros(3), std=np.ones(3))
    >>> x.shape, float(x.max()), x.flags.c_contiguous
    ((1, 3, 2, 2), 1.0, True)
    """
    scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
    shift = (np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)
    x = np.empty((images.shape[0], 3, *images.shape[1:3]), dtype=np.float32)
    for c in range(3):  # one channel plane at a time: NHWC -> NCHW without a float NHWC copy
        np.multiply(images[..., c], scale[c], out=x[:, c], dtype=np.float32)
        x[:, c] -= shift[c]
    return x
