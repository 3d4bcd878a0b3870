"""crackseg.losses on known tensors."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from crackseg.losses import AsymmetricLoss, BCEDiceLoss, make_loss


def _value(loss, y_true, y_pred):
    return float(keras.ops.convert_to_numpy(loss(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32))))


# one image of 1 x 2 pixels: a crack pixel and a background pixel; predictions that do not sum to 1
Y_TRUE = [[[[0.0, 1.0], [1.0, 0.0]]]]
Y_PRED = [[[[0.2, 0.5], [0.6, 0.1]]]]
# crack MSE ((0.5-1)^2 + 0.1^2)/2 = 0.13; background MSE (0.2^2 + 0.4^2)/2 = 0.10;
# sum term ((0.2+0.5-1)^2 + (0.6+0.1-1)^2)/2 = 0.09
CRACK, BACKGROUND, SUM = 0.13, 0.10, 0.09


@pytest.mark.parametrize("weight", [200.0, 10.0, 1.0])
def test_asymmetric_loss_by_hand(weight):
    assert _value(AsymmetricLoss(weight), Y_TRUE, Y_PRED) == pytest.approx(weight * CRACK + BACKGROUND + SUM,
                                                                           rel=1e-5)


def test_asymmetric_loss_default_weight_is_200():
    assert AsymmetricLoss().crack_weight == 200.0
    assert _value(AsymmetricLoss(), Y_TRUE, Y_PRED) == pytest.approx(26.19, rel=1e-5)


def test_asymmetric_loss_is_averaged_over_the_batch():
    perfect = Y_TRUE[0]
    value = _value(AsymmetricLoss(200.0), [Y_TRUE[0], Y_TRUE[0]], [Y_PRED[0], perfect])
    assert value == pytest.approx((200 * CRACK + BACKGROUND + SUM) / 2, rel=1e-5)
    assert _value(AsymmetricLoss(), Y_TRUE, Y_TRUE) == 0.0


def test_asymmetric_loss_penalises_channels_that_do_not_sum_to_one():
    # the crack channel is exact: background error 0.5^2 and sum term (1.5 - 1)^2 remain
    assert _value(AsymmetricLoss(), [[[[0.0, 1.0]]]], [[[[0.5, 1.0]]]]) == pytest.approx(0.25 + 0.25)


def _maps(seed=0, size=16):
    rng = np.random.default_rng(seed)
    truth = (rng.random((2, size, size)) < 0.1).astype(np.float32)
    return np.stack([1 - truth, truth], -1)


def test_bce_dice_sanity():
    y = _maps()
    perfect = _value(BCEDiceLoss(), y, y)
    bad = _value(BCEDiceLoss(), y, 1.0 - y)
    half = _value(BCEDiceLoss(), y, np.full_like(y, 0.5))
    assert np.isfinite([perfect, bad, half]).all()
    assert perfect < half < bad
    assert perfect == pytest.approx(0.0, abs=1e-3)
    assert np.isfinite(_value(BCEDiceLoss(), np.zeros_like(y), np.zeros_like(y)))


def test_losses_are_differentiable_and_finite():
    import tensorflow as tf

    y = tf.constant(_maps(1))
    p = tf.Variable(np.full(y.shape, 0.5, np.float32))
    for loss in (AsymmetricLoss(), BCEDiceLoss()):
        with tf.GradientTape() as tape:
            value = loss(y, p)
        grad = tape.gradient(value, p)
        assert np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0


def test_make_loss():
    loss = make_loss("asymmetric", crack_weight=50.0)
    assert isinstance(loss, AsymmetricLoss) and loss.crack_weight == 50.0
    assert isinstance(make_loss("bce_dice"), BCEDiceLoss)
    plain = make_loss("bce", pos_weight=7.0)  # plain: pos_weight is not applied
    assert plain.pos_weight == 1.0 and plain.dice_weight == 0.0 and plain.name == "bce"
    with pytest.raises(ValueError, match="nope"):
        make_loss("nope")


@pytest.mark.parametrize("loss", [AsymmetricLoss(37.0), BCEDiceLoss(pos_weight=3.0, dice_weight=0.5, smooth=2.0)])
def test_serialisation_round_trip(loss):
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y = _maps(2)
    p = np.clip(y * 0.7 + 0.1, 0, 1)
    assert _value(restored, y, p) == pytest.approx(_value(loss, y, p))


def test_plain_bce_is_minimised_at_a_soft_target_and_bce_dice_is_not():
    # a 4x4 map whose soft target is 0.3 everywhere: cross-entropy is lowest where the prediction is 0.3 (a proper
    # scoring rule); pos_weight 3 and Dice pull the minimum up, so a student trained so overshoots its teacher
    target = np.zeros((1, 4, 4, 2), np.float32)
    target[..., 1], target[..., 0] = 0.3, 0.7
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)

    def best(loss):
        values = []
        for q in grid:
            pred = np.zeros_like(target)
            pred[..., 1], pred[..., 0] = q, 1 - q
            values.append(_value(loss, target, pred))
        return float(grid[int(np.argmin(values))])

    assert best(make_loss("bce")) == pytest.approx(0.3)
    # BCE with pos_weight 3 alone: minimum at 3t / (3t + 1 - t) = 0.9 / 1.6 = 0.5625 -> 0.55 on this grid
    assert best(BCEDiceLoss(pos_weight=3.0, dice_weight=0.0)) == pytest.approx(0.55)
    assert best(make_loss("bce_dice", pos_weight=3.0)) > 0.55  # Dice pulls it further up
