"""``breastpath models``: the models ``train --model`` accepts and where their weights are."""

from __future__ import annotations

import click


@click.command("models")
def command() -> None:
    """List the registered models: name, offline pretrained weights (installed or not), and
    what each is."""
    from breastpath.models.registry import get_record, list_models

    rows = []
    for name in list_models():
        record = get_record(name)
        if record.weights is None:
            weights = "none (random start, or --weights PATH)"
        elif record.weights.path() is not None:
            weights = f"{record.weights.label} (installed)"
        else:
            weights = f"{record.weights.label} (not installed: {record.weights.hint})"
        rows.append((name, weights, record.description))
    width = max(len(r[0]) for r in rows)
    for name, weights, description in rows:
        click.echo(f"{name:<{width}}  {weights}" + (f"  {description}" if description else ""))
