"""Serving: the :class:`~breastpath.inference.predictor.Predictor` and the web app."""
