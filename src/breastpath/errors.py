"""Named exceptions raised by breastpath.

Every error the library raises on bad input derives from :class:`BreastpathError`, so that the
CLI can turn it into a one-line message and a non-zero exit, and the web API into an HTTP 4xx.
"""

from __future__ import annotations


class BreastpathError(Exception):
    """Base class of every error breastpath raises on purpose."""


class InvalidImageError(BreastpathError, ValueError):
    """A file or buffer is not a decodable image, or has a size or mode we cannot use."""


class DatasetLayoutError(BreastpathError, ValueError):
    """A source folder or archive does not match any layout we can read, or holds no images."""


class SplitError(BreastpathError, ValueError):
    """A patient-level split cannot be made with the requested fractions."""


class CacheError(BreastpathError, OSError):
    """A prepared cache is missing, incomplete or does not match its index."""


class CheckpointError(BreastpathError, OSError):
    """A checkpoint is missing, truncated, tampered with, or does not match the model."""


class ExplanationUnavailableError(BreastpathError, RuntimeError):
    """An explanation (Grad-CAM) was asked of a model that cannot give one (an ONNX-only model)."""


class ConfigError(BreastpathError, ValueError):
    """A configuration value or file is invalid."""


class UnknownModelError(BreastpathError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else "unknown model"


class StainError(BreastpathError, ValueError):
    """A stain normalizer cannot be fitted, applied, or loaded (unknown method, no tissue, ...)."""


class SlideError(BreastpathError, ValueError):
    """A slide or an IDC patient cannot be used: missing file, not a slide, unknown patient,
    no tissue found, or an unusable level or resolution."""


class DecodeLimitError(InvalidImageError):
    """Decoding an image passed a resource limit (memory, CPU time or wall time) and was
    stopped; the image is refused like any other bad image."""


class NoTissueError(SlideError):
    """A slide (or image) holds no tissue to score: a reason to skip it, not a broken file."""


class MagnificationError(InvalidImageError):
    """An image's magnification is not one the model was trained at (or is not a valid one)."""
