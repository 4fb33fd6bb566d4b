"""``DataConfig``: how a source was prepared (``breastpath prepare``)."""

from __future__ import annotations

from dataclasses import dataclass

from breastpath.choices import INPUT_FITS, STAIN_METHODS, InputFit, check_choice
from breastpath.config._base import _Config
from breastpath.errors import ConfigError


@dataclass(frozen=True)
class DataConfig(_Config):
    """How a source was prepared (``breastpath prepare``)."""

    dataset: str = "auto"
    task: str = "binary"
    magnification: str = "all"
    image_size: int = 0  # 0: from the data (50 for IDC, 224 otherwise)
    # how an image larger than image_size is brought to it: "crop" (shorter side resized, centre
    # crop) or "stretch" (the whole image resized, aspect not kept); one of INPUT_FITS
    input_fit: InputFit = "crop"
    test_frac: float = 0.2
    val_frac: float = 0.1
    seed: int = 0
    # stain normalization of the whole cache to a target fitted on training images only
    stain: str = "none"  # one of STAIN_METHODS
    stain_sample: int = 256  # training images (seeded sample) the target is fitted on
    # or a fixed target saved by `breastpath stain fit` on other images (no patient of the
    # cache shapes it, so cross-validation folds may be cut from the cache)
    stain_target: str = ""

    def validate(self) -> None:
        check_choice(self.stain, STAIN_METHODS, what="stain method")
        check_choice(self.input_fit, INPUT_FITS, what="input fit")
        if self.stain_target and self.stain != "none":
            raise ConfigError("give a stain method to fit or a stain target file, not both")
        if self.stain_sample < 1:
            raise ConfigError("stain_sample must be >= 1")
        if not 0 <= self.test_frac < 1 or not 0 <= self.val_frac < 1:
            raise ConfigError("test_frac and val_frac must be in [0, 1)")
        if self.image_size < 0 or self.image_size > 2048:
            raise ConfigError("image_size must be between 1 and 2048 (0 = from the data)")
