"""The one verdict rule: tile (or patch) probabilities -> one verdict for an image, a slide or a
patient, and the words that say it.

Every entry point (``predict``, the API and page, ``mosaic``, ``evaluate``, ``crossval``,
``slide`` and its cohorts, the model cards) turns tile scores into a verdict here, through a
:class:`VerdictRule`; the sentence printed beside a verdict is :meth:`VerdictRule.describe` of
the very rule that made it, so the words and the rule cannot drift apart.

Tiles
    Only assessed tiles count: those that passed the input-quality gate (tissue, H&E colours).
    A tile is **called** positive when its cancer probability is at or above the rule's
    ``threshold`` (the model's decision threshold unless stated).

Reductions (:data:`breastpath.choices.VERDICT_REDUCTIONS`)
    ``presence`` (IDC): positive when at least ``min_tiles`` tiles are called *and* they are at
    least ``min_extent`` of the assessed tiles. ``min_tiles`` resists an isolated false tile on
    a small patient; ``min_extent`` resists the scattered false tiles of a large slide, whose
    count grows with its size. Both are chosen inside the patient-level cross-validation folds
    (docs/results.md, "Patients and slides").
    ``mean``: positive when the mean probability is at or above ``threshold``.
    ``top_k_mean``: the mean of the ``top_k`` highest probabilities, at or above ``threshold``.
    ``vote``: positive when at least half of the assessed tiles are called.

Extent
    Always reported: the fraction of the assessed tiles that are called (the share of assessed
    tissue the model calls cancer; compared per patient with the true share in evaluation).

Examples
--------
>>> rule = VerdictRule(reduction="presence", threshold=0.5, min_tiles=2, min_extent=0.05,
...                    positive="IDC present", negative="no IDC found")
>>> v = rule.apply([0.9, 0.2, 0.7, 0.1])
>>> v.positive, v.label, v.extent, v.tiles_called
(True, 'IDC present', 0.5, 2)
>>> rule.apply([0.9, 0.2, 0.1, 0.1]).label  # one called tile is not enough under this rule
'no IDC found'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from breastpath.choices import VERDICT_REDUCTIONS, check_choice
from breastpath.errors import ConfigError

__all__ = [
    "NOT_ASSESSED",
    "TASK_RULES",
    "Verdict",
    "VerdictRule",
    "rule_for",
    "task_of",
]

#: Label of a verdict over no assessed tile.
NOT_ASSESSED = "not assessed"


@dataclass(frozen=True)
class Verdict:
    """What a :class:`VerdictRule` made of a set of tile probabilities.

    ``positive`` is None (and ``label`` :data:`NOT_ASSESSED`) when no tile was assessed.
    """

    positive: bool | None
    label: str
    score: float | None
    extent: float | None
    tiles_assessed: int
    tiles_called: int
    reduction: str
    threshold: float
    rule: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, numbers rounded to 6 digits."""
        out = asdict(self)
        for key in ("score", "extent", "threshold"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 6)
        return out


@dataclass(frozen=True)
class VerdictRule:
    """How tile probabilities become one verdict (see the module docstring).

    Parameters
    ----------
    reduction
        One of :data:`breastpath.choices.VERDICT_REDUCTIONS`.
    threshold
        Tile threshold: a tile at or above it is called positive.
    min_tiles, min_extent
        ``presence`` only: how many called tiles, and what fraction of the assessed tiles,
        make a positive verdict.
    top_k
        ``top_k_mean`` only.
    positive, negative
        The words of the two verdicts.
    unit
        What a tile is called in the sentence (``tile``, ``patch``).
    """

    reduction: str
    threshold: float
    min_tiles: int = 1
    min_extent: float = 0.0
    top_k: int = 20
    positive: str = "positive"
    negative: str = "negative"
    unit: str = "tile"

    def __post_init__(self) -> None:
        check_choice(self.reduction, VERDICT_REDUCTIONS, what="verdict reduction")
        if not (np.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"verdict threshold must be in [0, 1], got {self.threshold}")
        if self.min_tiles < 1 or self.top_k < 1:
            raise ConfigError("verdict min_tiles and top_k must be at least 1")
        if not (np.isfinite(self.min_extent) and 0.0 <= self.min_extent <= 1.0):
            raise ConfigError(f"verdict min_extent must be in [0, 1], got {self.min_extent}")

    def with_threshold(self, threshold: float) -> VerdictRule:
        """The same rule with another tile threshold (``--threshold``)."""
        return replace(self, threshold=float(threshold))

    def describe(self) -> str:
        """The rule in one sentence, as every entry point prints it.

        Examples
        --------
        >>> VerdictRule(reduction="mean", threshold=0.4, positive="malignant").describe()
        'malignant when the mean probability of the assessed tiles is at or above 0.4'
        """
        t = f"{self.threshold:.4g}"
        what = f"assessed {_plural(self.unit)}"
        if self.reduction == "presence":
            units = _plural(self.unit) if self.min_tiles > 1 else self.unit
            count = f"at least {self.min_tiles} {units}"
            share = f" and at least {self.min_extent:.1%} of the {what}" if self.min_extent else ""
            return f"{self.positive} when {count}{share} score at or above {t}"
        if self.reduction == "mean":
            return f"{self.positive} when the mean probability of the {what} is at or above {t}"
        if self.reduction == "top_k_mean":
            return (
                f"{self.positive} when the mean probability of the {self.top_k} highest "
                f"{what} is at or above {t}"
            )
        return f"{self.positive} when at least half of the {what} score at or above {t}"

    def apply(self, probabilities: Sequence[float] | np.ndarray) -> Verdict:
        """The verdict over the assessed tiles' probabilities (NaN entries are not assessed)."""
        p = np.asarray(probabilities, dtype=np.float64).ravel()
        p = p[np.isfinite(p)]
        if p.size == 0:
            return self._verdict(None, NOT_ASSESSED, None, None, 0, 0)
        called = int(np.count_nonzero(p >= self.threshold))
        extent = called / p.size
        score = self._score(p, extent)
        if self.reduction == "presence":
            positive = called >= self.min_tiles and extent >= self.min_extent
        else:
            cutoff = 0.5 if self.reduction == "vote" else self.threshold
            positive = score >= cutoff
        label = self.positive if positive else self.negative
        return self._verdict(positive, label, score, extent, int(p.size), called)

    def _score(self, p: np.ndarray, extent: float) -> float:
        if self.reduction == "mean":
            return float(p.mean())
        if self.reduction == "top_k_mean":
            return float(np.sort(p)[-min(self.top_k, p.size) :].mean())
        return extent  # presence and vote: the share of assessed tiles called

    def _verdict(
        self,
        positive: bool | None,
        label: str,
        score: float | None,
        extent: float | None,
        assessed: int,
        called: int,
    ) -> Verdict:
        if positive is None:
            text = f"{NOT_ASSESSED}: no {self.unit} passed the quality gate"
        else:
            text = (
                f"{label}: {called} of {assessed} assessed {_plural(self.unit)} ({extent:.1%}) "
                f"at or above {self.threshold:.4g}"
            )
            if self.reduction in ("mean", "top_k_mean"):
                text += f", {self.reduction.replace('_', '-')} probability {score:.3f}"
        return Verdict(
            positive=positive,
            label=label,
            score=score,
            extent=extent,
            tiles_assessed=assessed,
            tiles_called=called,
            reduction=self.reduction,
            threshold=self.threshold,
            rule=self.describe(),
            text=f"{text} (rule: {self.describe()})",
        )

    def apply_groups(
        self, groups: Sequence[Any] | np.ndarray, probabilities: Sequence[float] | np.ndarray
    ) -> dict[str, Verdict]:
        """One verdict per group (patient, slide), groups compared as ``str``, sorted.

        Examples
        --------
        >>> rule = VerdictRule(reduction="presence", threshold=0.5)
        >>> {k: v.label for k, v in rule.apply_groups(["a", "b", "a"], [0.1, 0.9, 0.2]).items()}
        {'a': 'negative', 'b': 'positive'}
        """
        g = np.asarray(groups).astype(str)
        p = np.asarray(probabilities, dtype=np.float64)
        if g.shape != p.shape:
            raise ConfigError(f"groups {g.shape} and probabilities {p.shape} differ in shape")
        order = np.argsort(g, kind="stable")
        ids, starts = np.unique(g[order], return_index=True)
        parts = np.split(p[order], starts[1:])
        return {str(i): self.apply(part) for i, part in zip(ids, parts, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The rule of each task, stated once. IDC: ``min_tiles`` and ``min_extent`` as chosen inside
#: the patient-level cross-validation folds of the bundled IDC model (docs/results.md,
#: "Patients and slides"); BreakHis: the mean over an image's or a patient's tiles, the
#: reduction its cross-validation supports.
TASK_RULES: dict[str, dict[str, Any]] = {
    "idc": {
        "reduction": "presence",
        "min_tiles": 2,
        "min_extent": 0.05,
        "positive": "IDC present",
        "negative": "no IDC found",
    },
    "breakhis": {"reduction": "mean", "positive": "malignant", "negative": "benign"},
}


def _plural(unit: str) -> str:
    """``tiles``, ``patches``."""
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def task_of(dataset: object) -> str:
    """The :data:`TASK_RULES` key of a prepared dataset's name (``breakhis-tiles`` is
    ``breakhis``); ``""`` for one without a task rule.

    Examples
    --------
    >>> task_of("breakhis-tiles"), task_of("IDC"), task_of(None)
    ('breakhis', 'idc', '')
    """
    name = str(dataset or "").lower()
    return next((task for task in TASK_RULES if name == task or name.startswith(task + "-")), "")


def rule_for(
    describe: Mapping[str, Any], *, threshold: float | None = None, unit: str = "tile"
) -> VerdictRule:
    """The verdict rule for a model, from its :meth:`Predictor.describe` dict: its task's rule
    (:data:`TASK_RULES`, by the checkpoint's dataset) at its threshold, else ``mean`` with the
    words "<cancer classes>" / "not <cancer classes>". A checkpoint's own ``verdict`` numbers
    (``threshold``, ``min_tiles``, ``min_extent``, chosen on patients) override the task's;
    an explicit ``threshold`` overrides both.

    Examples
    --------
    >>> rule = rule_for({"dataset": "idc", "threshold": 0.42})
    >>> rule.reduction, rule.positive, rule.threshold
    ('presence', 'IDC present', 0.42)
    >>> rule_for({"dataset": "idc", "threshold": 0.42, "verdict": {"threshold": 0.6}}).threshold
    0.6
    """
    task = TASK_RULES.get(task_of(describe.get("dataset")))
    if task is None:
        cancer = " or ".join(describe.get("cancer_classes") or ["positive"])
        task = {"reduction": "mean", "positive": cancer, "negative": f"not {cancer}"}
    options = {"threshold": describe["threshold"], **task, **(describe.get("verdict") or {})}
    if threshold is not None:
        options["threshold"] = threshold
    options["threshold"] = float(options["threshold"])
    return VerdictRule(unit=unit, **options)
