"""``breastpath evaluate`` (placeholder replaced below)."""
import click


@click.command("evaluate")
def command() -> None:
    """Evaluate a checkpoint."""
