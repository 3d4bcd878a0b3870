"""The typed errors of the inference, export and training sides (no dependencies: every module can raise them).

Each message is one line naming the file or setting at fault; the scripts print it as ``error: ...`` and exit non-zero.
"""
from __future__ import annotations


class EngineError(ValueError):
    """A model that cannot be opened or an input it cannot take; the message names the file."""


class ExportError(EngineError):
    """A conversion, quantisation or engine build that failed or gave a model that does not match its source."""


class TrainingError(RuntimeError):
    """A run that cannot start or go on as asked (clashing settings, a missing checkpoint, a bad model file)."""


class ModelFileError(EngineError, TrainingError):
    """A model file that is missing or not a Keras model (``crackseg.keras_io``): an EngineError to the inference
    side, a TrainingError to the training side; the message names the file."""
