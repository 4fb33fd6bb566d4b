"""A small scored cohort for the slide viewer's tests: ``breastpath slide`` over a folder with a
generated three-level slide (normal and tumour tissue) and a corrupt file."""

from __future__ import annotations

from pathlib import Path

from breastpath.cli.main import main
from breastpath.slide.synthetic import Blob, write_synthetic_slide

BLOBS = [Blob(700, 600, 450, 380, "normal"), Blob(1700, 1000, 420, 420, "tumor")]
SIZE = (2400, 1600)


def make_viewer_cohort(root: Path) -> tuple[Path, Path]:
    """``(slides, out)``: the input folder and the cohort output folder, scored by the bundled
    ``default`` model at level 1 (a few dozen tiles)."""
    slides = root / "slides"
    slides.mkdir(parents=True)
    write_synthetic_slide(
        slides / "scored.tif", size=SIZE, tile=256, downsamples=(1, 4, 16), blobs=BLOBS
    )
    (slides / "broken.svs").write_bytes(b"II*\x00" + bytes(range(256)) * 20)
    out = root / "out"
    code = main(["slide", str(slides), "--out", str(out), "--level", "1", "--no-progress"])
    assert code == 0
    return slides, out
