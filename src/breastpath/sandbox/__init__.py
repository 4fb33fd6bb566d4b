"""Decode untrusted images out of process, under hard limits (see :mod:`.pool`).

:class:`DecodeSandbox` is what every entry point that reads images it did not make uses:
uploads and zip members in ``serve``, files in ``predict`` and ``prepare``.
"""

from breastpath.sandbox.pool import DecodeSandbox, default_sandbox, inline_bytes

__all__ = ["DecodeSandbox", "default_sandbox", "inline_bytes"]
