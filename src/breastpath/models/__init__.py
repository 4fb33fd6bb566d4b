"""Models: a registry (:func:`create_model`) over breastpath's own networks."""

from breastpath.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
