"""Experiments that train and evaluate many models: patient-level cross-validation
(:mod:`breastpath.experiments.crossval`) and side-by-side comparison
(:mod:`breastpath.experiments.compare`)."""
