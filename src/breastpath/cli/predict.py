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
def command(
    checkpoint, paths, out_file, batch_size, use_compile, runtime, allow_non_tissue
) -> None:
    """Score image files or folders with --checkpoint (a run, a file, or `default`).

    The checkpoint as a first argument (`predict RUN PATH...`) is deprecated: use --checkpoint.

    Every image first passes the input-quality gate: blank glass, black frames and images that
    are not H&E get no label (columns assessed, tissue_fraction, looks_like_he, reason).
    Launched by torchrun, the processes share the files and the first writes the CSV.
    """
    import csv
    import io
    import sys

    from breastpath.errors import InvalidImageError
    from breastpath.imaging import gather_image_files
    from breastpath.inference import device as distributed
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.sharded import HEADER, score_files_sharded
    from breastpath.io import atomic_write_text

    checkpoint, paths = split_legacy_checkpoint("predict", checkpoint, paths)
    files = gather_image_files(paths)
    info, device = distributed.env_info(), "auto"
    if info.enabled:  # torchrun: one process per shard of the files
        info, where = distributed.setup("auto")
        device = str(where)
    try:
        predictor = Predictor.from_checkpoint(
            checkpoint, device=device, batch_size=batch_size, compile=use_compile, runtime=runtime
        )
        rows = score_files_sharded(predictor, files, info=info, allow_non_tissue=allow_non_tissue)
    finally:
        distributed.teardown(info)
    errors = sum(1 for row in rows if row[-1])
    if info.is_main:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
        if out_file:
            atomic_write_text(out_file, buffer.getvalue())
            click.echo(f"wrote {len(files)} rows to {out_file}")
        else:
            sys.stdout.write(buffer.getvalue())
    if errors and errors == len(files):
        raise InvalidImageError(
            f"none of the {len(files)} file(s) could be read (see the error column)"
        )
    if errors and info.is_main:
        click.echo(
            f"{errors} of {len(files)} file(s) could not be read (see the error column)", err=True
        )
    flagged = sum(1 for row in rows if row[3] == 0)
    if flagged and info.is_main:
        what = "labelled anyway (--allow-non-tissue)" if allow_non_tissue else "not assessed"
        click.echo(
            f"{flagged} of {len(files)} image(s) failed the quality check (not H&E tissue) and "
            f"were {what}; see the reason column",
            err=True,
        )
