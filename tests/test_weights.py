"""The weights that ship in weights/: every model file there loads, has its preset's parameter count (the student's
1,178,601; the teacher's), matches the sha256 its model card records, and segments an image the same way as the
.keras original.

Each model file has a card beside it (``student.json`` for student.keras and student.onnx, ``student_fast.json``
for student_fast.onnx, ...): a model file without a card, or a card naming a missing file, fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

WEIGHTS = REPO / "weights"
STUDENT_PARAMS = 1_178_601  # model.PRESETS["student"]: `python -m model`
PRESET_PARAMS = {"student": STUDENT_PARAMS, "teacher_cpu": 3_636_441, "teacher": 32_804_745,  # four-head networks
                 "lite0_unet": 3_670_820, "lite2_unet": 5_257_268}
MODEL_SUFFIXES = (".keras", ".onnx", ".engine", ".xml")

pytestmark = pytest.mark.skipif(not (WEIGHTS / "student.keras").is_file(),
                                reason="no trained weights in this checkout (weights/student.keras)")


def shipped_files() -> list[Path]:
    """The model files in weights/."""
    return sorted(p for p in WEIGHTS.glob("*") if p.suffix in MODEL_SUFFIXES) if WEIGHTS.is_dir() else []


def onnx_parameter_count(path: Path) -> int:
    """Trainable numbers in an ONNX file: float initializers of rank >= 1 with more than one element (shape and
    epsilon constants are scalars or tiny integer tensors)."""
    import onnx
    from onnx import TensorProto

    total = 0
    for init in onnx.load(str(path)).graph.initializer:
        if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and init.dims:
            size = int(np.prod(init.dims))
            if size > 1:
                total += size
    return total


def test_cards_name_only_shipped_files():
    assert shipped_files(), "weights/ holds no model file"
    for card_file in WEIGHTS.glob("*.json"):
        card = json.loads(card_file.read_text())
        named = [card["model"]] + [entry["file"] for entry in card.get("exports", {}).values()]
        missing = [name for name in named if not (WEIGHTS / name).is_file()]
        assert not missing, f"{card_file.name} names files that do not ship: {missing}"


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.name)
def test_shipped_file_matches_card_and_runs(path: Path):
    from crackseg.card import read_card
    from crackseg.engines import open_engine

    card = read_card(path, verify=True)  # sha256 of this very file, as recorded when it was written
    expected = PRESET_PARAMS[card["preset"]]
    assert card["params"] == expected
    if path.suffix == ".keras":
        from crackseg.train_steps import load_keras_model

        assert load_keras_model(path).count_params() == expected  # all heads, as trained
    elif path.suffix == ".onnx" and "_int8" not in path.stem and not card["preset"].endswith("_unet"):
        # tf2onnx stores identical initializers once: the biases of convolutions that feed an instance norm stay at
        # zero (the norm subtracts any per-channel constant, so their gradient is 0) and merge (144 numbers here).
        assert 0.995 * expected <= onnx_parameter_count(path) <= expected
    elif path.suffix == ".onnx" and "_int8" not in path.stem:
        # a pretrained teacher's BatchNorms fold into its convolutions (4 numbers per channel become 1) and only the
        # mix head ships: fewer numbers, never more
        assert 0.8 * expected <= onnx_parameter_count(path) <= expected
    backend = {".keras": "keras", ".onnx": "onnx"}.get(path.suffix, "auto")
    if path.stem.endswith("_fast"):
        backend = "openvino"
    engine = open_engine(str(path), backend)
    try:
        assert engine.threshold == pytest.approx(card["threshold"])
        image = _pavement(96, 128)
        prob = engine.predict(image)
        assert prob.shape == (96, 128) and prob.dtype == np.float32
        assert 0.0 <= float(prob.min()) and float(prob.max()) <= 1.0
    finally:
        engine.close()


def test_exports_agree_with_keras():
    """Every shipped export segments one image like the .keras model its card names (student.onnx like
    student.keras, teacher.onnx like teacher.keras; int8: most pixels, fp32: all but a few)."""
    from crackseg.card import read_card
    from crackseg.engines import open_engine

    files = shipped_files()
    image = _pavement(128, 160)
    expected_of: dict[str, np.ndarray] = {}
    for path in files:
        if path.suffix not in (".onnx", ".xml"):  # student_int8.xml: the full-int8 OpenVINO IR
            continue
        keras_file = WEIGHTS / read_card(path)["model"]
        if keras_file.name not in expected_of:
            reference = open_engine(str(keras_file), "keras")
            try:
                expected_of[keras_file.name] = reference.predict(image)
            finally:
                reference.close()
        expected = expected_of[keras_file.name]
        engine = open_engine(str(path), "openvino" if path.stem.endswith(("_fast", "_int8")) else "onnx")
        try:
            prob = engine.predict(image)
        finally:
            engine.close()
        agree = float(((prob >= engine.threshold) == (expected >= engine.threshold)).mean())
        if "_int8" in path.stem:
            assert agree >= 0.97, f"{path.name}: masks agree on {agree:.1%} of pixels"
        else:
            assert np.abs(prob - expected).max() < 1e-3, path.name
            assert agree >= 0.999, f"{path.name}: masks agree on {agree:.1%} of pixels"


def _pavement(height: int, width: int) -> np.ndarray:
    """A grey textured road image with one dark diagonal crack (deterministic)."""
    import cv2

    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(135, 18, (height, width, 3)), 0, 255).astype(np.uint8)
    image = cv2.GaussianBlur(image, (3, 3), 0)
    cv2.line(image, (5, 10), (width - 10, height - 8), (55, 55, 55), 2)
    return image
