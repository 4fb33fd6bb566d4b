"""``breastpath slide SLIDE --out DIR [--level L | --mpp X] [--threshold T]``."""

from __future__ import annotations

import click

from breastpath.cli.options import checkpoint_option


@click.command("slide")
@click.argument("slide", type=click.Path())
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
    help="Tile at this many microns per pixel [default: 4.0 for IDC models when the slide "
    "records its mpp, else level 0].",
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
    type=click.Choice(["auto", "tifffile", "openslide", "tiffslide"]),
    default="auto",
    show_default=True,
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(
    slide,
    out_dir,
    checkpoint,
    tile_size,
    level,
    mpp,
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

    Reads pyramidal TIFF / OME-TIFF / SVS / NDPI with tifffile, and other formats with OpenSlide
    or tiffslide when installed. The slide score is the top-k mean (the headline); the mean
    probability of tiles at or above the threshold is reported too.
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
            slide,
            predictor,
            out_dir=out_dir,
            tile_size=tile_size,
            level=level,
            mpp=mpp,
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
    s, tiling, timing = result.score, result.info["tiling"], result.info["timing"]
    mean_above = "none" if s.mean_above_threshold is None else f"{s.mean_above_threshold:.4f}"
    resolution = f"{tiling['mpp']:.3g} um/px" if tiling["mpp"] else "mpp unknown"
    click.echo(
        f"{s.tiles} tissue tiles at level {tiling['level']} ({resolution}), "
        f"{timing['tiles_per_s']} tiles/s\n"
        f"slide score {s.top_k_mean:.4f} (top-{s.top_k} mean, the headline; threshold "
        f"{s.threshold:.4f}, {'positive' if s.positive else 'negative'}); "
        f"mean above threshold {mean_above}; "
        f"{s.fraction_above_threshold:.1%} of tiles at or above the threshold"
    )
    click.echo(f"wrote {', '.join(p.name for p in result.paths.values())} to {out_dir}")
