"""``breastpath serve [--checkpoint default|PATH] [--host 127.0.0.1] [--port 8000]
[--runtime torch|onnx] [limits]``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from breastpath.cli.options import checkpoint_option, runtime_option

_STAIN_METHODS = ("macenko", "reinhard", "vahadane")


def default_threads() -> int:
    """Model threads: all cores but one (left to the event loop), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


def _fit_stain(method: str, targets: tuple[Path, ...]):
    from breastpath.imaging import decode_image
    from breastpath.serve.explain import fit_stain

    images = [decode_image(path) for path in targets]
    try:
        return fit_stain(method, images)
    except ImportError as exc:
        raise click.ClickException(f"stain normalization is not available ({exc})") from None


@click.command("serve")
@checkpoint_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--max-upload-mb", type=float, default=20.0, show_default=True, help="Largest image file."
)
@click.option(
    "--max-batch-mb",
    type=float,
    default=100.0,
    show_default=True,
    help="Largest batch request, and most a zip may expand to.",
)
@click.option(
    "--max-megapixels",
    type=float,
    default=None,
    help="Largest image (decompression-bomb guard) [default: 8192x8192 pixels].",
)
@click.option(
    "--max-files",
    type=int,
    default=64,
    show_default=True,
    help="Most images per batch (files or zip members).",
)
@click.option(
    "--max-tiles",
    type=int,
    default=1024,
    show_default=True,
    help="Most input-size tiles per image for the tile map.",
)
@click.option(
    "--batch-size",
    type=int,
    default=64,
    show_default=True,
    help="Most images per model call (concurrent requests are batched).",
)
@click.option(
    "--max-pending",
    type=int,
    default=256,
    show_default=True,
    help="Most requests waiting for the model; more get 503.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds a request may wait for the model; then 504.",
)
@click.option(
    "--threads", type=int, default=None, help="Model threads [default: CPU cores - 1, at least 1]."
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@runtime_option
@click.option(
    "--stain-target",
    "stain_targets",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Fit the stain-normalized view on this image (repeat for several). "
    "Default: the checkpoint's normalizer, if it has one.",
)
@click.option(
    "--stain-method", type=click.Choice(_STAIN_METHODS), default="macenko", show_default=True
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def command(
    checkpoint,
    host,
    port,
    max_upload_mb,
    max_batch_mb,
    max_megapixels,
    max_files,
    max_tiles,
    batch_size,
    max_pending,
    timeout,
    threads,
    device,
    runtime,
    stain_targets,
    stain_method,
    access_log,
) -> None:
    """Serve the upload page and the HTTP API on HOST:PORT."""
    import torch
    import uvicorn

    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import ServeLimits, create_app

    torch.set_num_threads(threads or default_threads())
    pixels = int(max_megapixels * 1e6) if max_megapixels else ServeLimits().max_pixels
    limits = ServeLimits(
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_batch_bytes=int(max_batch_mb * 2**20),
        max_pixels=pixels,
        max_files=max_files,
        max_tiles=max_tiles,
        max_batch_size=batch_size,
        max_pending=max_pending,
        timeout_s=timeout,
    )
    predictor = Predictor.from_checkpoint(
        checkpoint, device=device, batch_size=batch_size, runtime=runtime
    )
    stain = _fit_stain(stain_method, stain_targets) if stain_targets else None
    app = create_app(predictor, limits=limits, stain=stain)
    click.echo(
        f"serving {predictor.name} ({predictor.runtime}) on http://{host}:{port} (Ctrl+C to stop)"
    )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
