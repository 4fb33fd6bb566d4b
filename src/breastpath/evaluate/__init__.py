"""Evaluate a classifier: metrics, patient-level aggregation, plots and a shareable report.

Submodules (import the one you need; nothing heavy is imported here):

- :mod:`breastpath.evaluate.metrics`   binary / multiclass metrics, threshold choice, bootstrap CIs
- :mod:`breastpath.evaluate.aggregate` patch scores -> patient scores
- :mod:`breastpath.evaluate.plots`     training curves, ROC / PR curves, confusion matrix, examples
- :mod:`breastpath.evaluate.report`    a self-contained ``report.html`` and a ``report.md``
"""
