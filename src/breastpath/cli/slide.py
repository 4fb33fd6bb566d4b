"""``breastpath slide SLIDE... --out DIR [--level L | --mpp X] [--slide-mpp X] [--backend B]``."""

from __future__ import annotations

import logging

import click

from breastpath.choices import SLIDE_BACKENDS
from breastpath.cli.options import checkpoint_option

log = logging.getLogger("breastpath.slide")


@click.command("slide")
@click.argument("slide", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for heatmap.png, tissue.png, tiles.csv and slide.json.",
)
@checkpoint_option
@click.option(
    "--tile-size",
    type=click.IntRange(min=8),
    default=None,
    help="Tile side given to the model [default: the model's input size].",
)
@click.option("--level", type=click.IntRange(min=0), default=None, help="Pyramid level to tile.")
@click.option(
    "--mpp",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Tile at this many microns per pixel [default: the model's training scale (4.0 for "
    "the IDC models); level 0 for a model that states none].",
)
@click.option(
    "--slide-mpp",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="The slide's level-0 microns per pixel, when the file does not record it (about 0.25 "
    "at 40x, 0.5 at 20x); overrides the file's value.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Tile threshold for the slide score [default: the model's].",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="k of the headline slide score: mean probability of the k highest tiles.",
)
@click.option(
    "--min-tissue",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="Score tiles with at least this share of tissue.",
)
@click.option(
    "--tissue-method",
    type=click.Choice(["saturation", "od"]),
    default="saturation",
    show_default=True,
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Threads reading tiles.",
)
@click.option(
    "--backend",
    type=click.Choice(SLIDE_BACKENDS),
    default="auto",
    show_default=True,
    help="Slide reader; auto tries the one made for the format, then falls back.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(
    slide,
    out_dir,
    checkpoint,
    tile_size,
    level,
    mpp,
    slide_mpp,
    threshold,
    top_k,
    min_tissue,
    tissue_method,
    batch_size,
    workers,
    backend,
    no_progress,
) -> None:
    """Score the tissue of a whole-slide image SLIDE tile by tile and draw a heatmap.

    SLIDE is a slide file (SVS, NDPI, MRXS, SCN, BIF, VMS, OME-TIFF, pyramidal TIFF, ...), a
    DICOM-WSI folder, or the .dcm files of one DICOM series. Only tissue tiles are scored:
    glass, lumens and non-H&E tiles are skipped, with the reason in tiles.csv. The slide score
    is the top-k mean of the scored tiles (the headline); the mean probability of tiles at or
    above the threshold is reported too.
    """
    from tqdm.auto import tqdm

    from breastpath.errors import SlideError
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.analyze import analyze_slide

    if level is not None and mpp is not None:
        raise SlideError("give --level or --mpp, not both")
    predictor = Predictor.from_checkpoint(checkpoint, batch_size=batch_size)
    bars = []

    def on_grid(grid) -> None:  # the bar appears once the slide is known to be good
        bars.append(tqdm(total=len(grid), unit="tiles", desc="scoring", disable=no_progress))

    def advance(n: int) -> None:
        bars[0].update(n)
        if bars[0].n >= bars[0].total:  # stop the clock before the outputs are written
            bars[0].close()

    try:
        result = analyze_slide(
            slide[0] if len(slide) == 1 else list(slide),
            predictor,
            out_dir=out_dir,
            tile_size=tile_size,
            level=level,
            mpp=mpp,
            slide_mpp=slide_mpp,
            threshold=threshold,
            top_k=top_k,
            min_tissue=min_tissue,
            tissue_method=tissue_method,
            batch_size=batch_size,
            workers=workers,
            backend=backend,
            on_grid=on_grid,
            progress=advance,
        )
    finally:
        for bar in bars:
            bar.close()
    for note in result.notes:
        log.warning("%s", note)
        click.echo(f"note: {note}")
    _report(result, out_dir)


def _report(result, out_dir) -> None:
    from breastpath.errors import SlideError

    s, tiling, timing = result.score, result.info["tiling"], result.info["timing"]
    backend = result.info["slide"]["backend"]
    resolution = f"{tiling['mpp']:.3g} um/px" if tiling["mpp"] else "mpp unknown"
    skipped = ", ".join(f"{n} {r}" for r, n in tiling["tiles_skipped"].items() if n) or "none"
    speed = f"; {timing['tiles_per_s']} tiles/s" if timing["tiles_per_s"] else ""
    click.echo(
        f"{backend}: {tiling['tiles_scored']} of {tiling['tiles_read']} tissue tiles scored at "
        f"level {tiling['level']} ({resolution}); skipped: {skipped}{speed}"
    )
    names = ", ".join(p.name for p in result.paths.values())
    if s is None:
        raise SlideError(
            f"{result.info['slide']['path']}: not scored, no tissue tile passed the tile "
            f"checks ({skipped}); wrote {names} to {out_dir}"
        )
    mean_above = "none" if s.mean_above_threshold is None else f"{s.mean_above_threshold:.4f}"
    click.echo(
        f"slide score {s.top_k_mean:.4f} (top-{s.top_k} mean, the headline; threshold "
        f"{s.threshold:.4f}, {'positive' if s.positive else 'negative'}); "
        f"mean above threshold {mean_above}; "
        f"{s.fraction_above_threshold:.1%} of tiles at or above the threshold"
    )
    click.echo(f"wrote {names} to {out_dir}")
