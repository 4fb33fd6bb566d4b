"""``breastpath serve [--checkpoint default|PATH] [--host 127.0.0.1] [--port 8000]
[--runtime torch|onnx|int8] [limits]``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from breastpath.choices import STAIN_METHODS
from breastpath.cli.options import FiniteFloat, checkpoint_option, runtime_option

#: the normalizers a start-up stain target can be fitted with (every method but "none")
_STAIN_METHODS = tuple(m for m in STAIN_METHODS if m != "none")
#: How often the server's threads hand over the interpreter lock (Python's default: 5 ms).
SWITCH_INTERVAL_S = 0.001


def default_threads() -> int:
    """Model threads: all cores but one (left to the event loop), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


def _fit_stain(method: str, targets: tuple[Path, ...]):
    from breastpath.imaging import decode_image
    from breastpath.serve.explain import fit_stain

    return fit_stain(method, [decode_image(path) for path in targets])


#: Sizes in MiB (up to 64 GiB), pixel counts in millions (up to 10 gigapixels) and durations in
#: seconds (up to a day): finite, positive and bounded, so ``nan``, ``inf`` and absurd values are
#: usage errors, not tracebacks or a server that never times out.
_MEBIBYTES = FiniteFloat(min=0, min_open=True, max=65536)
_MEGAPIXELS = FiniteFloat(min=0, min_open=True, max=10_000)
_SECONDS = FiniteFloat(min=0, min_open=True, max=86_400)
_COUNT = click.IntRange(min=1)


def _limit_options(command):
    """The request and connection limits (see :class:`breastpath.serve.limits.ServeLimits`)."""
    options = [
        ("--max-upload-mb", _MEBIBYTES, 20.0, "Largest image file."),
        (
            "--max-batch-mb",
            _MEBIBYTES,
            100.0,
            "Largest batch request, and most all images of one request may expand to "
            "(files plus zip members, all zips together).",
        ),
        (
            "--max-megapixels",
            _MEGAPIXELS,
            None,
            "Largest image (decompression-bomb guard) [default: 8192x8192 pixels].",
        ),
        (
            "--max-request-megapixels",
            _MEGAPIXELS,
            None,
            "Most pixels decoded per request, all images together [default: 4 x 8192x8192].",
        ),
        ("--max-files", _COUNT, 64, "Most images per batch (files or zip members)."),
        ("--max-tiles", _COUNT, 1024, "Most input-size tiles per image for the tile map."),
        ("--max-request-tiles", _COUNT, 8192, "Most tiles scored per request."),
        ("--batch-size", _COUNT, 64, "Most images per model call (shared fairly by requests)."),
        ("--max-pending", _COUNT, 256, "Most model jobs waiting; more get 503."),
        ("--timeout", _SECONDS, 30.0, "Seconds a model job may wait; then 504."),
        ("--header-timeout", _SECONDS, 10.0, "Seconds a client may take to send its headers."),
        ("--body-timeout", _SECONDS, 120.0, "Seconds a client may take to send its body; 408."),
        ("--keep-alive", _SECONDS, 5.0, "Seconds an idle keep-alive connection stays open."),
        ("--max-connections", _COUNT, 512, "Most connections at once; more get 503."),
        ("--max-explain", _COUNT, 1, "Most Grad-CAM explanations computed at once."),
        (
            "--max-explain-pending",
            click.IntRange(min=0),
            2,
            "Most explanations waiting for a turn; more get 503 with Retry-After.",
        ),
        (
            "--max-explain-tiles",
            _COUNT,
            256,
            "Most tiles one explanation covers; a larger image is explained on the model input.",
        ),
    ]
    for name, kind, default, text in reversed(options):
        command = click.option(
            name, type=kind, default=default, show_default=default is not None, help=text
        )(command)
    return command


def _limits(options: dict):
    from breastpath.serve.limits import ServeLimits

    base = ServeLimits()
    pixels = options["max_megapixels"]
    request_pixels = options["max_request_megapixels"]
    return ServeLimits(
        max_upload_bytes=int(options["max_upload_mb"] * 2**20),
        max_batch_bytes=int(options["max_batch_mb"] * 2**20),
        max_pixels=int(pixels * 1e6) if pixels else base.max_pixels,
        max_request_pixels=int(request_pixels * 1e6) if request_pixels else base.max_request_pixels,
        max_files=options["max_files"],
        max_tiles=options["max_tiles"],
        max_request_tiles=options["max_request_tiles"],
        max_batch_size=options["batch_size"],
        max_pending=options["max_pending"],
        timeout_s=options["timeout"],
        header_timeout_s=options["header_timeout"],
        body_timeout_s=options["body_timeout"],
        keep_alive_s=options["keep_alive"],
        max_connections=options["max_connections"],
        max_explain=options["max_explain"],
        max_explain_pending=options["max_explain_pending"],
        max_explain_tiles=options["max_explain_tiles"],
    )


def _slides(slides_dir: Path | None, results: Path | None, predictor):
    """The slide catalogue and its analyses (None, None without ``--slides``)."""
    if slides_dir is None:
        if results is not None:
            raise click.UsageError("--slides-results needs --slides")
        return None, None
    from breastpath.serve.analyses import SlideAnalyses, results_folder
    from breastpath.slide.catalog import SlideCatalog

    slides = SlideCatalog(slides_dir)
    folder, why = results_folder(slides.root, results)
    return slides, SlideAnalyses(slides, predictor, results=folder, unavailable=why)


@click.command("serve")
@checkpoint_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port; 0 picks a free one (printed at start).",
)
@_limit_options
@click.option(
    "--threads",
    type=_COUNT,
    default=None,
    help="Model threads [default: CPU cores - 1, at least 1].",
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
@click.option(
    "--slides",
    "slides_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Serve the slides of this folder (or the cohort output folder of `breastpath slide`) "
    "in a zoomable viewer at /slides.",
)
@click.option(
    "--slides-results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where slides analysed from the page are written [default: SLIDES/breastpath-analyses "
    "when that can be written; else analysis from the page is off].",
)
@click.option(
    "--token",
    envvar="BREASTPATH_TOKEN",
    default=None,
    help="Access token every request must carry (a browser: open the page once with "
    "?token=...). Needed when --host is not a loopback address. [env: BREASTPATH_TOKEN]",
)
@click.option(
    "--insecure-public",
    is_flag=True,
    help="Serve on a non-loopback --host without a token (anyone who can reach it sees the "
    "slides).",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def command(
    checkpoint,
    host,
    port,
    threads,
    device,
    runtime,
    stain_targets,
    stain_method,
    access_log,
    slides_dir,
    slides_results,
    token,
    insecure_public,
    **limit_options,
) -> None:
    """Serve the upload page and the HTTP API on HOST:PORT."""
    import torch

    from breastpath.errors import ConfigError
    from breastpath.inference.predictor import Predictor
    from breastpath.serve.access import check_exposure
    from breastpath.serve.app import create_app
    from breastpath.serve.memory import tune_allocator
    from breastpath.serve.server import bind, make_server

    check_exposure(host, token, insecure_public=insecure_public)
    torch.set_num_threads(threads or default_threads())
    limits = _limits(limit_options)
    try:  # before the model loads: a busy port is said at once
        sock = bind(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
            "(make run PORT=...)"
        ) from None
    predictor = Predictor.from_checkpoint(
        checkpoint, device=device, batch_size=limits.max_batch_size, runtime=runtime
    )
    stain = _fit_stain(stain_method, stain_targets) if stain_targets else None
    slides, analyses = _slides(slides_dir, slides_results, predictor)
    app = create_app(
        predictor, limits=limits, stain=stain, slides=slides, analyses=analyses, token=token
    )
    tune_allocator()
    # the event loop waits for the interpreter lock behind worker threads' Python code; hand it
    # over every millisecond instead of every 5 (the default)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    bound = sock.getsockname()[1]
    click.echo(
        f"serving {predictor.name} ({predictor.runtime}) on http://{host}:{bound} (Ctrl+C to stop)"
    )
    if slides is not None:
        click.echo(
            f"slides: {len(slides.entries)} from {slides_dir} at http://{host}:{bound}/slides"
        )
        click.echo(
            f"analyses from the page: written to {analyses.results}"
            if analyses.results is not None
            else f"note: {analyses.unavailable}"
        )
    if token is not None:
        click.echo("access token required (open the page once with ?token=...)")
    make_server(app, limits=limits, access_log=access_log).run(sockets=[sock])
