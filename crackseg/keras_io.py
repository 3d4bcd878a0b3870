"""The one Keras loader and the one Keras predict path, for training and inference alike.

    net = load_keras_model("runs/student/best.keras")       # as saved (several heads), training objects registered
    net = load_deployable_keras("weights/student.keras")    # one output, crack probability; or a preset name
    probs = predict_probabilities(net, images)              # HxW float32 per RGB uint8 image

Importing this module imports neither Keras nor TensorFlow (each function imports Keras when called), so the edge
side (``crackseg.engines``) imports it at the top. A missing or broken file raises ``ModelFileError``: one line
naming the file, an ``EngineError`` to the inference side and a ``TrainingError`` to the training side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .preprocess import crop_back, prepare


def is_preset(path_or_preset: str) -> bool:
    """A bare name with no file behind it: a preset of ``model.PRESETS`` (checked when it is built)."""
    return not Path(path_or_preset).suffix and not Path(path_or_preset).exists()


def _keras_and_model(what: str | Path):
    try:
        import keras

        import model as mcff  # registers the network's custom layers before loading
    except ImportError as exc:
        raise ModelFileError(f"{what}: the Keras backend needs TensorFlow/Keras and the model package ({exc}); on an "
                             f"edge device use the exported .onnx or .engine") from None
    return keras, mcff


def load_keras_model(path: str | Path):
    """A saved ``.keras`` model as saved (a run's checkpoint with all its heads, or a deployable student), not
    compiled; the network's layers and the training losses / metrics saved with checkpoints are registered first."""
    keras, _ = _keras_and_model(path)
    from . import keras_metrics, losses  # noqa: F401  (register the training objects saved with checkpoints)

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
        raise ModelFileError(f"{path}: cannot load Keras model ({type(exc).__name__}: {exc})") from None


def load_deployable_keras(path_or_preset: str | Path):
    """A deployable Keras model (one output, crack probability, any H x W multiple of 4) from a ``.keras`` file or a
    preset name (untrained). A saved training model (several heads) becomes the deployable one with
    ``model.deploy_model``."""
    _, mcff = _keras_and_model(path_or_preset)
    if is_preset(str(path_or_preset)):
        try:
            return mcff.deploy_model(mcff.build_model(str(path_or_preset), None))
        except ValueError as exc:
            raise ModelFileError(f"{path_or_preset}: not a model file and not a preset ({exc})") from None
    net = load_keras_model(path_or_preset)
    if len(net.outputs) != 1:
        net = mcff.deploy_model(net)
    return net


def predict_probabilities(model, images: list[np.ndarray], output: str | None = None,
                          max_pixels: int = 1 << 20, max_batch: int = 16) -> list[np.ndarray]:
    """Crack probability (H, W) float32 of each RGB uint8 image through a Keras ``model`` (its ``output`` head when
    it returns a dict; the last channel is crack), prepared by ``crackseg.preprocess`` as for every backend.

    Images of one size go through Keras' compiled predict function together (about 3x faster than eager calls on
    CPU), ``max_pixels`` per batch; a short last batch is filled with repeats, so each image size is traced once.
    ``KerasEngine.predict`` / ``predict_batch``, the validation of training runs and the card's threshold choice all
    come here."""
    probs: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(np.shape(image), []).append(i)
    for shape, indices in by_shape.items():
        batch = int(max(1, min(max_batch, len(indices), max_pixels // max(1, shape[0] * shape[1]))))
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            filled = chunk + [chunk[-1]] * (batch - len(chunk))
            x, size = prepare(np.stack([images[i] for i in filled]))
            out = model.predict_on_batch(x)
            out = out[output] if isinstance(out, dict) else out
            for i, prob in zip(chunk, crop_back(np.asarray(out), size)):
                probs[i] = prob.astype(np.float32)
    return probs  # type: ignore[return-value]
