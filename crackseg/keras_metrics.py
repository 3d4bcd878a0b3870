"""Keras versions of the crack metrics for training logs; they agree with ``crackseg.metrics`` (micro counts,
per-image tolerance by max-pooling each image separately). Kept apart so edge tools need no TensorFlow."""
from __future__ import annotations

import keras
from keras import ops

KINDS = ("precision", "recall", "f1", "iou")


@keras.saving.register_keras_serializable(package="crackseg")
class CrackMetric(keras.metrics.Metric):
    """Dataset-level (micro) crack precision / recall / F1 / IoU, strict or tolerant at Chebyshev ``distance``.

    ``y_true`` and ``y_pred`` are (B, H, W, 2) maps; crack where ``y_pred[..., 1] >= threshold`` and
    ``y_true[..., 1] > 0.5`` (so softened ground truth works too).
    """

    def __init__(self, kind: str = "f1", tolerant: bool = False, threshold: float = 0.5, distance: int = 2,
                 name: str | None = None, **kwargs):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        super().__init__(name=name or (f"tol_{kind}" if tolerant else kind), **kwargs)
        self.kind, self.tolerant, self.threshold, self.distance = kind, bool(tolerant), float(threshold), int(distance)
        self.c = {k: self.add_variable(shape=(), initializer="zeros", name=k, dtype="float32")
                  for k in ("tp", "fp", "fn", "hit", "truth")}

    def _near(self, mask):
        k = 2 * self.distance + 1
        return ops.max_pool(mask[..., None], pool_size=k, strides=1, padding="same")[..., 0]

    def update_state(self, y_true, y_pred, sample_weight=None):
        pred = ops.cast(y_pred[..., 1] >= self.threshold, "float32")
        truth = ops.cast(ops.cast(y_true[..., 1], "float32") > 0.5, "float32")
        if self.tolerant:
            tp = ops.sum(pred * self._near(truth))
            hit = ops.sum(truth * self._near(pred))
        else:
            tp = hit = ops.sum(pred * truth)
        n_pred, n_truth = ops.sum(pred), ops.sum(truth)
        for key, value in (("tp", tp), ("fp", n_pred - tp), ("fn", n_truth - hit), ("hit", hit),
                           ("truth", n_truth)):
            self.c[key].assign_add(value)

    def result(self):
        tp, fp, fn, hit, truth = (self.c[k] for k in ("tp", "fp", "fn", "hit", "truth"))
        empty = ops.equal(tp + fp + fn, 0.0)

        def ratio(num, den):
            return ops.where(den > 0, num / ops.maximum(den, 1.0), ops.where(empty, 1.0, 0.0))

        p, r = ratio(tp, tp + fp), ratio(hit, truth)
        values = {"precision": p, "recall": r, "iou": ratio(tp, tp + fp + fn),
                  "f1": ops.where(empty, 1.0, ops.where(p + r > 0, 2 * p * r / ops.maximum(p + r, 1e-12), 0.0))}
        return values[self.kind]

    def reset_state(self):
        for v in self.c.values():
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "tolerant": self.tolerant, "threshold": self.threshold,
                "distance": self.distance}


def crack_metrics(threshold: float = 0.5, distance: int = 2) -> list[CrackMetric]:
    """The metrics logged during training: strict P/R/F1/IoU and tolerant F1."""
    return [CrackMetric(k, False, threshold, distance) for k in KINDS] + [CrackMetric("f1", True, threshold, distance)]
