"""Serving: the :class:`~breastpath.serve.predictor.Predictor` and the web app."""
