"""Losses on two-channel (background, crack) probability maps, Keras-serialisable."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="crackseg")
class AsymmetricLoss(keras.losses.Loss):
    """The paper's asymmetric binary loss: ``w * MSE(crack) + MSE(background) + MSE(crack + background - 1)``.

    The crack weight (default 200) offsets the ~3 % share of crack pixels.
    """

    def __init__(self, crack_weight: float = 200.0, name: str = "asymmetric", **kwargs):
        super().__init__(name=name, **kwargs)
        self.crack_weight = float(crack_weight)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        crack = ops.mean(ops.square(y_pred[..., 1] - y_true[..., 1]), axis=(1, 2))
        background = ops.mean(ops.square(y_pred[..., 0] - y_true[..., 0]), axis=(1, 2))
        total = ops.mean(ops.square(y_pred[..., 0] + y_pred[..., 1] - 1.0), axis=(1, 2))
        return self.crack_weight * crack + background + total

    def get_config(self):
        return {**super().get_config(), "crack_weight": self.crack_weight}


@keras.saving.register_keras_serializable(package="crackseg")
class BCEDiceLoss(keras.losses.Loss):
    """Weighted binary cross-entropy on the crack channel + soft Dice (per image)."""

    def __init__(self, pos_weight: float = 10.0, dice_weight: float = 1.0, smooth: float = 1.0,
                 name: str = "bce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight, self.dice_weight, self.smooth = float(pos_weight), float(dice_weight), float(smooth)

    def call(self, y_true, y_pred):
        t = ops.cast(y_true[..., 1], y_pred.dtype)
        p = ops.clip(y_pred[..., 1], 1e-7, 1 - 1e-7)
        bce = -ops.mean(self.pos_weight * t * ops.log(p) + (1 - t) * ops.log(1 - p), axis=(1, 2))
        inter = ops.sum(t * p, axis=(1, 2))
        dice = 1 - (2 * inter + self.smooth) / (ops.sum(t, axis=(1, 2)) + ops.sum(p, axis=(1, 2)) + self.smooth)
        return bce + self.dice_weight * dice

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight, "dice_weight": self.dice_weight,
                "smooth": self.smooth}


LOSSES = {"asymmetric": AsymmetricLoss, "bce_dice": BCEDiceLoss, "bce": BCEDiceLoss}


def make_loss(name: str, crack_weight: float = 200.0, pos_weight: float = 10.0) -> keras.losses.Loss:
    """A loss by name: ``asymmetric`` (the paper's; ``crack_weight``), ``bce_dice`` (``pos_weight`` on crack
    pixels in the BCE term) or ``bce`` (plain cross-entropy, no weight, no Dice: a proper scoring rule, minimised
    where the prediction equals a soft target; pos_weight and Dice move that minimum, which soft labels cannot use)."""
    if name == "asymmetric":
        return AsymmetricLoss(crack_weight)
    if name == "bce_dice":
        return BCEDiceLoss(pos_weight)
    if name == "bce":
        return BCEDiceLoss(1.0, dice_weight=0.0, name="bce")
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
