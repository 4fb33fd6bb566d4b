"""``breastpath predict [--checkpoint CHECKPOINT] PATH... [--out preds.csv]``.

Under ``torchrun --nproc-per-node N -m breastpath predict ...`` each process scores a shard of the
files and the first writes the merged CSV (:mod:`breastpath.inference.sharded`).
"""

from __future__ import annotations

import click

from breastpath.cli.options import (
    optional_checkpoint_option,
    runtime_option,
    split_legacy_checkpoint,
)


@click.command("predict")
@optional_checkpoint_option
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write a CSV here instead of stdout.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per forward pass [default: 64 with torch, 256 with onnxruntime].",
)
@click.option(
    "--compile",
    "use_compile",
    is_flag=True,
    help="torch.compile the model first (about 30 s once; faster for large folders).",
)
@runtime_option
@click.option(
    "--allow-non-tissue",
    is_flag=True,
    help="RESEARCH ONLY: label images the quality gate flags as background or not H&E "
    "(their rows say 'forced'). By default they get no label (assessed = 0).",
)
@click.option(
    "--magnification",
    type=click.Choice(["40", "100", "200", "400"]),
    default=None,
    help="The images' magnification (X) [default: each BreakHis file name's]; an image at "
    "another magnification than the model's training images gets an error row.",
)
@click.option(
    "--allow-magnification-mismatch",
    is_flag=True,
    help="RESEARCH ONLY: score images at another magnification than the model's.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(
    checkpoint,
    paths,
    out_file,
    batch_size,
    use_compile,
    runtime,
    allow_non_tissue,
    magnification,
    allow_magnification_mismatch,
    no_progress,
) -> None:
    """Score image files or folders with --checkpoint (a run, a file, or `default`).

    The checkpoint as a first argument (`predict RUN PATH...`) is deprecated: use --checkpoint.

    Every image first passes the input-quality gate: blank glass, black frames and images that
    are not H&E get no label (columns assessed, tissue_fraction, looks_like_he, reason). An
    image larger than the model's input also gets its tiles' verdict (tile_verdict,
    tile_extent, tiles_assessed, tiles). Launched by torchrun, the processes share the files
    and the first writes the CSV.
    """
    from tqdm.auto import tqdm

    from breastpath.errors import InvalidImageError
    from breastpath.imaging import gather_image_files
    from breastpath.inference import device as distributed
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.sharded import score_files_sharded, summarise_rows

    checkpoint, paths = split_legacy_checkpoint("predict", checkpoint, paths)
    files = gather_image_files(paths)
    info, device = distributed.env_info(), "auto"
    if info.enabled:  # torchrun: one process per shard of the files
        info, where = distributed.setup("auto")
        device = str(where)
    quiet = no_progress or not info.is_main
    bar = tqdm(  # disable=None: a bar on a terminal only, never in a pipe or a log
        total=len(files), unit="img", desc="predicting", disable=True if quiet else None
    )
    try:
        predictor = Predictor.from_checkpoint(
            checkpoint, device=device, batch_size=batch_size, compile=use_compile, runtime=runtime
        )
        rows = score_files_sharded(
            predictor,
            files,
            info=info,
            allow_non_tissue=allow_non_tissue,
            progress=bar.update,
            magnification=magnification,
            allow_magnification=allow_magnification_mismatch,
        )
    finally:
        bar.close()
        distributed.teardown(info)
    summary = summarise_rows(rows)
    if info.is_main:
        _write(rows, out_file)
    if summary["errors"] and summary["errors"] == len(files):
        raise InvalidImageError(
            f"none of the {len(files)} file(s) could be read (see the error column)"
        )
    if info.is_main:
        _report(summary, allow_non_tissue=allow_non_tissue)


def _write(rows, out_file) -> None:
    import csv
    import io
    import sys

    from breastpath.inference.sharded import HEADER
    from breastpath.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    if out_file:
        atomic_write_text(out_file, buffer.getvalue())
        click.echo(f"wrote {len(rows)} rows to {out_file}")
    else:
        sys.stdout.write(buffer.getvalue())


def _report(summary, *, allow_non_tissue: bool) -> None:
    """The closing lines (on stderr, so a CSV on stdout stays clean)."""
    n = summary["files"]
    if summary["errors"]:
        click.echo(
            f"{summary['errors']} of {n} file(s) could not be scored (see the error column)",
            err=True,
        )
    flagged = sum(summary["not_assessed"].values())
    if flagged:
        what = "labelled anyway (--allow-non-tissue)" if allow_non_tissue else "not assessed"
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(summary["not_assessed"].items()))
        click.echo(
            f"{flagged} of {n} image(s) failed the quality check (not H&E tissue) and were "
            f"{what}; see the reason column ({reasons})",
            err=True,
        )
    click.echo(
        f"summary: {n} file(s); {summary['assessed']} scored, {summary['above_threshold']} at "
        f"or above the threshold; {flagged} not assessed; {summary['errors']} not scored (error "
        "column)",
        err=True,
    )
