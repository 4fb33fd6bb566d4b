"""``breastpath predict CHECKPOINT PATH... [--out preds.csv]``."""

from __future__ import annotations

import click


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
@click.option(
    "--runtime",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="onnx runs the model with onnxruntime (needs the `onnx` extra).",
)
def command(checkpoint, paths, out_file, batch_size, use_compile, runtime) -> None:
    """Score image files or folders with CHECKPOINT (a run, a file, or `default`)."""
    import csv
    import io
    import sys
    from pathlib import Path

    from breastpath.errors import DatasetLayoutError, InvalidImageError
    from breastpath.imaging import is_image_file
    from breastpath.io import atomic_write_text
    from breastpath.serve.predictor import Predictor

    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))
            if not found:
                raise DatasetLayoutError(f"{path}: holds no image files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetLayoutError(f"{path}: no such file or folder")
    predictor = Predictor.from_checkpoint(
        checkpoint, batch_size=batch_size, compile=use_compile, runtime=runtime
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "probability", "label", "threshold", "error"])
    errors = 0
    for start in range(0, len(files), 1024):
        chunk = files[start : start + 1024]
        for path, result in zip(chunk, predictor.predict_sources(chunk), strict=True):
            if isinstance(result, Exception):
                errors += 1
                writer.writerow([path, "", "", predictor.threshold, str(result)])
            else:
                writer.writerow(
                    [path, f"{result.probability:.6f}", result.label, predictor.threshold, ""]
                )
    if out_file:
        atomic_write_text(out_file, buffer.getvalue())
        click.echo(f"wrote {len(files)} rows to {out_file}")
    else:
        sys.stdout.write(buffer.getvalue())
    if errors and errors == len(files):
        raise InvalidImageError(
            f"none of the {len(files)} file(s) could be read (see the error column)"
        )
    if errors:
        click.echo(
            f"{errors} of {len(files)} file(s) could not be read (see the error column)", err=True
        )
