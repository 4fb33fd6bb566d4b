"""``breastpath prepare SOURCE... --out DIR``."""

from __future__ import annotations

import click

from breastpath.choices import INPUT_FITS
from breastpath.cli.options import FiniteFloat
from breastpath.config import STAIN_METHODS
from breastpath.data.index import DATASETS, MAGNIFICATIONS, TASKS

#: A share of the images: finite, in [0, 1) (``nan`` and ``inf`` are usage errors).
_FRACTION = FiniteFloat(min=0, max=1, max_open=True)


@click.command("prepare")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write the cache, splits.csv and summary.json into.",
)
@click.option("--dataset", type=click.Choice(DATASETS), default="auto", show_default=True)
@click.option("--task", type=click.Choice(TASKS), default="binary", show_default=True)
@click.option(
    "--magnification",
    type=click.Choice(MAGNIFICATIONS),
    default="all",
    show_default=True,
    help="BreakHis magnification to keep.",
)
@click.option(
    "--image-size",
    type=int,
    default=0,
    help="Side of the cached images [default: 50 for IDC, 224 otherwise].",
)
@click.option(
    "--input-fit",
    type=click.Choice(INPUT_FITS),
    default="crop",
    show_default=True,
    help="How a larger image of another shape is brought to that side: crop (shorter side "
    "resized, centre crop) or stretch (the whole image resized, aspect not kept; how the "
    "BreakHis tiles were made from their fields). A model scores the cache only with its own "
    "fit.",
)
@click.option("--test-frac", type=_FRACTION, default=0.2, show_default=True)
@click.option(
    "--val-frac",
    type=_FRACTION,
    default=0.1,
    show_default=True,
    help="Share of the non-test images for validation.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--stain",
    type=click.Choice(STAIN_METHODS),
    default="none",
    show_default=True,
    help="Stain-normalize the cache to a target fitted on training images only; checkpoints "
    "trained on it carry the target and apply it to every new image.",
)
@click.option(
    "--stain-sample",
    type=int,
    default=256,
    show_default=True,
    help="Training images (seeded sample) the stain target is fitted on.",
)
@click.option(
    "--stain-target",
    default="",
    help="Instead of --stain: normalize every image to this fixed target (a JSON file written by "
    "`breastpath stain fit` on other images); the cache can then be cut into cross-validation "
    "folds.",
)
@click.option("--workers", type=int, default=0, help="Decoding threads [default: CPU count].")
def command(
    sources,
    out_dir,
    dataset,
    task,
    magnification,
    image_size,
    input_fit,
    test_frac,
    val_frac,
    seed,
    stain,
    stain_sample,
    stain_target,
    workers,
) -> None:
    """Scan SOURCE (folder or Kaggle zip), split by patient and decode into a packed cache."""
    from tqdm.auto import tqdm

    from breastpath.config import DataConfig
    from breastpath.data.prepare import format_summary, prepare

    config = DataConfig(
        dataset=dataset,
        task=task,
        magnification=magnification,
        image_size=image_size,
        input_fit=input_fit,
        test_frac=test_frac,
        val_frac=val_frac,
        seed=seed,
        stain=stain,
        stain_sample=stain_sample,
        stain_target=stain_target,
    )
    config.validate()
    bars = []

    def scanned(total: int) -> None:  # the bar appears once the source is known to be good
        bars.append(tqdm(total=total, unit="img", desc="decoding", dynamic_ncols=True))
        if stain != "none" or stain_target:
            what = stain if stain != "none" else "fixed target"
            bars.append(tqdm(total=total, unit="img", desc=f"stain ({what})", dynamic_ncols=True))

    try:
        summary = prepare(
            sources,
            out_dir,
            config=config,
            workers=workers or None,
            progress=lambda n: bars[0].update(n),
            on_scanned=scanned,
            on_stain=lambda n: bars[-1].update(n),
        )
    finally:
        for bar in bars:
            bar.close()
    click.echo(format_summary(summary))
    click.echo(f"wrote {out_dir}")
