"""TensorRT: availability, its logger, the INT8 entropy calibrator and the engine build from an ONNX file.

TensorRT and pycuda are imported inside the functions that need them, so a Jetson with TensorRT and no TensorFlow can
build an engine from an exported ``.onnx``, and CPU machines import this module freely. The code uses the TensorRT
>= 8.5 name-based API (``build_serialized_network``, optimization profiles by tensor name,
``IInt8EntropyCalibrator2``); it was written from the TensorRT 10 Python API documentation and has not been run on
this project's CPU-only machines.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import square_crop
from .errors import EngineError, ExportError
from .io import atomic_write_bytes
from .parity import PARITY_TOLERANCE
from .preprocess import MULTIPLE, prepare


class TensorRTUnavailable(EngineError):
    """No TensorRT / pycuda / NVIDIA GPU here; the message is one line saying which."""


def trt_logger(trt):
    """The one ``trt.Logger`` (warnings and errors) every builder and runtime of this process shares."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


_TRT_LOGGER = None


def import_tensorrt():
    """(tensorrt, pycuda.driver) or ``TensorRTUnavailable`` with one line saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT: not available here (no 'tensorrt' Python package; on Jetson it "
                                  "comes with JetPack, elsewhere see requirements-jetson.txt)") from None
    major, minor = (int(p) for p in trt.__version__.split(".")[:2])
    if (major, minor) < (8, 5):
        raise TensorRTUnavailable(f"TensorRT: version {trt.__version__} is too old (the name-based tensor API "
                                  f"needs >= 8.5)")
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise TensorRTUnavailable("TensorRT: pycuda is not installed (needed for GPU buffers)") from None
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            raise TensorRTUnavailable("TensorRT: no NVIDIA GPU found")
    except cuda.Error as exc:
        raise TensorRTUnavailable(f"TensorRT: no usable NVIDIA GPU / driver ({exc})") from None
    return trt, cuda


def tensorrt_status() -> tuple[bool, str]:
    """(available, one line) without raising."""
    try:
        trt, cuda = import_tensorrt()
    except TensorRTUnavailable as exc:
        return False, str(exc)
    return True, f"TensorRT {trt.__version__} on {cuda.Device(0).name()}"


def make_entropy_calibrator(trt, cuda, batches: np.ndarray, batch_size: int, cache_path: str | Path | None):
    """An ``IInt8EntropyCalibrator2`` that feeds ``batches`` (prepared float32 NHWC, all one size) to the builder,
    ``batch_size`` images at a time, and keeps its scale cache in ``cache_path`` (reused when present)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base initialised explicitly
            self.batches = np.ascontiguousarray(batches, dtype=np.float32)
            self.index = 0
            self.device_input = cuda.mem_alloc(self.batches[:batch_size].nbytes)
            self.cache_path = Path(cache_path) if cache_path else None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):  # one input: TensorRT passes its name, unused here
            if self.index + batch_size > len(self.batches):
                return None  # no more data: calibration ends
            cuda.memcpy_htod(self.device_input, np.ascontiguousarray(self.batches[self.index:self.index + batch_size]))
            self.index += batch_size
            return [int(self.device_input)]

        def read_calibration_cache(self):
            if self.cache_path and self.cache_path.is_file():
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if self.cache_path:
                atomic_write_bytes(self.cache_path, bytes(cache))

    return EntropyCalibrator()


def build_tensorrt_engine(onnx_path: str | Path, engine_path: str | Path | None, precision: str = "fp32",
                          calibration_images: list[np.ndarray] | None = None, calibration_size: int = 448,
                          calibration_batch: int = 4, calibration_cache: str | Path | None = None,
                          min_size: int = 32, opt_size: int = 448, max_size: int = 1024, max_batch: int = 4,
                          workspace_mb: int = 2048) -> bytes:
    """Build a serialized TensorRT engine from an ONNX file (optionally written atomically to ``engine_path``).

    One optimization profile covers batch 1..``max_batch`` and square-or-not H, W in ``min_size..max_size``
    (tuned for ``opt_size``). ``int8`` needs ``calibration_images`` (real RGB uint8 training images): they are
    centre-cropped to ``calibration_size`` and fed through an entropy calibrator; layers without INT8 kernels
    fall back to FP16.
    """
    if precision not in PARITY_TOLERANCE:
        raise EngineError(f"precision must be one of {sorted(PARITY_TOLERANCE)}, got {precision!r}")
    for name, value in (("min_size", min_size), ("opt_size", opt_size), ("max_size", max_size),
                        ("calibration_size", calibration_size)):
        if value % MULTIPLE or value <= 0:
            raise EngineError(f"{name} must be a positive multiple of {MULTIPLE}, got {value}")
    if not min_size <= opt_size <= max_size:
        raise EngineError(f"need min_size <= opt_size <= max_size, got {min_size}, {opt_size}, {max_size}")
    if precision == "int8" and not calibration_images and not (calibration_cache and Path(calibration_cache).is_file()):
        raise EngineError("int8 needs calibration images (--calib_data) or an existing calibration cache")
    trt, cuda = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it set.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    crack = next((o for o in outputs if o.name == "crack"), outputs[0])
    if len(crack.shape) != 4:  # refused before a long build, as the other backends refuse it at inference
        raise EngineError(f"{onnx_path}: output '{crack.name}' has shape {tuple(crack.shape)}; expected "
                          f"(N, H, W, 1) -- re-export it with TensorRT.py")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    input_name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, min_size, min_size, 3), (1, opt_size, opt_size, 3),
                      (max_batch, max_size, max_size, 3))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)

    cuda_context = cuda.Device(0).retain_primary_context()
    cuda_context.push()  # the calibrator's buffers live in the context TensorRT builds in
    try:
        calibrator = None
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            crops = [square_crop(image, calibration_size) for image in calibration_images or []]
            batches = prepare(np.stack(crops))[0] if crops else np.zeros((0, calibration_size, calibration_size, 3),
                                                                         np.float32)
            batch = max(1, min(calibration_batch, len(crops) or 1, max_batch))
            calib_profile = builder.create_optimization_profile()
            fixed = (batch, calibration_size, calibration_size, 3)
            calib_profile.set_shape(input_name, fixed, fixed, fixed)
            config.set_calibration_profile(calib_profile)
            calibrator = make_entropy_calibrator(trt, cuda, batches, batch, calibration_cache)
            config.int8_calibrator = calibrator  # the local name keeps the Python object alive during the build
        serialized = builder.build_serialized_network(network, config)
    finally:
        cuda_context.pop()
        cuda_context.detach()
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed ({precision}); see the TensorRT log above")
    data = bytes(serialized)
    del calibrator
    if engine_path:
        atomic_write_bytes(engine_path, data)
    return data
