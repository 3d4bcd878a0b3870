"""crackseg.keras_io: the one Keras loader and the one Keras predict path, shared by training and the engines."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


def test_one_loader_and_one_predict_path_everywhere():
    from crackseg import engines, keras_io, train_steps, training

    assert engines.load_deployable_keras is keras_io.load_deployable_keras
    assert engines.is_preset is keras_io.is_preset
    assert train_steps.load_keras_model is keras_io.load_keras_model
    assert training.predict_probabilities is keras_io.predict_probabilities
    assert not hasattr(train_steps, "predict_crack")


def test_a_missing_file_is_an_engine_error_and_a_training_error(tmp_path):
    from crackseg.errors import EngineError, ModelFileError, TrainingError
    from crackseg.keras_io import load_deployable_keras, load_keras_model

    for load in (load_keras_model, load_deployable_keras):
        with pytest.raises(ModelFileError, match=r"nothing\.keras: model file not found") as info:
            load(tmp_path / "nothing.keras")
        assert isinstance(info.value, EngineError) and isinstance(info.value, TrainingError)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"broken\.keras: cannot load Keras model"):
        load_keras_model(tmp_path / "broken.keras")
    with pytest.raises(EngineError, match="not a model file and not a preset"):
        load_deployable_keras("no_such_preset")


def test_keras_engine_predicts_through_predict_probabilities(tiny_model):
    from crackseg.engines import KerasEngine
    from crackseg.keras_io import load_deployable_keras, predict_probabilities

    net = load_deployable_keras(str(tiny_model["keras"]))
    assert len(net.outputs) == 1
    engine = KerasEngine(str(tiny_model["keras"]), net=net)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30, 42, 3), dtype=np.uint8) for _ in range(3)]
    images.append(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    batch = engine.predict_batch(images)
    direct = predict_probabilities(net, images)
    one = [engine.predict(image) for image in images]
    for got, want, single, image in zip(batch, direct, one, images):
        assert got.shape == image.shape[:2] and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(single, want, atol=1e-5)  # batched by size = one at a time
    eager = np.asarray(net(engine_input(images[3]), training=False))[0, :17, :23, -1]
    np.testing.assert_allclose(one[3], eager, atol=1e-5)


def engine_input(image):
    from crackseg.preprocess import prepare

    return prepare(image)[0]


def test_importing_keras_io_and_engines_imports_no_keras():
    code = ("import sys; import crackseg.keras_io, crackseg.engines; "
            "print(any(m in sys.modules for m in ('keras', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
