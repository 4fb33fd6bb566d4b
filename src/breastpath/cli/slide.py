"""``breastpath slide SLIDE... --out DIR``: one slide, or a cohort of slides.

One slide (a slide file, a DICOM folder, or the ``.dcm`` files of one series) writes its outputs
into ``--out`` as :func:`~breastpath.slide.analyze.analyze_slide` does. Anything else (a folder
of slides, a glob, a CSV manifest, several slides, or any run under ``torchrun``) is a cohort:
``OUT/<slide>/...`` per slide and ``OUT/cohort.csv`` (:mod:`breastpath.slide.cohort`).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from breastpath.choices import SLIDE_BACKENDS
from breastpath.cli.options import FiniteFloat, checkpoint_option, runtime_option
from breastpath.inference.tiles import MIN_TILE_TISSUE
from breastpath.slide.cohort import Progress
from breastpath.slide.preflight import MAX_TILES

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
    type=FiniteFloat(min=0.0, min_open=True),
    default=None,
    help="Tile at this many microns per pixel [default: the model's training scale (4.0 for "
    "the IDC models); level 0 for a model that states none].",
)
@click.option(
    "--slide-mpp",
    type=FiniteFloat(min=0.0, min_open=True),
    default=None,
    help="The slide's level-0 microns per pixel, when the file does not record it (about 0.25 "
    "at 40x, 0.5 at 20x); overrides the file's value.",
)
@click.option(
    "--threshold",
    type=FiniteFloat(0.0, 1.0),
    default=None,
    help="Tile threshold of the verdict rule [default: the model's].",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="k of the top-k mean reported beside the verdict (descriptive; the verdict is the "
    "model's verdict rule).",
)
@click.option(
    "--min-tissue",
    type=FiniteFloat(0.0, 1.0),
    default=MIN_TILE_TISSUE,
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
@click.option(
    "--max-tiles",
    type=click.IntRange(min=1),
    default=MAX_TILES,
    show_default=True,
    help="Refuse a slide whose tile grid (rows x cols at the chosen level) is larger.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where the model runs: auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK).",
)
@runtime_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--quiet", "-q", is_flag=True, help="Cohorts: no bar, no per-slide lines.")
def command(
    slide,
    out_dir,
    checkpoint,
    quiet,
    device,
    runtime,
    max_tiles,
    **options,
) -> None:
    """Score the tissue of whole-slide images tile by tile and draw heatmaps.

    SLIDE is a slide file (SVS, NDPI, MRXS, SCN, BIF, VMS, OME-TIFF, pyramidal TIFF, ...), a
    DICOM-WSI folder, or the .dcm files of one DICOM series: its outputs go to OUT. Only tissue
    tiles are scored: glass, lumens and non-H&E tiles are skipped, with the reason in tiles.csv.
    The verdict and the extent (share of assessed tiles called cancer) come from the model's one
    verdict rule, printed beside them.

    A cohort, given as a folder of slides (searched recursively), a glob ('slides/*.svs'), a CSV
    manifest (columns path and optional patient, label, mpp) or several slides, writes
    OUT/<slide>/ per slide and OUT/cohort.csv (one row per slide: status, verdict, extent,
    tiles, timings). A rerun skips the slides already done; a slide that fails is a row, not
    the end. Under torchrun the slides are shared among the processes.
    """
    from breastpath.errors import SlideError
    from breastpath.slide import shard
    from breastpath.slide.cohort import CohortOptions

    if options["level"] is not None and options["mpp"] is not None:
        raise SlideError("give --level or --mpp, not both")
    no_progress = options.pop("no_progress") or quiet
    settings = CohortOptions(max_tiles=max_tiles, **options)
    rank = shard.env_info()
    model = {"checkpoint": checkpoint, "device": device, "runtime": runtime}
    if not rank.enabled and is_single_slide(slide):
        _one_slide(slide, out_dir, model, settings, no_progress=no_progress)
    else:
        _cohort(slide, out_dir, model, settings, rank=rank, quiet=quiet, no_progress=no_progress)


def is_single_slide(inputs: tuple[str, ...]) -> bool:
    """Whether the inputs are one slide (written into OUT itself) rather than a cohort."""
    from breastpath.slide.sources import is_dicom_folder, is_glob, is_manifest

    if inputs and all(str(p).lower().endswith(".dcm") for p in inputs):
        return True
    if len(inputs) != 1:
        return False
    text, path = str(inputs[0]), Path(inputs[0])
    if is_manifest(text) and path.is_file():
        return False
    if path.is_dir():
        return is_dicom_folder(path)
    return not is_glob(text)


def _predictor(model: dict[str, Any], settings: Any, *, device: str | None = None) -> Any:
    from breastpath.inference.predictor import Predictor

    return Predictor.from_checkpoint(
        model["checkpoint"],
        batch_size=settings.batch_size,
        device=device or model["device"],
        runtime=model["runtime"],
    )


def _one_slide(slide, out_dir, model, settings, *, no_progress: bool) -> None:
    from tqdm.auto import tqdm

    from breastpath.slide.analyze import analyze_slide
    from breastpath.slide.preflight import preflight

    source = slide[0] if len(slide) == 1 else list(slide)
    predictor = _predictor(model, settings)
    common = {
        "backend": settings.backend, "slide_mpp": settings.slide_mpp,
        "tile_size": settings.tile_size, "level": settings.level, "mpp": settings.mpp,
    }  # fmt: skip
    preflight(source, predictor, max_tiles=settings.max_tiles, **common)
    bars = []

    def on_grid(grid) -> None:  # the bar appears once the slide is known to be good
        bars.append(tqdm(total=len(grid), unit="tiles", desc="scoring", disable=no_progress))

    def advance(n: int) -> None:
        bars[0].update(n)
        if bars[0].n >= bars[0].total:  # stop the clock before the outputs are written
            bars[0].close()

    try:
        result = analyze_slide(
            source, predictor, out_dir=out_dir, threshold=settings.threshold,
            top_k=settings.top_k, min_tissue=settings.min_tissue,
            tissue_method=settings.tissue_method, batch_size=settings.batch_size,
            workers=settings.workers, on_grid=on_grid, progress=advance, **common,
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    for note in result.notes:
        click.echo(f"note: {note}")
    _report(result, out_dir)


def _cohort(slide, out_dir, model, settings, *, rank, quiet, no_progress) -> None:
    from breastpath.errors import SlideError
    from breastpath.slide import shard
    from breastpath.slide.cohort import run_cohort
    from breastpath.slide.cohort_table import status_counts
    from breastpath.slide.sources import discover

    sources = discover(slide)
    if not sources:
        raise SlideError(f"no slides found in {', '.join(slide)}")
    shard.start(rank)
    try:
        predictor = _predictor(model, settings, device=shard.device_for(model["device"], rank))
        bar = CohortBar(rank=rank, bar=not no_progress and rank.is_main, lines=not quiet)
        rows = run_cohort(
            sources, predictor, out_dir=out_dir, options=settings, progress=bar, rank=rank
        )
    finally:
        shard.stop(rank)
    if not rank.is_main:
        return
    counts = status_counts(rows)
    if not quiet:
        done = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        click.echo(f"cohort of {len(rows)} slides: {done}; wrote {Path(out_dir) / 'cohort.csv'}")
    if counts["error"] == len(rows):
        raise SlideError(
            f"none of the {len(rows)} slides could be scored (see {out_dir}/cohort.csv)"
        )


class CohortBar(Progress):
    """One tqdm bar over the slides (tiles/s and an ETA) and a line per slide."""

    def __init__(self, *, rank: Any, bar: bool, lines: bool) -> None:
        self.rank, self.show_bar, self.lines = rank, bar, lines
        self.prefix = f"rank {rank.rank}: " if rank.enabled else ""
        self.count, self.total, self.tile_count = 0, 0, 0
        self.bar: Any = None

    def begin(self, *, total: int, done: int) -> None:
        from tqdm.auto import tqdm

        self.total, self.started = total, time.perf_counter()
        if self.lines and done:
            self._echo(f"{done} slides already done (kept; delete their done.json to redo them)")
        self.bar = tqdm(total=total, unit="slide", desc="slides", disable=not self.show_bar)

    def tiles(self, n: int) -> None:
        self.tile_count += n
        rate = self.tile_count / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} tiles/s", refresh=False)

    def finished(self, source, row: dict[str, Any]) -> None:
        self.count += 1
        self.bar.update(1)
        if self.lines:
            self._echo(f"[{self.count}/{self.total}] {source.name}: {slide_line(row)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _echo(self, text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.prefix + text, file=sys.stdout)


def slide_line(row: dict[str, Any]) -> str:
    """The log line of a finished slide."""
    status = str(row.get("status"))
    took = f" in {row['total_s']:.1f} s" if row.get("total_s") is not None else ""
    if status != "scored":
        return status + took
    extent = row.get("extent")
    share = "" if extent is None else f", extent {float(extent):.1%}"
    return (
        f"{row.get('verdict')}{share} ({row.get('tiles_scored')} of {row.get('tiles_read')} "
        f"tiles scored){took}"
    )


def _read_at(info) -> str:
    """Where tiles were read and what they became: "read 400 px at level 0 (0.499 um/px),
    resized to 50 px (4 um/px)"."""
    tiling, slide = info["tiling"], info["slide"]
    level = tiling["level"]
    downsample = slide["levels"][level][2] if level < len(slide["levels"]) else 1.0
    level_mpp = None if slide.get("mpp") is None else slide["mpp"] * downsample
    at = f"level {level} ({level_mpp:.3g} um/px)" if level_mpp else f"level {level} (mpp unknown)"
    text = f"read {tiling['read_size']} px at {at}"
    if tiling["read_size"] != tiling["tile_size"]:
        scale = f" ({tiling['mpp']:.3g} um/px)" if tiling["mpp"] else ""
        text += f", resized to {tiling['tile_size']} px{scale}"
    return text


def _report(result, out_dir) -> None:
    from breastpath.errors import SlideError

    verdict, tiling, timing = result.verdict, result.info["tiling"], result.info["timing"]
    backend = result.info["slide"]["backend"]
    skipped = ", ".join(f"{n} {r}" for r, n in tiling["tiles_skipped"].items() if n) or "none"
    speed = f"; {timing['tiles_per_s']} tiles/s" if timing["tiles_per_s"] else ""
    click.echo(
        f"{backend}: {tiling['tiles_scored']} of {tiling['tiles_read']} tissue tiles scored, "
        f"{_read_at(result.info)}; skipped: {skipped}{speed}"
    )
    names = ", ".join(p.name for p in result.paths.values())
    if verdict.positive is None:
        raise SlideError(
            f"{result.info['slide']['path']}: not scored, no tissue tile passed the tile "
            f"checks ({skipped}); wrote {names} to {out_dir}"
        )
    stats = result.info["stats"]
    click.echo(f"verdict: {verdict.text}")
    click.echo(
        f"tiles: mean {stats['mean']:.4f}, max {stats['max']:.4f}, top-{stats['top_k']} mean "
        f"{stats['top_k_mean']:.4f}"
    )
    click.echo(f"wrote {names} to {out_dir}")
