"""``breastpath predict CHECKPOINT PATH... [--out preds.csv]``.

Under ``torchrun --nproc-per-node N -m breastpath predict ...`` each process scores a shard of the
files and the first writes the merged CSV (:mod:`breastpath.inference.sharded`).
"""

from __future__ import annotations

import click

from breastpath.cli.options import runtime_option


@click.command("predict")
@click.argument("checkpoint")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write a CSV here instead of stdout.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--compile",
    "use_compile",
    is_flag=True,
    help="torch.compile the model first (about 30 s once; faster for large folders).",
)
@runtime_option
def command(checkpoint, paths, out_file, batch_size, use_compile, runtime) -> None:
    """Score image files or folders with CHECKPOINT (a run, a file, or `default`).

    Launched by torchrun, the processes share the files and the first writes the CSV.
    """
    import csv
    import io
    import sys

    from breastpath.errors import InvalidImageError
    from breastpath.imaging import gather_image_files
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.sharded import HEADER, score_files_sharded
    from breastpath.io import atomic_write_text
    from breastpath.train import distributed

    files = gather_image_files(paths)
    info, device = distributed.env_info(), "auto"
    if info.enabled:  # torchrun: one process per shard of the files
        info, where = distributed.setup("auto")
        device = str(where)
    try:
        predictor = Predictor.from_checkpoint(
            checkpoint, device=device, batch_size=batch_size, compile=use_compile, runtime=runtime
        )
        rows = score_files_sharded(predictor, files, info=info)
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
