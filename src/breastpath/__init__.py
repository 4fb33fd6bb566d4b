"""breastpath: find cancer in breast histopathology images.

The package is organised along the flow of data::

    data.index -> data.splits -> data.cache -> models -> train -> evaluate -> serve

Nothing heavy happens at import time; import the submodule you need.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
