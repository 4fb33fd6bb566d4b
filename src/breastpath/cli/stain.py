"""``breastpath stain fit | apply | compare``: stain targets as files, outside of training."""

from __future__ import annotations

import click

METHODS = ("reinhard", "macenko", "vahadane")


def _decode_all(paths: tuple[str, ...]) -> tuple[list, list, list[str]]:
    """Decode the files (folders expanded); return (images, their paths, skipped messages)."""
    from breastpath.errors import InvalidImageError
    from breastpath.imaging import decode_image, gather_image_files

    images, kept, skipped = [], [], []
    for path in gather_image_files(paths):
        try:
            images.append(decode_image(path))
            kept.append(path)
        except InvalidImageError as exc:
            skipped.append(str(exc))
    return images, kept, skipped


def _report_skipped(skipped: list[str]) -> None:
    for message in skipped[:20]:
        click.echo(f"skipped: {message}", err=True)
    if len(skipped) > 20:
        click.echo(f"... and {len(skipped) - 20} more skipped", err=True)


@click.group("stain")
def command() -> None:
    """Fit a stain target, normalize images to it, or compare the methods."""


@command.command("fit")
@click.argument("images", nargs=-1, required=True)
@click.option("--method", type=click.Choice(METHODS), default="vahadane", show_default=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
def fit(images, method, out_file, seed) -> None:
    """Fit a METHOD target on IMAGES (files or folders; pooled) and save it as JSON."""
    from breastpath.errors import InvalidImageError
    from breastpath.io import write_json
    from breastpath.stain import get_normalizer

    decoded, kept, skipped = _decode_all(images)
    _report_skipped(skipped)
    if not decoded:
        raise InvalidImageError(f"none of the {len(skipped)} file(s) could be read")
    normalizer = get_normalizer(method, seed=seed).fit(decoded)
    write_json(out_file, normalizer.to_dict())
    click.echo(f"fitted {method} on {len(kept)} image(s); wrote {out_file}")


@command.command("apply")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--target",
    "target_file",
    required=True,
    help="A target JSON from `breastpath stain fit`, or a checkpoint (run, file or bundled name) "
    "that carries one.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def apply(images, target_file, out_dir) -> None:
    """Normalize IMAGES (files or folders) to a saved target; write PNGs into OUT."""
    import io
    from pathlib import Path

    from PIL import Image

    from breastpath.errors import InvalidImageError
    from breastpath.imaging import decode_image, gather_image_files
    from breastpath.io import atomic_write_bytes

    normalizer = _load_target(target_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = gather_image_files(images)
    roots = [Path(p) for p in images if Path(p).is_dir()]
    written, skipped, unchanged = 0, [], 0
    for path in files:
        try:
            image = decode_image(path)
        except InvalidImageError as exc:
            skipped.append(str(exc))
            continue
        result, ok = normalizer.transform(image, return_status=True)
        unchanged += int(not ok)
        relative = _relative(path, roots)
        target = (out / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(result).save(buffer, format="PNG")
        atomic_write_bytes(target, buffer.getvalue())
        written += 1
    _report_skipped(skipped)
    if not written:
        raise InvalidImageError(f"none of the {len(files)} file(s) could be read")
    note = f" ({unchanged} without usable tissue, copied unchanged)" if unchanged else ""
    click.echo(f"wrote {written} image(s) to {out}{note}")
    if skipped:
        click.echo(f"{len(skipped)} of {len(files)} file(s) could not be read", err=True)


@command.command("compare")
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--target",
    "target_image",
    default=None,
    help="Target image [default: the first of IMAGES].",
)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False))
@click.option("--max-images", type=click.IntRange(1, 12), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dpi", type=click.IntRange(30, 600), default=100, show_default=True)
def compare(images, target_image, out_file, max_images, seed, dpi) -> None:
    """A PNG figure: IMAGES as they are and normalized by Reinhard, Macenko and Vahadane."""
    from pathlib import Path

    from breastpath.errors import InvalidImageError
    from breastpath.imaging import decode_image
    from breastpath.stain.figure import comparison_figure

    decoded, kept, skipped = _decode_all(images)
    _report_skipped(skipped)
    if target_image is not None:
        target = decode_image(target_image)
    elif len(decoded) >= 2:
        target, decoded, kept = decoded[0], decoded[1:], kept[1:]
    else:
        raise InvalidImageError("need a --target image or at least two readable images")
    decoded, kept = decoded[:max_images], kept[:max_images]
    if not decoded:
        raise InvalidImageError("no readable images to compare")
    figure = comparison_figure(decoded, target, names=[Path(p).name for p in kept], seed=seed)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_file, dpi=dpi)
    click.echo(f"wrote {out_file}")


def _load_target(name: str):
    """A fitted normalizer from a target JSON file or from a checkpoint carrying one."""
    from pathlib import Path

    from breastpath.errors import StainError
    from breastpath.stain import normalizer_from_dict, read_target_file

    path = Path(name)
    if path.is_file() and path.suffix == ".json":
        normalizer = read_target_file(path)
        if normalizer is not None:
            return normalizer
    from breastpath.checkpoint import load_checkpoint

    meta = load_checkpoint(name).meta
    if not meta.stain:
        raise StainError(f"{name}: the checkpoint carries no stain target")
    return normalizer_from_dict(meta.stain)


def _relative(path, roots) -> str:
    """``path`` relative to the folder argument it was found under (its name otherwise)."""
    for root in roots:
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return path.name
