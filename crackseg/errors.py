"""The typed errors of the inference and export side (no dependencies: every module can raise them).

Each message is one line naming the file or setting at fault; the scripts print it as ``error: ...`` and exit non-zero.
"""
from __future__ import annotations


class EngineError(ValueError):
    """A model that cannot be opened or an input it cannot take; the message names the file."""


class ExportError(EngineError):
    """A conversion, quantisation or engine build that failed or gave a model that does not match its source."""
