"""Keras -> ONNX export (crackseg.onnx_export): checker, dynamic shapes, parity with Keras (crackseg.parity), model
cards of exports (crackseg.card), sampling real images (crackseg.data); TensorRT.py without TensorRT, and its
--cpu_int8 (crackseg.quantize)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import CPU_KINDS, REPO, TINY_THRESHOLD, fake_cpu
from crackseg import card as cards
from crackseg import data, parity, tensorrt
from crackseg import onnx_export as ex
from crackseg.card import CardError, read_card, write_card
from crackseg.engines import KerasEngine, OnnxEngine, read_model_card
from test_engines import channel_mean_model


def test_onnx_file_is_checker_clean_with_named_dynamic_dims(tiny_model):
    proto = onnx.load(str(tiny_model["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    summary = ex.onnx_summary(tiny_model["onnx"])
    assert summary["inputs"] == {"image": ["batch", "height", "width", 3]}
    assert summary["outputs"] == {"crack": ["batch", "height", "width", 1]}
    assert summary["opset"] == ex.OPSET


def test_dynamic_batch_and_size_match_keras(tiny_model):
    import keras

    import model  # noqa: F401  (registers the custom layers)

    net = keras.saving.load_model(tiny_model["keras"], compile=False)
    session = ort.InferenceSession(str(tiny_model["onnx"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 64, 64, 3), (3, 48, 80, 3), (2, 100, 36, 3)]:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        onnx_out = session.run(["crack"], {"image": x})[0]
        assert onnx_out.shape == shape[:3] + (1,)
        assert np.abs(onnx_out - net(x, training=False).numpy()).max() <= 1e-3


def test_student_clean_export_fuses_every_instance_norm_each_time(capsys):
    """tf2onnx's graph varies between conversions; the fusion, matched on the TensorFlow ops, must not."""
    from collections import Counter

    import model as mcff

    net = mcff.deploy_model(mcff.build_model("student", None))
    norms = [layer for layer in net.layers if isinstance(layer, mcff.InstanceNorm)]
    assert len(norms) == 48  # all three paths feed the mix head
    x = np.random.default_rng(1).uniform(-1, 1, (2, 40, 56, 3)).astype(np.float32)
    rng = np.random.default_rng(0)
    for attempt in range(3):
        if attempt:  # first gamma = 1 / beta = 0 (grappler folds them away), then trained-like weights
            for layer in norms:
                channels = layer.gamma.shape[0]
                layer.set_weights([1 + 0.3 * rng.standard_normal(channels), 0.2 * rng.standard_normal(channels)])
        proto = onnx.load_from_string(clean_export_bytes(net))
        ops = Counter(node.op_type for node in proto.graph.node)
        assert ops["InstanceNormalization"] == len(norms), (attempt, ops)
        assert ops["GlobalAveragePool"] == ops["Reciprocal"] == ops["ReduceMean"] == 0
        assert declared_outputs(proto) == {"crack": ["batch", "height", "width", 1]}
        for runtime in ("onnxruntime", "openvino"):
            out = ex.run_onnx(proto, x, runtime)
            assert out.shape == (2, 40, 56, 1)
            assert np.abs(out - net(x, training=False).numpy()).max() <= 1e-4
    assert "decomposed" not in capsys.readouterr().out  # the safety net never fired


def declared_outputs(proto) -> dict:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}


def clean_export_bytes(net) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        return ex.export_onnx(net, Path(folder) / "student_fast.onnx", clean=True).read_bytes()


def test_a_fusion_that_changes_the_output_falls_back_to_decomposed_norms(monkeypatch, tmp_path, capsys):
    from collections import Counter

    import model as mcff

    real_fuser = ex.instance_norm_fuser

    def wrong_epsilon_fuser(epsilons, fused):  # fuses every norm, with an epsilon far from the layers' one
        rewrite = real_fuser(epsilons, fused)

        def broken(g, ops):
            ops = rewrite(g, ops)
            for node in ops:
                if node.type == "InstanceNormalization":
                    node.set_attr("epsilon", 10.0)
            return ops

        return broken

    monkeypatch.setattr(ex, "instance_norm_fuser", wrong_epsilon_fuser)
    net = mcff.deploy_model(mcff.build_model("student", None, width=4, blocks=1))
    out = ex.export_onnx(net, tmp_path / "tiny_fast.onnx", clean=True)
    report = capsys.readouterr().out
    assert "fused instance norms the model differs from Keras" in report and "decomposed instead" in report
    proto = onnx.load(str(out))
    assert Counter(node.op_type for node in proto.graph.node)["InstanceNormalization"] == 0
    assert declared_outputs(proto) == {"crack": ["batch", "height", "width", 1]}


def test_an_output_with_a_unit_axis_is_conformed_to_nhw1():
    probe = np.random.default_rng(0).uniform(-1, 1, ex.PROBE_SHAPE).astype(np.float32)
    expected = probe.mean(axis=3, keepdims=True)
    proto = channel_mean_model("unit_axis")
    assert ex.run_onnx(proto, probe, "onnxruntime").shape == (1,) + expected.shape
    ex.conform_output(proto, probe)
    onnx.checker.check_model(proto, full_check=True)
    assert declared_outputs(proto) == {"crack": ["batch", "height", "width", 1]}
    assert ex.disagreement(proto, probe, expected, ("onnxruntime", "openvino")) is None
    single = probe[:1, :32, :48]
    assert ex.run_onnx(proto, single, "onnxruntime").shape == (1, 32, 48, 1)  # the repair is not fitted to the probe


def test_a_wrong_output_is_reported_not_reshaped():
    probe = np.random.default_rng(0).uniform(-1, 1, ex.PROBE_SHAPE).astype(np.float32)
    proto = channel_mean_model("transposed")
    ex.conform_output(proto, probe)
    problem = ex.disagreement(proto, probe, probe.mean(axis=3, keepdims=True), ("onnxruntime",))
    assert problem == "gives an output of shape (2, 96, 64, 1) in onnxruntime for an input of (2, 64, 96, 3); " \
                      "expected (2, 64, 96, 1)"


def test_parity_check_on_real_images(tiny_model, synthetic_data):
    reference = KerasEngine(str(tiny_model["keras"]))
    candidate = OnnxEngine(str(tiny_model["onnx"]))
    images = data.sample_images(str(synthetic_data), 3, "val", None)
    assert len(images) == 3 and images[0].dtype == np.uint8
    result = parity.parity_check(reference, candidate, images, reference.threshold)
    assert result["passed"], parity.format_parity(result)
    assert result["max_abs_diff"] <= 1e-3
    assert result["mask_diff_pixels"] == result["mask_diff_borderline"]  # only pixels within 1e-3 of the threshold
    assert result["threshold"] == TINY_THRESHOLD


def test_parity_check_catches_a_different_model(tiny_model, synthetic_data):
    class Shifted:
        backend = "shifted"

        def predict(self, image):
            return reference.predict(image) + 0.01

    reference = OnnxEngine(str(tiny_model["onnx"]))
    images = data.sample_images(str(synthetic_data), 2, "train", None)
    result = parity.parity_check(reference, Shifted(), images, 0.5)
    assert not result["passed"] and "FAIL" in parity.format_parity(result)


def test_export_card_keeps_threshold_and_records_the_export(tiny_model, tmp_path):
    out = tmp_path / "copy.onnx"
    shutil.copyfile(tiny_model["onnx"], out)
    card_file = cards.write_export_card(tiny_model["keras"], out, "onnx", {"opset": 17})
    card = json.loads(card_file.read_text())
    assert card_file == tmp_path / "copy.json"
    assert card["threshold"] == TINY_THRESHOLD
    assert card["exports"]["onnx"]["file"] == "copy.onnx" and len(card["exports"]["onnx"]["sha256"]) == 64
    assert read_model_card(out)["threshold"] == TINY_THRESHOLD


def test_export_card_of_a_retrained_model_replaces_the_stale_one(tiny_model, tmp_path):
    keras_file, fast_file = tmp_path / "net.keras", tmp_path / "net_fast.onnx"
    shutil.copyfile(tiny_model["keras"], keras_file)
    shutil.copyfile(tiny_model["onnx"], fast_file)
    write_card(keras_file, {"threshold": 0.3, "validation": {"f1": 0.5}})
    cards.write_export_card(keras_file, fast_file, "onnx_fast", {"opset": 17})
    cards.write_export_card(keras_file, fast_file, "onnx_fast", {"opset": 18})  # same model: the card is extended
    assert json.loads((tmp_path / "net_fast.json").read_text())["exports"]["onnx_fast"]["opset"] == 18

    keras_file.write_bytes(keras_file.read_bytes() + b"retrained")  # another model, with its own card
    write_card(keras_file, {"threshold": 0.6, "validation": {"f1": 0.7}})
    cards.write_export_card(keras_file, fast_file, "onnx_fast", {"opset": 17})
    card = read_card(fast_file, verify=True)
    assert card["threshold"] == 0.6 and card["validation"] == {"f1": 0.7}
    assert card["sha256"] == json.loads((tmp_path / "net.json").read_text())["sha256"]


def test_card_verifies_the_hash_recorded_for_each_file(tiny_model, tmp_path):
    keras_file, onnx_file, fast_file = tmp_path / "net.keras", tmp_path / "net.onnx", tmp_path / "net_fast.onnx"
    engine_file = tmp_path / "net_fp16.engine"
    shutil.copyfile(tiny_model["keras"], keras_file)
    shutil.copyfile(tiny_model["onnx"], onnx_file)
    shutil.copyfile(tiny_model["onnx"], fast_file)  # stands in for the clean export
    engine_file.write_bytes(b"serialized engine")
    write_card(keras_file, {"threshold": TINY_THRESHOLD})
    cards.write_export_card(keras_file, onnx_file, "onnx", {"opset": 17})  # net.json: .keras on top, .onnx in exports
    cards.write_export_card(keras_file, fast_file, "onnx_fast", {"opset": 17})  # net_fast.json
    cards.write_export_card(onnx_file, engine_file, "tensorrt", {"precision": "fp16"})  # net_fp16.json
    for model_file in (keras_file, onnx_file, fast_file, engine_file):
        assert read_card(model_file, verify=True)["threshold"] == TINY_THRESHOLD

    onnx_file.write_bytes(onnx_file.read_bytes() + b"tampered")
    with pytest.raises(CardError, match=r"net.json: sha256 does not match net.onnx \(") as caught:
        read_card(onnx_file, verify=True)
    assert "\n" not in str(caught.value)
    assert read_card(keras_file, verify=True)  # the .keras entry of the same card still holds

    unlisted = tmp_path / "net.h5"
    shutil.copyfile(tiny_model["keras"], unlisted)
    with pytest.raises(CardError, match="net.json: records no sha256 for net.h5"):
        read_card(unlisted, verify=True)


def test_square_crop_and_tensorrt_unavailable_message():
    image = np.zeros((30, 50, 3), np.uint8)
    assert data.square_crop(image, 40).shape == (40, 40, 3)
    assert data.square_crop(np.zeros((300, 500, 3), np.uint8), 64).shape == (64, 64, 3)
    available, line = tensorrt.tensorrt_status()
    if available:
        pytest.skip("TensorRT is installed here")
    assert line.startswith("TensorRT:") and "\n" not in line


def run_script(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "TensorRT.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_tensorrt_script_exports_checks_and_reports(tiny_model, synthetic_data, tmp_path):
    model = tmp_path / "net.keras"
    shutil.copyfile(tiny_model["keras"], model)
    shutil.copyfile(tiny_model["card"], tmp_path / "net.json")
    out = tmp_path / "net.onnx"
    done = run_script(f"--model={model}", f"--onnx={out}", f"--data={synthetic_data}", "--lists=none",
                      "--parity_images=2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "onnx.checker: ok" in done.stdout and "PASS" in done.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    card = json.loads((tmp_path / "net.json").read_text())
    assert card["threshold"] == TINY_THRESHOLD and card["exports"]["onnx"]["parity_vs_keras"]["passed"]
    status = [line for line in done.stdout.splitlines() if line.startswith("TensorRT")]
    assert len(status) == 1  # one line, whether TensorRT is here or not

    if tensorrt.tensorrt_status()[0]:
        return
    # An engine asked for where TensorRT cannot run: one line, non-zero exit; the ONNX path needs no TensorFlow.
    failed = run_script(f"--model={out}", f"--engine={tmp_path / 'net.engine'}", "--precision=fp16",
                        f"--data={synthetic_data}", "--lists=none")
    assert failed.returncode != 0
    assert failed.stderr.strip().startswith("error: cannot build") and len(failed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "net.engine").exists()


def test_tensorrt_script_writes_a_checked_cpu_int8_model_with_its_card(tiny_model, synthetic_data, tmp_path):
    from crackseg.engines import load_deployable_keras

    # An untrained network's output hovers at its threshold, where int8 rounding flips a few % of the pixels; one with
    # a strong crack bias in its heads is decisive, as a trained one mostly is (a failing check: the next test).
    net = load_deployable_keras(str(tiny_model["keras"]))
    for layer in net.layers:
        if layer.name.endswith("_head"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, bias + np.array([4.0, -4.0, 4.0], np.float32)])  # gate open, crack over bg
    model = tmp_path / "net.keras"
    net.save(model)
    write_card(model, {"threshold": TINY_THRESHOLD})
    done = run_script(f"--model={model}", f"--onnx={tmp_path / 'net.onnx'}", f"--data={synthetic_data}",
                      "--lists=none", "--parity_images=2", "--cpu_int8", "--calib_images=3", "--calib_size=64")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INT8: calibrating on 3 real training images (64^2 crops)" in done.stdout
    assert "parity openvino vs keras [int8] on 2 images" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".onnx", ".xml", ".bin")) == [
        "net.onnx", "net_fast.onnx", "net_int8.bin", "net_int8.xml"]
    card = read_card(tmp_path / "net_int8.xml")
    entry = card["exports"]["openvino_int8"]
    assert entry["file"] == "net_int8.xml" and entry["source"] == "net_fast.onnx" and len(entry["bin_sha256"]) == 64
    assert entry["calibration_images"] == 3 and entry["parity_vs_keras"]["passed"]
    assert entry["quantization"]["fake_quantize_nodes"] > 0 and entry["quantization"]["weights"] == "int8 per channel"
    # the F1 check --precision=auto relies on: fp32 and int8 on the full-size validation images, within 0.5 pt
    validation = entry["validation"]
    assert validation["images"] >= 1 and validation["full_size"] and validation["split"] == "val"
    assert validation["f1_delta"] == pytest.approx(validation["int8_f1"] - validation["fp32_f1"])
    assert validation["f1_delta"] >= -0.005 and "INT8: validation strict F1" in done.stdout
    assert card["sha256"] == read_card(model, verify=True)["sha256"]  # names the trained file it was made from
    read_card(tmp_path / "net_int8.xml", verify=True)  # and records its own hash
    assert card["threshold"] == TINY_THRESHOLD
    from crackseg.engines import auto_precision, open_engine

    engine = open_engine(str(tmp_path / "net.onnx"), precision="int8")
    assert engine.precision == "int8" and engine.model_file == str(tmp_path / "net_int8.xml")
    assert engine.predict(np.zeros((40, 56, 3), np.uint8)).shape == (40, 56)
    chosen, reason = auto_precision(str(tmp_path / "net.onnx"))
    from crackseg.precision import avx2_int8, int8_units

    if int8_units() or avx2_int8():  # a VNNI / AMX or AVX2 machine: the card's F1 lets auto take the IR
        assert chosen == "int8" and "net_int8.xml validation F1" in reason
    for kind, cpu in CPU_KINDS.items():  # and so on every kind of CPU, whichever this one is
        with pytest.MonkeyPatch.context() as patched:
            fake_cpu(patched, *cpu)
            chosen, reason = auto_precision(str(tmp_path / "net.onnx"))
        assert chosen == "int8" and "net_int8.xml validation F1" in reason, (kind, reason)

    refused = run_script(f"--model={tmp_path / 'net.onnx'}", "--cpu_int8", f"--data={synthetic_data}")
    assert refused.returncode != 0 and refused.stderr.strip().startswith("error: --cpu_int8 quantises the Keras")


def test_an_int8_model_that_fails_its_check_is_not_written(tiny_model, synthetic_data, tmp_path):
    model = tmp_path / "net.keras"
    shutil.copyfile(tiny_model["keras"], model)
    shutil.copyfile(tiny_model["card"], tmp_path / "net.json")
    (tmp_path / "net_int8.xml").write_bytes(b"the earlier int8 model")
    black = tmp_path / "black"  # calibration images unlike the real ones: activation ranges far too narrow
    black.mkdir()
    for i in range(3):
        cv2.imwrite(str(black / f"{i}.png"), np.zeros((64, 64, 3), np.uint8))
    done = run_script(f"--model={model}", f"--onnx={tmp_path / 'net.onnx'}", f"--data={synthetic_data}",
                      "--lists=none", "--parity_images=2", "--cpu_int8", f"--calib_data={black}", "--calib_size=64")
    # measured with four seeds: 11-30 % of the mask pixels flip (the check allows 1 %)
    assert done.returncode != 0 and "parity openvino vs keras [int8]" in done.stdout and "FAIL" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'net_int8.xml'}: not written")
    assert (tmp_path / "net_int8.xml").read_bytes() == b"the earlier int8 model"
    assert not (tmp_path / "net_int8.bin").exists()
    assert not (tmp_path / "net_int8.json").exists() and not list(tmp_path.glob(".net_int8*"))


def test_tensorrt_script_refuses_to_overwrite_shipped_onnx_with_a_preset():
    done = run_script("--model=student")
    assert done.returncode != 0 and "untrained preset" in done.stderr


def test_card_written_without_tensorflow_gets_its_flops_at_export(tiny_model, tmp_path):
    """Train_3 on a JAX GPU machine writes gflops: null; the export fills them in, leaving the model's hash valid."""
    from crackseg.engines import load_deployable_keras

    path = tmp_path / "student.keras"
    shutil.copyfile(tiny_model["keras"], path)
    net = load_deployable_keras(str(path))
    write_card(path, {"params": int(net.count_params()), "gflops": None, "flops_input_size": 32, "threshold": 0.4})
    assert cards.complete_card_facts(path, net) is True
    card = read_card(path, verify=True)
    assert card["gflops"] is not None and card["gflops"] > 0 and card["threshold"] == 0.4
    assert cards.complete_card_facts(path, net) is False  # already complete: untouched
    assert read_card(path) == card
