"""model/: presets, outputs, custom layers, deploy head, save/load, profile."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from model import (HEADS, InstanceNorm, build_logits_model, build_model, copy_weights, count_flops, deploy_model,
                   infer_preset, profile)

TINY = dict(width=4, blocks=1)

STUDENT_PARAMS = 1_178_601
TEACHER_PARAMS = 32_804_745


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_model("student", input_size=None, **TINY)


def _images(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- presets
def test_student_has_the_papers_1_18_million_parameters():
    n = build_model("student", input_size=64).count_params()
    assert n == STUDENT_PARAMS
    assert round(n / 1e6, 2) == 1.18


def test_teacher_parameter_count():
    model = build_model("teacher", input_size=64)
    assert model.count_params() == TEACHER_PARAMS
    assert infer_preset(model).width == 64 and infer_preset(model).blocks == 8
    assert any(isinstance(layer, keras.layers.Dropout) and layer.rate == 0.5 for layer in model.layers)


def test_parameter_count_does_not_depend_on_input_size():
    assert build_model("student", 32, **TINY).count_params() == build_model("student", None, **TINY).count_params()


def test_mcld_block_has_fewer_parameters():
    mcl = build_model("student", 32, width=8, blocks=2).count_params()
    mcld = build_model("student", 32, width=8, blocks=2, block="MCLD")
    assert mcld.count_params() < mcl
    assert infer_preset(mcld).block == "MCLD"


@pytest.mark.parametrize("bad", [dict(block="XYZ"), dict(width=0)])
def test_bad_preset_overrides_raise(bad):
    with pytest.raises(ValueError):
        build_model("student", 32, **bad)


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("nope", 32)


@pytest.mark.parametrize("size", [30, 66, 0])
def test_input_size_not_multiple_of_4_raises(size):
    with pytest.raises(ValueError, match="multiple of 4"):
        build_model("student", size, **TINY)


# ---------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("size", [64, 96])
def test_output_names_and_shapes(size):
    model = build_model("student", input_size=size, **TINY)
    assert model.input_shape == (None, size, size, 3)
    out = model(_images(2, size, size))
    assert sorted(out) == sorted(HEADS) == ["h", "mix", "x", "y"]
    for name in HEADS:
        assert tuple(out[name].shape) == (2, size, size, 2)


def test_size_agnostic_model_on_non_square_input(tiny):
    out = tiny(_images(1, 48, 80))
    for name in HEADS:
        assert tuple(out[name].shape) == (1, 48, 80, 2)


def test_softmax_outputs_sum_to_one(tiny):
    out = tiny(_images(2, 32, 32))
    for name in HEADS:
        p = keras.ops.convert_to_numpy(out[name])
        assert np.all(p >= 0) and np.all(p <= 1)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_temperature_softens_but_keeps_argmax(tiny):
    x = _images(1, 32, 32, seed=1)
    hot = build_model("student", None, temperature=4.0, **TINY)
    hot.set_weights(tiny.get_weights())
    p1, p4 = (keras.ops.convert_to_numpy(m(x)["mix"]) for m in (tiny, hot))
    np.testing.assert_array_equal(p1.argmax(-1), p4.argmax(-1))
    assert np.abs(p4 - 0.5).mean() < np.abs(p1 - 0.5).mean()  # softer


def test_temperature_must_be_positive():
    with pytest.raises(ValueError):
        build_model("student", 32, temperature=0.0, **TINY)


def test_logits_model_outputs():
    model = build_logits_model("student", 32, **TINY)
    assert model.output_names == [f"{h}_logits" for h in HEADS]


# ---------------------------------------------------------------------------------------------- deploy head
def test_deploy_model_is_the_mix_heads_crack_probability(tiny):
    deployed = deploy_model(tiny)
    assert deployed.output_names == ["crack"]
    x = _images(2, 40, 64, seed=2)
    crack = keras.ops.convert_to_numpy(deployed(x))
    assert crack.shape == (2, 40, 64, 1)
    mix = keras.ops.convert_to_numpy(tiny(x)["mix"])
    np.testing.assert_allclose(crack[..., 0], mix[..., 1], atol=1e-5)


def test_deploy_model_of_another_head_and_temperature(tiny):
    x = _images(1, 32, 32, seed=3)
    soft = build_model("student", None, temperature=2.0, **TINY)
    soft.set_weights(tiny.get_weights())
    crack = keras.ops.convert_to_numpy(deploy_model(tiny, head="x", temperature=2.0)(x))
    np.testing.assert_allclose(crack[..., 0], keras.ops.convert_to_numpy(soft(x)["x"])[..., 1], atol=1e-5)
    with pytest.raises(ValueError):
        deploy_model(tiny, head="z")


def test_copy_weights_from_a_deployed_model_restores_every_head(tiny):
    """Fine-tuning starts from a deployed (mix-only) model: it holds all three paths, so every head comes back."""
    fresh = build_model("student", None, **TINY)
    copied = copy_weights(deploy_model(tiny), fresh)
    assert copied == sum(1 for layer in fresh.layers if layer.weights)
    x = _images(1, 32, 48, seed=4)
    ours, theirs = fresh(x), tiny(x)
    for head in HEADS:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours[head]), keras.ops.convert_to_numpy(theirs[head]),
                                   atol=1e-6)


def test_copy_weights_names_the_layer_that_does_not_fit(tiny):
    with pytest.raises(ValueError, match="weight shapes .* do not fit"):
        copy_weights(tiny, build_model("student", None, width=8, blocks=1))
    with pytest.raises(ValueError, match="h_res2_conv1.*missing"):
        copy_weights(tiny, build_model("student", None, width=4, blocks=2))


# ---------------------------------------------------------------------------------------------- layers
def test_instance_norm_normalises_each_image_and_channel():
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 10.0, 0.5])[None, None, None, :] * np.array([1.0, 5.0])[:, None, None, None]
    shift = np.array([3.0, -7.0, 0.5])[None, None, None, :] + np.array([0.0, 20.0])[:, None, None, None]
    x = (rng.normal(size=(2, 6, 7, 3)) * scale + shift).astype(np.float32)
    y = keras.ops.convert_to_numpy(InstanceNorm()(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, atol=1e-3)
    # Per image: the second image's statistics do not leak into the first.
    y0 = keras.ops.convert_to_numpy(InstanceNorm()(x[:1]))
    np.testing.assert_allclose(y0, y[:1], atol=1e-5)


def test_save_load_round_trip_keeps_custom_layers_and_outputs(tiny, tmp_path):
    path = tmp_path / "tiny.keras"
    tiny.save(path)
    loaded = keras.models.load_model(path)
    x = _images(1, 32, 48, seed=4)
    for name in HEADS:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)[name]),
                                   keras.ops.convert_to_numpy(tiny(x)[name]), atol=1e-6)
    assert infer_preset(loaded) == infer_preset(tiny)
    deployed = tmp_path / "deploy.keras"
    deploy_model(loaded).save(deployed)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.models.load_model(deployed)(x))[..., 0],
                               keras.ops.convert_to_numpy(tiny(x)["mix"])[..., 1], atol=1e-5)


# ---------------------------------------------------------------------------------------------- profile
def test_profile_reports_parameters_and_flops():
    model = build_model("student", 32, **TINY)
    info = profile(model, 32)
    assert info["params"] == info["trainable_params"] == model.count_params()
    assert info["gflops"] > 0 and info["weights_mib"] > 0 and info["activations_mib"] > 0
    assert profile(model, 32, flops=False).keys() >= {"params", "weights_mib"}


def test_flops_scale_with_the_image_area(tiny):
    small, large = count_flops(tiny, 32), count_flops(tiny, 64)
    assert small > 0
    assert 3.6 < large / small < 4.4
