"""Keras -> ONNX export: checker, dynamic shapes, parity with Keras; TensorRT.py without TensorRT."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import REPO, TINY_THRESHOLD
from crackseg import export as ex
from crackseg.engines import KerasEngine, OnnxEngine, read_model_card


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


def test_parity_check_on_real_images(tiny_model, synthetic_data):
    reference = KerasEngine(str(tiny_model["keras"]))
    candidate = OnnxEngine(str(tiny_model["onnx"]))
    images = ex.sample_images(str(synthetic_data), 3, "val", None)
    assert len(images) == 3 and images[0].dtype == np.uint8
    result = ex.parity_check(reference, candidate, images, reference.threshold)
    assert result["passed"], ex.format_parity(result)
    assert result["max_abs_diff"] <= 1e-3
    assert result["mask_diff_pixels"] == result["mask_diff_borderline"]  # only pixels within 1e-3 of the threshold
    assert result["threshold"] == TINY_THRESHOLD


def test_parity_check_catches_a_different_model(tiny_model, synthetic_data):
    class Shifted:
        backend = "shifted"

        def predict(self, image):
            return reference.predict(image) + 0.01

    reference = OnnxEngine(str(tiny_model["onnx"]))
    images = ex.sample_images(str(synthetic_data), 2, "train", None)
    result = ex.parity_check(reference, Shifted(), images, 0.5)
    assert not result["passed"] and "FAIL" in ex.format_parity(result)


def test_export_card_keeps_threshold_and_records_the_export(tiny_model, tmp_path):
    out = tmp_path / "copy.onnx"
    shutil.copyfile(tiny_model["onnx"], out)
    card_file = ex.write_export_card(tiny_model["keras"], out, "onnx", {"opset": 17})
    card = json.loads(card_file.read_text())
    assert card_file == tmp_path / "copy.json"
    assert card["threshold"] == TINY_THRESHOLD
    assert card["exports"]["onnx"]["file"] == "copy.onnx" and len(card["exports"]["onnx"]["sha256"]) == 64
    assert read_model_card(out)["threshold"] == TINY_THRESHOLD


def test_square_crop_and_tensorrt_unavailable_message():
    image = np.zeros((30, 50, 3), np.uint8)
    assert ex.square_crop(image, 40).shape == (40, 40, 3)
    assert ex.square_crop(np.zeros((300, 500, 3), np.uint8), 64).shape == (64, 64, 3)
    available, line = ex.tensorrt_status()
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

    if ex.tensorrt_status()[0]:
        return
    # An engine asked for where TensorRT cannot run: one line, non-zero exit; the ONNX path needs no TensorFlow.
    failed = run_script(f"--model={out}", f"--engine={tmp_path / 'net.engine'}", "--precision=fp16",
                        f"--data={synthetic_data}", "--lists=none")
    assert failed.returncode != 0
    assert failed.stderr.strip().startswith("error: cannot build") and len(failed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "net.engine").exists()


def test_tensorrt_script_refuses_to_overwrite_shipped_onnx_with_a_preset():
    done = run_script("--model=student")
    assert done.returncode != 0 and "untrained preset" in done.stderr
