"""Patient-level, class-stratified, seeded train/val/test splits.

A patient's images always land in one split. Patients are assigned greedily, largest first (ties
broken by a seeded shuffle), to the split whose per-class deficit against its target share is the
largest, so that class balance follows the requested fractions as closely as whole patients allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from breastpath.errors import SplitError
from breastpath.io import write_csv

SPLIT_NAMES = ("train", "val", "test")


def split_patients(
    patients: Sequence[str],
    labels: Sequence[int],
    *,
    test_frac: float = 0.2,
    val_frac: float = 0.1,
    seed: int = 0,
) -> dict[str, str]:
    """Assign every patient to ``"train"``, ``"val"`` or ``"test"``.

    Parameters
    ----------
    patients, labels
        One entry per image: its patient id and its class index.
    test_frac
        Share of the images (per class) that go to test.
    val_frac
        Share of the *remaining* images that go to validation (the seeds' convention:
        20% test, then 10% of the rest for validation).
    seed
        Seed of the local random generator; the same inputs and seed give the same split.

    Returns
    -------
    dict
        ``patient -> split name``.

    Examples
    --------
    >>> split = split_patients(["a", "a", "b", "c", "d", "e"], [0, 1, 0, 1, 0, 1], seed=0)
    >>> sorted(set(split.values())) <= ["test", "train", "val"]
    True
    """
    if len(patients) != len(labels):
        raise SplitError("patients and labels differ in length")
    if not 0.0 <= test_frac < 1.0 or not 0.0 <= val_frac < 1.0:
        raise SplitError(f"fractions must be in [0, 1): test={test_frac}, val={val_frac}")
    if not patients:
        raise SplitError("nothing to split: no images")
    unique, inverse = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    label_array = np.asarray(labels, dtype=np.int64)
    n_classes = int(label_array.max()) + 1
    counts = np.zeros((len(unique), n_classes), dtype=np.float64)
    np.add.at(counts, (inverse, label_array), 1.0)

    shares = np.array([(1 - test_frac) * (1 - val_frac), (1 - test_frac) * val_frac, test_frac])
    wanted = [i for i, share in enumerate(shares) if share > 0]
    if len(unique) < len(wanted):
        raise SplitError(
            f"{len(unique)} patient(s) cannot fill {len(wanted)} splits; lower the fractions"
        )
    targets = shares[:, None] * counts.sum(axis=0)[None, :]
    assigned = np.zeros_like(targets)
    owner = np.full(len(unique), -1, dtype=np.int64)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]

    # Seed each non-empty split with one patient, smallest splits first, so none stays empty.
    for split in sorted(wanted, key=lambda i: shares[i]):
        if split == 0:
            continue
        free = [p for p in order[::-1] if owner[p] < 0]  # smallest patients first
        dominant = counts[free].argmax(axis=1)
        need = int((targets[split] - assigned[split]).argmax())
        matching = [p for p, d in zip(free, dominant, strict=True) if d == need]
        patient = matching[0] if matching else free[0]
        owner[patient] = split
        assigned[split] += counts[patient]

    for patient in order:
        if owner[patient] >= 0:
            continue
        deficit = np.clip(targets - assigned, 0, None)
        weight = counts[patient] / counts[patient].sum()
        score = (deficit * weight[None, :]).sum(axis=1) / np.maximum(targets.sum(axis=1), 1e-9)
        score[shares == 0] = -np.inf
        split = int(score.argmax())
        owner[patient] = split
        assigned[split] += counts[patient]
    return {str(p): SPLIT_NAMES[s] for p, s in zip(unique, owner, strict=True)}


def write_splits(path: str | Path, rows: Sequence[dict[str, object]]) -> None:
    """Write ``splits.csv``: one row per image with its path, patient, label and split."""
    write_csv(path, rows, ["path", "patient", "label", "label_name", "split"])
