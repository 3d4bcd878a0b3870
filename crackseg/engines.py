"""One inference interface over every model format: Keras/TF, ONNX Runtime, OpenVINO (CPU) and TensorRT.

    engine = open_engine("weights/student.onnx")          # backend from the suffix; threshold from the model card
    prob = engine.predict(rgb_uint8)                       # float32 HxW crack probability
    mask = prob >= engine.threshold

``path_or_preset`` is a model file (``.keras`` / ``.onnx`` / ``.engine``) or a preset name of ``model.PRESETS``
(``"student"``): an untrained deployable network, so a device's toolchain can be checked before any training.

Every backend uses ``crackseg.preprocess.prepare`` / ``crop_back``, so all formats see the same pixels. This module
never imports TensorFlow, ONNX Runtime or TensorRT at import time: each backend imports its runtime when opened.

Adding a backend (e.g. a fast CPU runtime): subclass ``Engine``, implement ``_infer``, and call
``register_backend(name, opener)``; ``choose_backend`` decides what ``backend="auto"`` means.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

from .card import CardError, card_path, read_card
from .preprocess import crop_back, prepare

DEFAULT_THRESHOLD = 0.5
KERAS_SUFFIXES = (".keras", ".h5")
ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


class EngineError(ValueError):
    """A model that cannot be opened or an input it cannot take; the message names the file."""


# ---------------------------------------------------------------------------------------------- model cards
def model_card_path(model_path: str | Path) -> Path:
    """The JSON model card beside a model file: ``weights/student.onnx`` -> ``weights/student.json``."""
    return card_path(model_path)


def read_model_card(model_path: str | Path) -> dict:
    """The model card of ``model_path`` (``{}`` when there is none); a bad card raises one line naming it.

    ``student.keras`` and ``student.onnx`` share ``student.json``: its top-level ``sha256`` is the file named in
    ``model``; exported files are listed under ``exports`` with their own sha256.
    """
    if not model_card_path(model_path).is_file():
        return {}
    try:
        card = read_card(model_path)
    except CardError as exc:
        raise EngineError(str(exc)) from None
    if "threshold" in card:
        threshold = card["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise EngineError(f"{model_card_path(model_path)}: field 'threshold' must be a number in (0, 1), "
                              f"got {threshold!r}")
    return card


def resolve_threshold(card: dict, override: float | None) -> float:
    if override is not None:
        if not 0 < float(override) < 1:
            raise EngineError(f"threshold must be in (0, 1), got {override!r}")
        return float(override)
    return float(card.get("threshold", DEFAULT_THRESHOLD))


# ---------------------------------------------------------------------------------------------- the interface
class Engine:
    """A loaded model. Subclasses implement ``_infer`` on a prepared batch; everything else is shared."""

    backend = "none"
    max_batch: int | None = None  # None: any batch size
    precision = "f32"  # the arithmetic inference runs in (OpenVINO may run bf16, a TensorRT engine what it was built as)

    def _identify(self, path_or_preset: str, threshold: float | None) -> None:
        """Name, model card and threshold of a model file (card beside it) or an untrained preset (no card)."""
        preset = is_preset(path_or_preset)
        card = {} if preset else read_model_card(path_or_preset)
        name = f"{path_or_preset}-untrained" if preset else Path(path_or_preset).stem
        Engine.__init__(self, name, resolve_threshold(card, threshold), card, str(path_or_preset))

    def __init__(self, name: str, threshold: float, card: dict | None = None, source: str = ""):
        self.name = name
        self.threshold = float(threshold)
        self.card = dict(card or {})
        self.source = source
        self.model_file = source or name  # the file errors name; a backend that reads another one says which

    # -- to implement
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 NHWC in [-1, 1] (H, W multiples of 4) -> crack probability (N, H, W, 1) or (N, H, W)."""
        raise NotImplementedError

    # -- shared
    def predict(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> float32 HxW crack probability."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Several RGB uint8 images -> their HxW probabilities; images of one size run as one batch."""
        for i, image in enumerate(images):
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                raise EngineError(f"image {i}: expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        results: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape[:2], []).append(i)
        for indices in by_size.values():
            step = self.max_batch or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                batch, size = prepare(np.stack([images[i] for i in chunk]))
                raw = np.asarray(self._infer(batch))
                if raw.shape not in (batch.shape[:3], batch.shape[:3] + (1,)):
                    # Not reshaped to fit: an output of another shape is a broken export, not a layout detail.
                    raise EngineError(f"{self.model_file}: output of shape {raw.shape} for an input of {batch.shape}; "
                                      f"expected (N, H, W, 1) -- re-export the model (TensorRT.py)")
                probs = crop_back(raw, size).astype(np.float32, copy=False)
                for i, prob in zip(chunk, probs):
                    results[i] = prob
        return results  # type: ignore[return-value]

    def mask(self, prob: np.ndarray) -> np.ndarray:
        """Boolean crack mask at this engine's threshold."""
        return np.asarray(prob) >= self.threshold

    def describe(self) -> str:
        return f"{self.name} [{self.backend}] threshold {self.threshold:g}"

    def close(self) -> None:
        """Release runtime resources (sessions, GPU buffers); the engine cannot predict afterwards."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- Keras / TF
def is_preset(path_or_preset: str) -> bool:
    """A bare name with no file behind it: a preset of ``model.PRESETS`` (checked when it is built)."""
    return not Path(path_or_preset).suffix and not Path(path_or_preset).exists()


def load_deployable_keras(path_or_preset: str):
    """A deployable Keras model (one output ``crack``, any H x W multiple of 4) from a ``.keras`` file or a preset.

    A saved training model (several heads) is turned into the deployable one with ``model.deploy_model``.
    """
    try:
        import keras

        import model as mcff  # registers the custom layers before loading
    except ImportError as exc:
        raise EngineError(f"{path_or_preset}: the Keras backend needs TensorFlow/Keras and the model package "
                          f"({exc}); on an edge device use the exported .onnx or .engine") from None
    if is_preset(path_or_preset):
        try:
            return mcff.deploy_model(mcff.build_model(path_or_preset, None))
        except ValueError as exc:
            raise EngineError(f"{path_or_preset}: not a model file and not a preset ({exc})") from None
    path = Path(path_or_preset)
    if not path.is_file():
        raise EngineError(f"{path}: model file not found")
    try:
        net = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises several types for broken or foreign files
        raise EngineError(f"{path}: cannot load Keras model ({type(exc).__name__}: {exc})") from None
    if len(net.outputs) != 1:
        net = mcff.deploy_model(net)
    return net


class KerasEngine(Engine):
    backend = "keras"

    def __init__(self, path_or_preset: str, threshold: float | None = None, net=None):
        """``net``: an already loaded deployable model of ``path_or_preset`` (saves loading it twice)."""
        import tensorflow as tf

        self._identify(path_or_preset, threshold)
        self.model = net if net is not None else load_deployable_keras(path_or_preset)
        # One traced graph for every batch and image size: no retracing per frame size.
        signature = (tf.TensorSpec((None, None, None, 3), tf.float32),)
        self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=signature)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch).numpy()


# ---------------------------------------------------------------------------------------------- ONNX Runtime
def onnx_file_for(path_or_preset: str) -> tuple[Path, str | None]:
    """An ONNX file for any source: itself, or a temporary export of a ``.keras`` file / preset.

    Returns (onnx path, temporary folder to delete when done or None).
    """
    path = Path(path_or_preset)
    if path.suffix.lower() in ONNX_SUFFIXES:
        if not path.is_file():
            raise EngineError(f"{path}: ONNX file not found")
        return path, None
    if path.suffix.lower() in KERAS_SUFFIXES or is_preset(path_or_preset):
        from .export import export_onnx

        tmp = tempfile.mkdtemp(prefix="crackseg_onnx_")
        try:
            out = export_onnx(load_deployable_keras(path_or_preset), Path(tmp) / "model.onnx")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out, tmp
    raise EngineError(f"{path}: cannot make an ONNX model from this file (expected .keras, .onnx or a preset)")


def onnx_providers() -> list[str]:
    """CUDA when ONNX Runtime has it, CPU always (TensorRT has its own backend here)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxEngine(Engine):
    backend = "onnx"

    def __init__(self, path_or_preset: str, threshold: float | None = None, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError(f"{path_or_preset}: the onnx backend needs onnxruntime ({exc})") from None
        self._identify(path_or_preset, threshold)
        onnx_path, tmp = onnx_file_for(path_or_preset)
        if tmp:
            self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers or onnx_providers())
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "crack" if "crack" in outputs else outputs[0]
        self.providers = self.session.get_providers()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None
        if hasattr(self, "_cleanup"):
            self._cleanup()


# ---------------------------------------------------------------------------------------------- OpenVINO (CPU)
FAST_ONNX_SUFFIX = "_fast"  # weights/student.onnx -> weights/student_fast.onnx (clean export, TensorRT.py --fast)
INT8_ONNX_SUFFIX = "_int8"  # weights/student.onnx -> weights/student_int8.onnx (QDQ int8, TensorRT.py --cpu_int8)


def _sibling(onnx_path: str | Path, suffix: str) -> Path:
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    for known in (FAST_ONNX_SUFFIX, INT8_ONNX_SUFFIX):
        if stem.endswith(known):
            if known == suffix:
                return onnx_path
            stem = stem[:-len(known)]
    return onnx_path.with_name(f"{stem}{suffix}{onnx_path.suffix}")


def fast_onnx_for(onnx_path: str | Path) -> Path:
    """The clean (fast-CPU) export that ships beside an ONNX file: ``student.onnx`` -> ``student_fast.onnx``."""
    return _sibling(onnx_path, FAST_ONNX_SUFFIX)


def int8_onnx_for(onnx_path: str | Path) -> Path:
    """The int8 QDQ model that ships beside an ONNX file: ``student.onnx`` (or ``student_fast.onnx``) ->
    ``student_int8.onnx``."""
    return _sibling(onnx_path, INT8_ONNX_SUFFIX)


def check_same_model(given: str | Path, sibling: Path) -> None:
    """Refuse a sibling export made from another model than ``given``: both cards name the trained file they come
    from by its sha256, so a re-trained student next to a stale ``student_int8.onnx`` is caught, not run."""
    if Path(given) == sibling or not model_card_path(sibling).is_file() or not model_card_path(given).is_file():
        return
    ours, theirs = read_model_card(given).get("sha256"), read_model_card(sibling).get("sha256")
    if ours and theirs and ours != theirs:
        raise EngineError(f"{sibling}: made from another model than {Path(given).name} (model card sha256 "
                          f"{theirs[:12]} vs {ours[:12]}); re-export it with TensorRT.py")


def openvino_cpu_config(precision: str = "f32") -> dict[str, str]:
    """OpenVINO CPU compile settings naming the inference precision explicitly: OpenVINO's own default on CPUs with
    avx512_bf16 or AMX is bf16, which changes the masks and fails fp32 parity checks."""
    return {"INFERENCE_PRECISION_HINT": precision}


class OpenVinoEngine(Engine):
    """OpenVINO on the CPU: the default on machines without an NVIDIA GPU (chosen by benchmark.py; README, Inference speed).

    Reads the clean export beside an ONNX file (``student_fast.onnx``: native InstanceNormalization and dilated
    convolutions) when it exists, else the file itself; a ``.keras`` file or preset is exported clean to a temporary
    file. One compiled model per input shape (static shapes compile to faster kernels), latency hint, one stream,
    ``threads`` inference threads (0: all cores). ``precision`` "f32" keeps the fp32 masks; "bf16" is only honoured
    on CPUs that report BF16 (AMX / AVX-512 BF16); "int8" reads the quantised ``student_int8.onnx`` beside the
    given ``.onnx`` (fast with VNNI / AMX, no faster than f32 without), refused when its card names another model.
    """

    backend = "openvino"
    max_shapes = 4  # compiled input shapes kept (a camera has one; evaluation folders a few)

    def __init__(self, path_or_preset: str, threshold: float | None = None, threads: int = 0,
                 precision: str = "f32"):
        try:
            import openvino as ov
        except ImportError as exc:
            raise EngineError(f"{path_or_preset}: the openvino backend needs openvino ({exc})") from None
        preset = is_preset(path_or_preset)
        self._identify(path_or_preset, threshold)
        path = Path(path_or_preset)
        if precision not in PRECISIONS:
            raise EngineError(f"{path_or_preset}: unknown OpenVINO precision {precision!r}; choose one of {PRECISIONS}")
        int8 = precision == "int8" or path.stem.endswith(INT8_ONNX_SUFFIX)
        if int8 and path.suffix.lower() not in ONNX_SUFFIXES:
            raise EngineError(f"{path_or_preset}: int8 runs the quantised {INT8_ONNX_SUFFIX}.onnx that TensorRT.py "
                              f"--cpu_int8 writes beside an .onnx; give that .onnx")
        if path.suffix.lower() in ONNX_SUFFIXES:
            if not path.is_file():
                raise EngineError(f"{path}: ONNX file not found")
            if int8:
                onnx_path = int8_onnx_for(path)
                if not onnx_path.is_file():
                    raise EngineError(f"{onnx_path}: int8 model not found; write it with "
                                      f"python TensorRT.py --model={path} --cpu_int8")
            else:
                onnx_path = fast_onnx_for(path) if fast_onnx_for(path).is_file() else path
            check_same_model(path, onnx_path)
        elif path.suffix.lower() in KERAS_SUFFIXES or preset:
            from .export import export_onnx

            tmp = tempfile.mkdtemp(prefix="crackseg_openvino_")
            self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, True)
            onnx_path = export_onnx(load_deployable_keras(path_or_preset), Path(tmp) / "model.onnx", clean=True)
        else:
            raise EngineError(f"{path}: the openvino backend reads .onnx, .keras or a preset")
        self.onnx_path = onnx_path
        if path.suffix.lower() in ONNX_SUFFIXES:  # errors name the file read (student_fast.onnx), not a temporary one
            self.model_file = str(onnx_path)
        self.core = ov.Core()
        capabilities = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self.precision = "bf16" if precision == "bf16" and "BF16" in capabilities else "f32"
        # int8 lives in the model's QDQ pairs; the ops between them (norms, gates) run at f32
        self.config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, **openvino_cpu_config(self.precision)}
        if int8:
            self.precision = "int8"
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = self.core.read_model(str(onnx_path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise EngineError(f"{onnx_path}: OpenVINO cannot read it ({exc})") from None
        self._compiled: dict[tuple[int, ...], object] = {}

    def _request(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            if len(self._compiled) >= self.max_shapes:
                self._compiled.pop(next(iter(self._compiled)))
            model = self.model.clone()
            model.reshape({model.inputs[0].any_name: list(shape)})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[shape] = compiled.create_infer_request()
        return self._compiled[shape]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        request = self._request(tuple(batch.shape))
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def describe(self) -> str:
        return f"{super().describe()} ({Path(self.onnx_path).name}, {self.precision})"

    def close(self) -> None:
        self._compiled.clear()
        self.model = None
        if hasattr(self, "_cleanup"):
            self._cleanup()


# ---------------------------------------------------------------------------------------------- TensorRT
class TensorRTEngine(Engine):
    """TensorRT >= 8.5 name-based tensor API (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).

    The runtime, engine, execution context, CUDA stream and buffers are created once; buffers grow only when a
    larger input arrives. Accepts a serialized engine, or an ONNX / Keras source that is built in memory (fp32).
    Written against the TensorRT 10 Python API documentation; not run on this project's CPU-only machines.
    """

    backend = "tensorrt"

    def __init__(self, path_or_preset: str, threshold: float | None = None):
        from .export import import_tensorrt

        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self._identify(path_or_preset, threshold)
        self.precision = self.card.get("exports", {}).get("tensorrt", {}).get("precision", "as built")

        cuda.init()
        # The primary context is the one TensorRT's CUDA runtime calls use; push/pop it around every call so the
        # engine works from whichever thread calls predict.
        self._cuda_context = cuda.Device(0).retain_primary_context()
        self._cuda_context.push()
        try:
            serialized = self._serialized_engine(path_or_preset)
            self._runtime = trt.Runtime(_trt_logger(trt))
            self.engine = self._runtime.deserialize_cuda_engine(serialized)
            if self.engine is None:
                raise EngineError(f"{path_or_preset}: TensorRT cannot deserialize the engine (built by another "
                                  f"TensorRT version or for another GPU?)")
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or not outputs:
                raise EngineError(f"{path_or_preset}: expected one input and an output, got {inputs} / {outputs}")
            self.input_name = inputs[0]
            self.output_name = "crack" if "crack" in outputs else outputs[0]
            self._extra_outputs = [n for n in outputs if n != self.output_name]
            self._min_shape, _, self._max_shape = (tuple(s) for s in
                                                   self.engine.get_tensor_profile_shape(self.input_name, 0))
            self.max_batch = int(self._max_shape[0])
            self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
            self._host: dict[str, np.ndarray] = {}
            self._device: dict[str, object] = {}
        finally:
            self._cuda_context.pop()

    def _serialized_engine(self, path_or_preset: str) -> bytes:
        path = Path(path_or_preset)
        if path.suffix.lower() in TENSORRT_SUFFIXES:
            if not path.is_file():
                raise EngineError(f"{path}: TensorRT engine not found")
            return path.read_bytes()
        from .export import build_tensorrt_engine

        onnx_path, tmp = onnx_file_for(path_or_preset)
        try:
            return build_tensorrt_engine(onnx_path, None, precision="fp32")
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _buffer(self, name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, object]:
        """Page-locked host + device buffer for ``name`` big enough for ``shape`` (grown, never per frame)."""
        count = int(np.prod(shape))
        if name not in self._host or self._host[name].size < count:
            if name in self._device:
                self._device[name].free()
            self._host[name] = self._cuda.pagelocked_empty(count, self._dtypes[name])
            self._device[name] = self._cuda.mem_alloc(self._host[name].nbytes)
            self.context.set_tensor_address(name, int(self._device[name]))
        return self._host[name], self._device[name]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, c = batch.shape
        lo, hi = self._min_shape, self._max_shape
        if not all(lo[i] <= v <= hi[i] for i, v in enumerate((n, h, w, c))):
            raise EngineError(f"{self.source}: input {n}x{h}x{w}x{c} is outside the engine's optimization profile "
                              f"{lo} .. {hi}; rebuild it with TensorRT.py --max_size / --max_batch")
        cuda = self._cuda
        self._cuda_context.push()
        try:
            self.context.set_input_shape(self.input_name, (n, h, w, c))
            host_in, dev_in = self._buffer(self.input_name, batch.shape)
            np.copyto(host_in[:batch.size].reshape(batch.shape), batch, casting="same_kind")
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            host_out, dev_out = self._buffer(self.output_name, out_shape)
            for extra in self._extra_outputs:  # every output needs an address even if unused
                self._buffer(extra, tuple(self.context.get_tensor_shape(extra)))
            cuda.memcpy_htod_async(dev_in, host_in[:batch.size], self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise EngineError(f"{self.source}: TensorRT execution failed")
            count = int(np.prod(out_shape))
            cuda.memcpy_dtoh_async(host_out[:count], dev_out, self.stream)
            self.stream.synchronize()
            return host_out[:count].reshape(out_shape).astype(np.float32)
        finally:
            self._cuda_context.pop()

    def close(self) -> None:
        if getattr(self, "_cuda_context", None) is None:
            return
        self._cuda_context.push()
        try:
            for buf in self._device.values():
                buf.free()
            self._device.clear()
            self.context = self.engine = None
        finally:
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None


def _trt_logger(trt):
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


_TRT_LOGGER = None


# ---------------------------------------------------------------------------------------------- choosing
_BACKENDS: dict[str, Callable[..., Engine]] = {
    "keras": KerasEngine,
    "onnx": OnnxEngine,
    "openvino": OpenVinoEngine,
    "tensorrt": TensorRTEngine,
}


def register_backend(name: str, opener: Callable[..., Engine]) -> None:
    """Add (or replace) a backend: ``opener(path_or_preset, threshold=...) -> Engine``."""
    _BACKENDS[name] = opener


def backends() -> list[str]:
    return list(_BACKENDS)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def default_cpu_backend() -> str:
    """The measured-fastest CPU runtime installed here (benchmark.py, README.md (Inference speed)): OpenVINO on the clean
    export, else ONNX Runtime. A machine whose ONNX Runtime has CUDA keeps ONNX Runtime (it runs on the GPU)."""
    if _has_module("onnxruntime"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "onnx"
    if _has_module("openvino"):
        return "openvino"
    return "onnx"


def choose_backend(path_or_preset: str) -> str:
    """What ``backend="auto"`` means: TensorRT for engines, Keras for ``.keras``; an ONNX file or a preset runs on
    the fastest CPU runtime installed (OpenVINO, then ONNX Runtime; ONNX Runtime when it has CUDA), a preset on
    Keras when neither is installed."""
    suffix = Path(path_or_preset).suffix.lower()
    if suffix in TENSORRT_SUFFIXES:
        return "tensorrt"
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix in ONNX_SUFFIXES:
        return default_cpu_backend()
    if is_preset(path_or_preset):
        return default_cpu_backend() if _has_module("onnxruntime") or _has_module("openvino") else "keras"
    raise EngineError(f"{path_or_preset}: unknown model format {suffix!r} (expected "
                      f"{', '.join(KERAS_SUFFIXES + ONNX_SUFFIXES + TENSORRT_SUFFIXES)} or a preset name)")


PRECISIONS = ("f32", "bf16", "int8")  # inference precision on the CPU; bf16 and int8 only through OpenVINO


def open_engine(path_or_preset: str, backend: str = "auto", threshold: float | None = None,
                precision: str = "f32") -> Engine:
    """Open a model file or preset on ``backend`` (``auto``, or one of ``backends()``).

    ``threshold`` overrides the model card's (default 0.5). ``precision="bf16"`` runs OpenVINO in bf16 where the CPU
    reports BF16 (about 1.9x its fp32 on AVX-512 BF16, README: Inference speed) and in f32 elsewhere, which
    ``describe()`` shows; ``precision="int8"`` runs the int8 model beside an ``.onnx`` on OpenVINO (1.7-2.1x f32
    with AVX-512 VNNI); other backends only run f32.
    """
    path_or_preset = str(path_or_preset)
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if not is_preset(path_or_preset) and not Path(path_or_preset).exists():
        raise EngineError(f"{path_or_preset}: model file not found")
    if backend == "auto":
        backend = choose_backend(path_or_preset)
    if backend not in _BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose auto or one of {backends()}")
    if precision == "f32":
        return _BACKENDS[backend](path_or_preset, threshold=threshold)
    if backend != OpenVinoEngine.backend:
        raise EngineError(f"precision {precision} needs the openvino backend, not {backend}")
    return _BACKENDS[backend](path_or_preset, threshold=threshold, precision=precision)

