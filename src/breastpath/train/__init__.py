"""Training: the loop, checkpoints and distributed helpers."""
