"""``breastpath embed``: one pass of a frozen backbone over a prepared folder."""

from __future__ import annotations

import click


@click.command("embed")
@click.argument("prepared", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--backbone",
    required=True,
    help="Registered model: a foundation model (mahmood_uni, paige_virchow2, owkin_phikon, "
    "kaiko_vits16, ...), a zoo model (efficientnet_lite0, ...) or cancernet.",
)
@click.option(
    "--weights",
    default=None,
    help="Local weights: a .safetensors / .pth / .bin state dict (timm or transformers ViT "
    "names), or a breastpath checkpoint (a .json file or a bundled name such as `default`).",
)
@click.option(
    "--pretrained",
    is_flag=True,
    help="The backbone's offline ImageNet weights (installed packages; never downloaded).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option(
    "--chunk-size",
    type=int,
    default=1024,
    show_default=True,
    help="Rows per resumable chunk (progress is recorded after each).",
)
def command(
    prepared: str,
    backbone: str,
    weights: str | None,
    pretrained: bool,
    out_dir: str,
    device: str,
    batch_size: int,
    chunk_size: int,
) -> None:
    """Embed every image of PREPARED with a frozen backbone into a float16 cache (resumable;
    shards over ranks under torchrun)."""
    from tqdm.auto import tqdm

    from breastpath.data.cache import open_prepared
    from breastpath.experiments.embed import embed_prepared
    from breastpath.inference.device import env_info

    if batch_size < 1 or chunk_size < 1:
        raise click.BadParameter("--batch-size and --chunk-size must be at least 1")
    total = len(open_prepared(prepared).labels)
    bar = tqdm(
        total=total,
        unit="img",
        desc=f"embed ({backbone})",
        dynamic_ncols=True,
        disable=not env_info().is_main,
    )
    try:
        meta = embed_prepared(
            prepared,
            out_dir,
            backbone=backbone,
            weights=weights,
            pretrained=pretrained,
            device=device,
            batch_size=batch_size,
            chunk_size=chunk_size,
            progress=bar.update,
        )
    finally:
        bar.close()
    if env_info().is_main:
        n, d = meta["shape"]
        sha = meta["backbone"]["backbone_sha256"]
        click.echo(f"{n} embeddings of {d} values ({backbone}, weights sha256 {sha[:12] or '-'})")
        click.echo(f"wrote {out_dir}")
