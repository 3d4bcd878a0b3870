"""One inference interface over Keras and ONNX Runtime (TensorRT: its one-line refusal without a GPU)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CPU_KINDS, REPO, TINY_THRESHOLD, fake_cpu
from crackseg.engines import (DEFAULT_THRESHOLD, EngineError, Engine, OpenVinoEngine, backends, choose_backend,
                              fast_onnx_for, int8_onnx_for, open_engine, register_backend)
from crackseg.tensorrt import tensorrt_status


def images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.fixture(scope="module")
def keras_engine(tiny_model):
    return open_engine(str(tiny_model["keras"]))


@pytest.fixture(scope="module")
def onnx_engine(tiny_model):
    return open_engine(str(tiny_model["onnx"]), backend="onnx")


def test_backends_and_threshold_from_card(keras_engine, onnx_engine):
    assert keras_engine.backend == "keras" and onnx_engine.backend == "onnx"
    assert keras_engine.threshold == onnx_engine.threshold == TINY_THRESHOLD
    assert keras_engine.name == onnx_engine.name == "tiny"
    assert set(backends()) >= {"keras", "onnx", "openvino", "tensorrt"}


def test_threshold_override_and_default(tiny_model, tmp_path):
    assert open_engine(str(tiny_model["onnx"]), threshold=0.7).threshold == 0.7
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_model["onnx"], bare)
    assert open_engine(str(bare)).threshold == DEFAULT_THRESHOLD
    with pytest.raises(EngineError, match="threshold"):
        open_engine(str(bare), threshold=1.5)


def test_predict_any_size_matches_across_backends(keras_engine, onnx_engine):
    for image in images([(37, 53), (64, 64), (101, 30)]):
        a, b = keras_engine.predict(image), onnx_engine.predict(image)
        assert a.shape == b.shape == image.shape[:2] and a.dtype == b.dtype == np.float32
        assert np.abs(a - b).max() <= 1e-3
        assert 0 <= a.min() and a.max() <= 1
        assert keras_engine.mask(a).dtype == bool


def test_predict_batch_mixed_sizes_equals_single(onnx_engine):
    batch = images([(40, 48), (40, 48), (33, 21), (40, 48)], seed=1)
    together = onnx_engine.predict_batch(batch)
    assert [p.shape for p in together] == [(40, 48), (40, 48), (33, 21), (40, 48)]
    for image, prob in zip(batch, together):
        assert np.abs(onnx_engine.predict(image) - prob).max() <= 1e-5


def test_keras_source_on_onnx_backend_uses_a_temporary_export(tiny_model, monkeypatch):
    import crackseg.onnx_export

    exported = []

    def fake_export(net, out_path, opset=17):  # the real conversion is tested in test_export.py; it takes ~15 s
        exported.append(out_path)
        shutil.copyfile(tiny_model["onnx"], out_path)
        return out_path

    monkeypatch.setattr(crackseg.onnx_export, "export_onnx", fake_export)
    engine = open_engine(str(tiny_model["keras"]), backend="onnx")
    assert engine.backend == "onnx" and engine.threshold == TINY_THRESHOLD and exported[0].is_file()
    assert engine.predict(images([(32, 48)])[0]).shape == (32, 48)
    engine.close()
    assert not exported[0].parent.exists()  # the temporary folder goes with the engine


def test_preset_gives_an_untrained_model():
    engine = open_engine("student", backend="keras")
    assert engine.name == "student-untrained" and engine.threshold == DEFAULT_THRESHOLD
    assert engine.predict(images([(24, 28)])[0]).shape == (24, 28)
    with pytest.raises(EngineError, match="no_such_preset"):
        open_engine("no_such_preset", backend="keras")


def test_bad_inputs_give_one_line_errors(tiny_model, tmp_path, onnx_engine):
    with pytest.raises(EngineError, match="missing.onnx: model file not found"):
        open_engine(str(tmp_path / "missing.onnx"))
    with pytest.raises(EngineError, match="unknown model format"):
        choose_backend(str(tiny_model["card"]))
    with pytest.raises(EngineError, match="unknown backend"):
        open_engine(str(tiny_model["onnx"]), backend="magic")
    with pytest.raises(EngineError, match="RGB uint8"):
        onnx_engine.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(EngineError, match="RGB uint8"):
        onnx_engine.predict(np.zeros((10, 10), np.uint8))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="broken.onnx"):
        open_engine(str(broken))
    shutil.copyfile(tiny_model["onnx"], tmp_path / "badcard.onnx")
    (tmp_path / "badcard.json").write_text(json.dumps({"threshold": "high"}))
    with pytest.raises(EngineError, match="badcard.json.*threshold"):
        open_engine(str(tmp_path / "badcard.onnx"))


def test_choose_backend():
    assert choose_backend("weights/student.engine") == "tensorrt"
    assert choose_backend("x.keras") == "keras"
    # CPU-only machine with OpenVINO installed: the measured-fastest CPU runtime (README.md (Inference speed)) is the
    # default.
    assert choose_backend("x.onnx") == "openvino"
    assert choose_backend("student") == "openvino"


def test_tensorrt_backend_without_tensorrt_says_so(tiny_model):
    if tensorrt_status()[0]:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(EngineError, match="^TensorRT: "):
        open_engine(str(tiny_model["onnx"]), backend="tensorrt")


def test_register_backend_extends_auto_free_choice(tiny_model):
    class Constant(Engine):
        backend = "constant"

        def __init__(self, path_or_preset, threshold=None):
            super().__init__("constant", threshold or 0.5)

        def _infer(self, batch):
            return np.full(batch.shape[:3] + (1,), 0.25, np.float32)

    register_backend("constant", Constant)
    try:
        prob = open_engine(str(tiny_model["onnx"]), backend="constant").predict(images([(7, 9)])[0])
        assert prob.shape == (7, 9) and np.all(prob == 0.25)
    finally:
        from crackseg import engines

        engines._BACKENDS.pop("constant")


def channel_mean_model(output: str = "nhw1"):
    """A hand-built ONNX model: the crack map is the channel mean of ``image``, declared as tf2onnx declares it.

    ``output``: "nhw1" (N, H, W, 1), the right shape; "unit_axis" (1, N, H, W, 1), what tf2onnx's transpose
    optimiser sometimes left (same pixels); "transposed" (N, W, H, 1), a genuinely wrong map.
    """
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[3], keepdims=1)]
    dims = ["batch", "height", "width", 1]
    if output == "unit_axis":
        nodes += [helper.make_node("Unsqueeze", ["mean", "axis0"], ["crack"])]
        dims = [1, "batch", "height", "width", 1]
    elif output == "transposed":
        nodes += [helper.make_node("Transpose", ["mean"], ["crack"], perm=[0, 2, 1, 3])]
        dims = ["batch", "width", "height", 1]
    else:
        nodes += [helper.make_node("Identity", ["mean"], ["crack"])]
    graph = helper.make_graph(
        nodes, "channel_mean",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("crack", TensorProto.FLOAT, dims)],
        initializer=[onnx.numpy_helper.from_array(np.array([0], np.int64), "axis0")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_an_output_that_is_not_nhw1_is_refused_naming_the_file(tmp_path, backend):
    import onnx

    good, bad = tmp_path / "good.onnx", tmp_path / "unit_axis.onnx"
    onnx.save(channel_mean_model("nhw1"), str(good))
    onnx.save(channel_mean_model("unit_axis"), str(bad))
    image = images([(32, 48)])[0]
    assert open_engine(str(good), backend=backend).predict(image).shape == (32, 48)
    with pytest.raises(EngineError, match=r"unit_axis.onnx: output of shape \(1, 1, 32, 48, 1\)") as caught:
        open_engine(str(bad), backend=backend).predict(image)
    assert "\n" not in str(caught.value)


def test_bf16_runs_on_openvino_where_the_cpu_has_it_and_is_refused_elsewhere(tiny_model, cpu_kind):
    image = images([(40, 56)])[0]
    reference = open_engine(str(tiny_model["onnx"]), backend="openvino")
    engine = open_engine(str(tiny_model["onnx"]), precision="bf16")  # auto: OpenVINO on a CPU machine
    has_bf16 = "BF16" in CPU_KINDS[cpu_kind][1]
    assert engine.backend == "openvino" and engine.precision == ("bf16" if has_bf16 else "fp32")
    assert engine.describe().endswith(f", {engine.precision})") and reference.precision == "fp32"
    # bf16 keeps 8 mantissa bits: probabilities within a few hundredths of fp32
    np.testing.assert_allclose(engine.predict(image), reference.predict(image), atol=0.05)
    with pytest.raises(EngineError, match="precision bf16 needs the openvino backend, not onnx"):
        open_engine(str(tiny_model["onnx"]), backend="onnx", precision="bf16")
    choices = r"\('auto', 'fp32', 'bf16', 'int8'\)"
    with pytest.raises(EngineError, match=rf"unknown precision 'fp16'; choose one of {choices}"):
        open_engine(str(tiny_model["onnx"]), precision="fp16")
    with pytest.raises(EngineError, match="unknown OpenVINO precision 'fp16'"):  # the class itself checks it too
        OpenVinoEngine(str(tiny_model["onnx"]), precision="fp16")


def test_sibling_exports_are_named_from_any_of_them():
    assert fast_onnx_for("w/student.onnx").as_posix() == "w/student_fast.onnx"
    assert int8_onnx_for("w/student.onnx").as_posix() == "w/student_int8.onnx"
    assert int8_onnx_for("w/student_fast.onnx").as_posix() == "w/student_int8.onnx"
    assert fast_onnx_for("w/student_int8.onnx").as_posix() == "w/student_fast.onnx"
    assert int8_onnx_for("w/student_int8.onnx").as_posix() == "w/student_int8.onnx"


def test_int8_runs_the_quantised_model_beside_the_onnx_and_refuses_a_stale_one(tiny_model, tmp_path, cpu_kind):
    import onnx
    import onnx.numpy_helper

    from crackseg.io import sha256
    from crackseg.quantize import quantize_int8

    for name in ("tiny.onnx", "tiny.json"):
        shutil.copyfile(tiny_model["folder"] / name, tmp_path / name)
    given = tmp_path / "tiny.onnx"
    with pytest.raises(EngineError, match=r"tiny_int8\.xml: int8 model not found; write it with .*--cpu_int8"):
        open_engine(str(given), precision="int8")

    calibration = images([(48, 64)] * 3, seed=1)
    out = quantize_int8(given, tmp_path / "tiny_int8.onnx", calibration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.onnx", "tiny_int8.onnx"]  # no scratch
    graph = onnx.load(str(out)).graph
    convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in graph.node)
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) >= 2 * convs  # weights and inputs of each
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)  # int8 weights stored
    # in 7 bits: full-range weights overflow the 16-bit pair sums of CPUs without VNNI (AVX2)
    weights = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64

    image = images([(40, 56)], seed=2)[0]
    reference = open_engine(str(given), backend="openvino")
    engine = open_engine(str(given), precision="int8")  # auto: OpenVINO on a CPU machine
    assert engine.backend == "openvino" and engine.precision == "int8" and engine.model_file == str(out)
    mixed = "+bf16" if "BF16" in CPU_KINDS[cpu_kind][1] else ""
    assert engine.threshold == TINY_THRESHOLD and engine.describe().endswith(f"(tiny_int8.onnx, int8{mixed})")
    assert engine.config["INFERENCE_PRECISION_HINT"] == ("bf16" if mixed else "f32")  # the unquantised ops
    prob = engine.predict(image)
    assert prob.shape == (40, 56) and np.abs(prob - reference.predict(image)).mean() < 0.05
    assert open_engine(str(out), backend="openvino").precision == "int8"  # the int8 file itself: int8 whatever asked
    with pytest.raises(EngineError, match="precision int8 needs the openvino backend, not onnx"):
        open_engine(str(given), backend="onnx", precision="int8")
    with pytest.raises(EngineError, match="give that .onnx"):
        open_engine(str(tiny_model["keras"]), backend="openvino", precision="int8")

    # A retrained model beside the old int8 file: the cards name different trained files, so it is refused.
    (tmp_path / "tiny.json").write_text(json.dumps({"model": "tiny.keras", "sha256": "a" * 64, "threshold": 0.4,
                                                    "exports": {"onnx": {"file": "tiny.onnx",
                                                                         "sha256": sha256(given)}}}))
    (tmp_path / "tiny_int8.json").write_text(json.dumps({"model": "tiny.keras", "sha256": "b" * 64, "threshold": 0.4,
                                                         "exports": {"onnx_int8": {"sha256": sha256(out)}}}))
    with pytest.raises(EngineError, match=r"tiny_int8\.onnx: made from another model than tiny\.onnx"):
        open_engine(str(given), precision="int8")


def test_engines_module_does_not_import_tensorflow():
    code = ("import sys; import crackseg.engines, crackseg.export, crackseg.measure, crackseg.stream, crackseg.viz, "
            "crackseg.onnx_export, crackseg.parity, crackseg.quantize, crackseg.tensorrt, crackseg.precision; "
            "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnxruntime', 'tensorrt') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------- TensorRT, simulated
def simulated_tensorrt(calls: dict):
    """Stand-ins for ``tensorrt`` and ``pycuda.driver`` with the API surface our code uses (TensorRT 10 names).

    "Device" memory is host memory behind integer addresses; the execution context runs ONNX Runtime on whatever
    the bound input address holds and writes the bound output address. It exercises our control flow (profiles,
    calibrator batches, name-based tensor addresses, buffer growth, batching); it is no substitute for a GPU run.
    """
    import pickle
    import types

    import onnx
    import onnxruntime as ort

    memory: dict[int, np.ndarray] = {}

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.buf = np.zeros(int(nbytes), np.uint8)
            self.address = 4096 * (max(memory, default=0) // 4096 + 1)  # fresh, never reused
            memory[self.address] = self.buf

        def __int__(self):
            return self.address

        def free(self):
            memory.pop(self.address, None)

    def raw(host):
        return np.ascontiguousarray(host).view(np.uint8).ravel()

    class Context:
        def push(self):
            calls["push"] = calls.get("push", 0) + 1

        def pop(self):
            calls["pop"] = calls.get("pop", 0) + 1

        def detach(self):
            calls["detach"] = True

    cuda = types.ModuleType("pycuda.driver")
    cuda.Error = type("Error", (RuntimeError,), {})
    cuda.init = lambda: None
    cuda.Device = type("Device", (), {"__init__": lambda self, i: None, "count": staticmethod(lambda: 1),
                                      "name": lambda self: "Simulated GPU",
                                      "retain_primary_context": lambda self: Context()})
    cuda.mem_alloc = DeviceAllocation
    cuda.pagelocked_empty = lambda count, dtype: np.zeros(count, dtype)
    cuda.Stream = type("Stream", (), {"handle": 0, "synchronize": lambda self: None})

    def htod(dev, host, stream=None):
        data = raw(host)
        memory[int(dev)][:data.size] = data

    def dtoh(host, dev, stream=None):
        host.view(np.uint8).ravel()[:] = memory[int(dev)][:host.nbytes]

    cuda.memcpy_htod = htod
    cuda.memcpy_htod_async = htod
    cuda.memcpy_dtoh_async = dtoh
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.nptype = lambda dtype: np.float32
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.name, self.shapes = name, (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.int8_calibrator, self.calibration_profile = set(), [], None, None

        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

    class Network:
        onnx_bytes = b""

        def get_input(self, i):
            return types.SimpleNamespace(name=onnx.load_from_string(self.onnx_bytes).graph.input[i].name)

        @property
        def num_outputs(self):
            return len(onnx.load_from_string(self.onnx_bytes).graph.output)

        def get_output(self, i):
            value = onnx.load_from_string(self.onnx_bytes).graph.output[i]
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
            return types.SimpleNamespace(name=value.name, shape=shape)

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse(self, data):
            self.network.onnx_bytes = data
            return True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        create_builder_config = staticmethod(Config)
        create_optimization_profile = staticmethod(Profile)

        def build_serialized_network(self, network, config):
            calls["flags"] = sorted(config.flags)
            if "int8" in config.flags:
                calib = config.int8_calibrator
                batch_shape = config.calibration_profile.shapes[1]
                assert calib.get_batch_size() == batch_shape[0]
                calls["calibration_batches"] = 0
                while (pointers := calib.get_batch([config.calibration_profile.name])) is not None:
                    data = memory[pointers[0]][:int(np.prod(batch_shape)) * 4].view(np.float32)
                    assert -1.0 <= data.min() and data.max() <= 1.0  # prepared images, [-1, 1]
                    calls["calibration_batches"] += 1
                calib.write_calibration_cache(b"simulated scales")
            profile = config.profiles[0]
            return pickle.dumps({"onnx": network.onnx_bytes, "input": profile.name, "shapes": profile.shapes})

    class Engine:
        def __init__(self, blob):
            self.blob = pickle.loads(blob)
            self.names = [self.blob["input"], "crack"]
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "input" if name == self.blob["input"] else "output"

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_profile_shape(self, name, index):
            return [list(s) for s in self.blob["shapes"]]

        def create_execution_context(self):
            return ExecutionContext(self)

    class ExecutionContext:
        def __init__(self, engine):
            self.engine, self.shape, self.addresses = engine, None, {}
            self.session = ort.InferenceSession(engine.blob["onnx"], providers=["CPUExecutionProvider"])

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape if name == self.engine.blob["input"] else self.shape[:3] + (1,)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            count = int(np.prod(self.shape))
            x = memory[self.addresses[self.engine.blob["input"]]][:count * 4].view(np.float32).reshape(self.shape)
            y = self.session.run(None, {"image": x})[0]
            memory[self.addresses["crack"]][:y.nbytes] = raw(y)
            calls["executions"] = calls.get("executions", 0) + 1
            return True

    trt.Builder, trt.OnnxParser = Builder, Parser
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, blob: Engine(blob)})
    return trt, pycuda, cuda


def test_tensorrt_code_paths_on_a_simulated_runtime(tiny_model, synthetic_data, tmp_path, monkeypatch):
    import onnx

    from crackseg import tensorrt
    from crackseg.card import write_export_card
    from crackseg.data import sample_images
    from crackseg.tensorrt import build_tensorrt_engine

    calls: dict = {}
    trt, pycuda, cuda = simulated_tensorrt(calls)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(tensorrt, "_TRT_LOGGER", None)

    engine_path, cache = tmp_path / "tiny_int8.engine", tmp_path / "tiny_int8.calib"
    calibration = sample_images(str(synthetic_data), 6, "train", None)
    build_tensorrt_engine(tiny_model["onnx"], engine_path, "int8", calibration, calibration_size=32,
                          calibration_batch=2, calibration_cache=cache, min_size=16, opt_size=32, max_size=128,
                          max_batch=2)
    assert engine_path.is_file() and cache.read_bytes() == b"simulated scales"
    assert calls["calibration_batches"] == 3 and calls["flags"] == ["fp16", "int8"] and calls["network_flags"] == 0

    write_export_card(tiny_model["onnx"], engine_path, "tensorrt", {"precision": "int8"})  # as TensorRT.py does
    engine = open_engine(str(engine_path))  # auto: .engine -> tensorrt
    reference = open_engine(str(tiny_model["onnx"]))
    assert engine.backend == "tensorrt" and engine.max_batch == 2 and engine.precision == "int8"
    assert reference.precision == "fp32"
    batch = images([(40, 52), (40, 52), (40, 52), (100, 120)], seed=3)
    for image, prob in zip(batch, engine.predict_batch(batch)):  # 3 of one size at max batch 2, then a larger one
        assert prob.shape == image.shape[:2]
        assert np.abs(prob - reference.predict(image)).max() <= 1e-5
    assert calls["executions"] == 3
    with pytest.raises(EngineError, match="optimization profile"):
        engine.predict(images([(200, 64)])[0])
    engine.close()
    assert calls["push"] == calls["pop"] and calls["detach"]

    unit_axis = tmp_path / "unit_axis.onnx"  # refused before a build, as ONNX Runtime / OpenVINO refuse it to run
    onnx.save(channel_mean_model("unit_axis"), str(unit_axis))
    with pytest.raises(EngineError, match=r"unit_axis.onnx: output 'crack' has shape \(1, -1, -1, -1, 1\)"):
        build_tensorrt_engine(unit_axis, None, "fp32", min_size=16, opt_size=32, max_size=128)


# ---------------------------------------------------------------------------------------------- precision=auto
def test_precision_words_and_the_old_alias():
    from crackseg.precision import normalize_precision, openvino_cpu_config

    assert normalize_precision("f32") == normalize_precision("FP32") == "fp32"
    assert normalize_precision("auto") == "auto" and normalize_precision("int8") == "int8"
    with pytest.raises(EngineError, match="unknown precision 'int4'"):
        normalize_precision("int4")
    assert openvino_cpu_config("fp32") == {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's own word stays inside
    assert openvino_cpu_config("bf16") == {"INFERENCE_PRECISION_HINT": "bf16"}


def _int8_beside(tmp_path, tiny_model, f1_delta, ir=False):
    """tiny.onnx + its card, and a tiny_int8.onnx (``ir``: a tiny_int8.xml IR) whose card records ``f1_delta``
    (None: no validation record)."""
    from crackseg.io import sha256

    for name in ("tiny.onnx", "tiny.json"):
        shutil.copyfile(tiny_model["folder"] / name, tmp_path / name)
    # stands in for an int8 model: auto only reads its card
    if ir:
        import openvino as ov

        int8 = tmp_path / "tiny_int8.xml"
        ov.save_model(ov.Core().read_model(str(tiny_model["onnx"])), str(int8))
    else:
        int8 = tmp_path / "tiny_int8.onnx"
        shutil.copyfile(tiny_model["onnx"], int8)
    card = {**json.loads((tmp_path / "tiny.json").read_text()), "sha256": "a" * 64}  # the trained file's
    onnx_entry = {"onnx": {"file": "tiny.onnx", "sha256": sha256(tmp_path / "tiny.onnx")}}  # as TensorRT.py records
    (tmp_path / "tiny.json").write_text(json.dumps({**card, "exports": onnx_entry}))
    entry = {"file": int8.name, "sha256": sha256(int8)}
    if f1_delta is not None:
        entry["validation"] = {"images": 42, "f1_delta": f1_delta}
    exports = {"openvino_int8" if ir else "onnx_int8": entry}
    (tmp_path / "tiny_int8.json").write_text(json.dumps({**card, "exports": exports}))
    return tmp_path / "tiny.onnx"


@pytest.mark.parametrize("units, avx2, caps, beside, f1_delta, chosen, because", [
    (["amx_int8", "avx512_vnni"], False, ("FP32", "BF16"), "onnx", -0.001, "int8",
     "CPU has amx_int8/avx512_vnni; tiny_int8.onnx validation F1 -0.10 pt vs fp32 on 42 images"),
    (["avx512_vnni"], False, ("FP32", "BF16"), "onnx", -0.02, "bf16", "loses 2.00 pt validation F1, more than 0.5 pt"),
    (["avx_vnni"], False, ("FP32",), "onnx", None, "fp32", "card records no validation F1"),
    ([], False, ("FP32", "BF16"), "onnx", -0.001, "bf16", "no int8 dot-product units (VNNI / AMX) or AVX2"),
    ([], False, ("FP32",), "onnx", -0.001, "fp32", "OpenVINO reports no BF16"),
    # AVX2 without VNNI: int8 only from the full-int8 IR (NNCF's overflow fix), never from a Conv-only QDQ .onnx
    ([], True, ("FP32",), "onnx", -0.001, "fp32", "only the full-int8 tiny_int8.xml is taken there, a QDQ"),
    ([], True, ("FP32",), "xml", -0.001, "int8", "CPU has avx2 (no VNNI / AMX); tiny_int8.xml validation F1 -0.10 pt"),
])
def test_auto_precision_follows_the_cpu_and_the_int8_card(tiny_model, tmp_path, monkeypatch, units, avx2, caps,
                                                         beside, f1_delta, chosen, because):
    """``beside``: the int8 model next to tiny.onnx, a QDQ ``tiny_int8.onnx`` or a full-int8 IR ``tiny_int8.xml``."""
    from crackseg import engines

    fake_cpu(monkeypatch, frozenset(units) | ({"avx2", "fma"} if avx2 else set()), caps)
    given = _int8_beside(tmp_path, tiny_model, f1_delta, ir=beside == "xml")
    precision, reason = engines.auto_precision(str(given))
    assert precision == chosen and reason.startswith(f"auto: {chosen} (") and because in reason, reason
    engine = open_engine(str(given), precision="auto")
    assert engine.precision == chosen and engine.choice == reason
    assert engine.describe().endswith(reason) and "\n" not in engine.describe()
    if chosen == "int8":
        assert Path(engine.model_file).name == f"tiny_int8.{beside}"


def test_avx2_int8_means_avx2_without_dot_product_units():
    from crackseg.precision import avx2_int8

    assert avx2_int8(frozenset({"avx2", "fma"})) is True
    assert avx2_int8(frozenset({"avx2", "fma", "avx512_vnni"})) is False  # the VNNI path, not the AVX2 one
    assert avx2_int8(frozenset({"avx2", "avx_vnni"})) is False
    assert avx2_int8(frozenset({"sse4_2"})) is False


def test_auto_refuses_an_int8_model_of_another_model_and_names_the_missing_one(tiny_model, tmp_path, monkeypatch):
    from crackseg import engines

    fake_cpu(monkeypatch, *CPU_KINDS["amx"])
    given = _int8_beside(tmp_path, tiny_model, 0.0)
    card = json.loads((tmp_path / "tiny_int8.json").read_text())
    (tmp_path / "tiny_int8.json").write_text(json.dumps({**card, "sha256": "b" * 64}))
    precision, reason = engines.auto_precision(str(given))
    assert precision != "int8" and "made from another model" in reason
    (tmp_path / "tiny_int8.onnx").unlink()
    precision, reason = engines.auto_precision(str(given))
    assert precision != "int8" and "no tiny_int8.xml beside tiny.onnx" in reason and "--cpu_int8" in reason


def test_auto_on_a_backend_without_precisions_is_fp32_and_says_so(tiny_model):
    engine = open_engine(str(tiny_model["onnx"]), backend="onnx", precision="auto")
    assert engine.precision == "fp32" and engine.choice == "auto: fp32 (the onnx backend runs fp32 only)"
    assert open_engine(str(tiny_model["onnx"]), backend="onnx", precision="f32").precision == "fp32"  # old word


# ---------------------------------------------------------------------------------------------- throughput, cache
def test_predict_many_gives_predict_in_order_for_mixed_sizes(tiny_model, tmp_path):
    batch = images([(40, 48), (33, 21), (40, 48), (64, 64), (40, 48)], seed=4)
    engine = open_engine(str(tiny_model["onnx"]), backend="openvino", precision="fp32")
    many = list(engine.predict_many(iter(batch)))
    assert [p.shape for p in many] == [i.shape[:2] for i in batch]
    for image, prob in zip(batch, many):
        np.testing.assert_allclose(prob, engine.predict(image), atol=1e-5)
    assert list(engine.predict_many(batch, jobs=1))[1].shape == (33, 21)
    assert list(engine.predict_many([])) == []
    stopped = engine.predict_many(batch)  # a caller that stops early leaves nothing running
    assert next(stopped).shape == (40, 48)
    stopped.close()
    with pytest.raises(EngineError, match="image 1: expected RGB uint8"):
        list(engine.predict_many([batch[0], np.zeros((8, 8), np.uint8)]))
    onnx_engine = open_engine(str(tiny_model["onnx"]), backend="onnx")  # the sequential default of every backend
    for image, prob in zip(batch, onnx_engine.predict_many(batch)):
        np.testing.assert_allclose(prob, onnx_engine.predict(image), atol=1e-5)


def test_compiled_models_are_cached_where_asked(tiny_model, tmp_path, monkeypatch):
    from crackseg.engines import default_cache_dir

    cache = tmp_path / "cache"
    engine = OpenVinoEngine(str(tiny_model["onnx"]), cache_dir=str(cache))
    engine.predict(images([(32, 48)])[0])
    assert engine.config["CACHE_DIR"] == str(cache) and any(cache.iterdir())  # the compiled blob is there
    again = OpenVinoEngine(str(tiny_model["onnx"]), cache_dir=str(cache))
    np.testing.assert_allclose(again.predict(images([(32, 48)])[0]), engine.predict(images([(32, 48)])[0]),
                               atol=1e-6)
    assert "CACHE_DIR" not in OpenVinoEngine(str(tiny_model["onnx"]), cache_dir="").config
    monkeypatch.setenv("CRACKSEG_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == str(tmp_path / "env" / "openvino")
    monkeypatch.setenv("CRACKSEG_CACHE", "")
    assert default_cache_dir() == ""


# ---------------------------------------------------------------------------------------------- file vs card
def _stale_onnx_beside_a_newer_card(tiny_model, tmp_path) -> Path:
    """tiny.onnx exported from an earlier model, beside the card Train_3 wrote for a newer tiny.keras (its own
    sha256, no export entries yet: TensorRT.py not run, or killed before writing)."""
    from crackseg.card import write_card

    shutil.copyfile(tiny_model["keras"], tmp_path / "tiny.keras")
    with open(tmp_path / "tiny.keras", "ab") as f:
        f.write(b"retrained")  # other bytes: another model as far as the card goes
    write_card(tmp_path / "tiny.keras", {"threshold": 0.4})
    shutil.copyfile(tiny_model["onnx"], tmp_path / "tiny.onnx")
    return tmp_path / "tiny.onnx"


@pytest.mark.parametrize("backend", ["onnx", "openvino", "auto"])
def test_a_stale_onnx_beside_a_newer_card_is_refused_in_one_line(tiny_model, tmp_path, backend):
    given = _stale_onnx_beside_a_newer_card(tiny_model, tmp_path)
    with pytest.raises(EngineError, match=r"tiny\.json: describes tiny\.keras but records no sha256 for tiny\.onnx")\
            as caught:
        open_engine(str(given), backend=backend)
    assert "\n" not in str(caught.value) and "TensorRT.py" in str(caught.value)


def test_an_export_that_differs_from_its_card_entry_is_refused(tiny_model, tmp_path):
    from crackseg.card import write_export_card

    for name in ("tiny.onnx", "tiny.keras", "tiny.json"):
        shutil.copyfile(tiny_model["folder"] / name, tmp_path / name)
    write_export_card(tmp_path / "tiny.keras", tmp_path / "tiny.onnx", "onnx", {})
    assert open_engine(str(tmp_path / "tiny.onnx"), backend="onnx").threshold == TINY_THRESHOLD  # as recorded: runs
    with open(tmp_path / "tiny.onnx", "ab") as f:
        f.write(b"\0")  # changed after its card entry (a re-export killed half-way, an edit)
    for backend in ("onnx", "openvino"):
        with pytest.raises(EngineError, match=r"tiny\.json: sha256 does not match tiny\.onnx"):
            open_engine(str(tmp_path / "tiny.onnx"), backend=backend)
    # the fast export OpenVINO reads instead of the given file is checked against its own card as well
    shutil.copyfile(tiny_model["onnx"], tmp_path / "tiny.onnx")
    write_export_card(tmp_path / "tiny.keras", tmp_path / "tiny.onnx", "onnx", {})
    shutil.copyfile(tiny_model["onnx"], tmp_path / "tiny_fast.onnx")
    write_export_card(tmp_path / "tiny.keras", tmp_path / "tiny_fast.onnx", "onnx_fast", {})
    with open(tmp_path / "tiny_fast.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineError, match=r"tiny_fast\.json: sha256 does not match tiny_fast\.onnx"):
        open_engine(str(tmp_path / "tiny.onnx"), backend="openvino")


def test_the_card_check_hashes_a_file_once_per_version(tiny_model, tmp_path, monkeypatch):
    from crackseg import card as cards

    shutil.copyfile(tiny_model["onnx"], tmp_path / "tiny.onnx")
    shutil.copyfile(tiny_model["keras"], tmp_path / "tiny.keras")
    cards.write_export_card(tmp_path / "tiny.keras", tmp_path / "tiny.onnx", "onnx", {})
    calls = []
    real = cards.sha256
    monkeypatch.setattr(cards, "sha256", lambda path: calls.append(Path(path).name) or real(path))
    for _ in range(3):
        open_engine(str(tmp_path / "tiny.onnx"), backend="onnx").close()
    assert calls.count("tiny.onnx") == 1  # size and mtime unchanged: the cached digest
    (tmp_path / "tiny.onnx").write_bytes((tmp_path / "tiny.onnx").read_bytes())  # rewritten: hashed again
    open_engine(str(tmp_path / "tiny.onnx"), backend="onnx").close()
    assert calls.count("tiny.onnx") == 2


def test_a_card_without_hashes_vouches_for_nothing_and_refuses_nothing(tiny_model):
    engine = open_engine(str(tiny_model["onnx"]), backend="onnx")  # tiny.json: a threshold only
    assert engine.threshold == TINY_THRESHOLD


@pytest.mark.parametrize("f1_delta", [float("nan"), "0.001", True])
def test_an_int8_card_whose_f1_delta_is_not_a_number_is_unknown_and_auto_does_not_pick_int8(
        tiny_model, tmp_path, monkeypatch, f1_delta):
    from crackseg import engines

    monkeypatch.setattr(engines, "int8_units", lambda *a: ["amx_int8"])
    monkeypatch.setattr(engines, "openvino_capabilities", lambda *a: ("FP32",))
    given = _int8_beside(tmp_path, tiny_model, 0.0)
    card = json.loads((tmp_path / "tiny_int8.json").read_text())
    card["exports"]["onnx_int8"]["validation"]["f1_delta"] = f1_delta
    (tmp_path / "tiny_int8.json").write_text(json.dumps(card))  # NaN is written as the JSON token NaN
    precision, reason = engines.auto_precision(str(given))
    assert precision == "fp32" and "records no validation F1" in reason and "unknown" in reason, reason
