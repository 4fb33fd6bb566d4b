"""``breastpath serve [--checkpoint default] [--host 127.0.0.1] [--port 8000]``."""

from __future__ import annotations

import click


@click.command("serve")
@click.option(
    "--checkpoint",
    default="default",
    show_default=True,
    help="Bundled name, run folder or checkpoint file.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True)
def command(checkpoint, host, port, max_upload_mb) -> None:
    """Serve the upload page and the HTTP API on HOST:PORT."""
    import uvicorn

    from breastpath.serve.app import ServeLimits, create_app
    from breastpath.serve.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    app = create_app(predictor, limits=ServeLimits(max_upload_bytes=int(max_upload_mb * 2**20)))
    click.echo(f"serving {predictor.name} on http://{host}:{port} (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="info")
