"""``breastpath mosaic PATIENT_DIR_OR_PREPARED --patient ID --out DIR``."""

from __future__ import annotations

import click

from breastpath.cli.options import FiniteFloat, checkpoint_option


@click.command("mosaic")
@click.argument("source", type=click.Path())
@click.option("--patient", required=True, help="IDC patient id (the folder name).")
@checkpoint_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for mosaic.png, figure.png, patches.csv and patient.json.",
)
@click.option(
    "--threshold",
    type=FiniteFloat(0.0, 1.0),
    default=None,
    help="Patch threshold [default: the model's].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--max-side",
    type=click.IntRange(min=64),
    default=2048,
    show_default=True,
    help="Longest side of each panel of figure.png.",
)
def command(source, patient, checkpoint, out_dir, threshold, batch_size, max_side) -> None:
    """Rebuild an IDC patient's tissue from SOURCE (an IDC folder, a patient folder or a
    prepared cache) and draw the ground truth beside the model's heatmap.

    The patient's verdict and extent (share of its assessed patches called IDC) come from the
    model's one verdict rule, printed beside them.
    """
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.mosaic import build_mosaic, load_patient, write_mosaic

    patches = load_patient(source, patient=patient)
    predictor = Predictor.from_checkpoint(checkpoint, batch_size=batch_size)
    mosaic = build_mosaic(patches, predictor=predictor, threshold=threshold)
    paths = write_mosaic(out_dir, mosaic, max_side=max_side)
    s = mosaic.score
    click.echo(
        f"patient {s['patient']}: {s['patches']} patches ({s['idc_patches']} labelled IDC, "
        f"true extent {s['true_extent']:.1%}); {s['verdict']['text']}"
    )
    if s["skipped"]:
        click.echo(f"{len(s['skipped'])} unreadable patch(es) skipped", err=True)
    click.echo(f"wrote {', '.join(p.name for p in paths.values())} to {out_dir}")
