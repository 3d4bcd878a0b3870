"""One inference interface over every model format: Keras/TF, ONNX Runtime, OpenVINO (CPU) and TensorRT.

    engine = open_engine("weights/student.onnx")          # backend from the suffix; threshold from the model card
    engine = open_engine("weights/student.onnx", precision="auto")  # fastest accurate precision for this CPU
    prob = engine.predict(rgb_uint8)                       # float32 HxW crack probability
    mask = prob >= engine.threshold
    for prob in engine.predict_many(images): ...           # throughput mode (OpenVINO: async requests in flight)

``path_or_preset`` is a model file (``.keras`` / ``.onnx`` / OpenVINO ``.xml`` / ``.engine``) or a preset name of
``model.PRESETS`` (``"student"``): an untrained deployable network, so a device's toolchain can be checked before any
training.

Every backend uses ``crackseg.preprocess.prepare`` / ``crop_back``, so all formats see the same pixels. This module
never imports TensorFlow, ONNX Runtime or TensorRT at import time: each backend imports its runtime when opened.

Adding a backend (e.g. a fast CPU runtime): subclass ``Engine``, implement ``_infer``, and call
``register_backend(name, opener)``; ``choose_backend`` decides what ``backend="auto"`` means.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .card import CardError, card_path, check_model_file, read_card
from .errors import EngineError
from .keras_io import is_preset, load_deployable_keras, predict_probabilities  # no Keras import until called
from .precision import (CPU_PRECISIONS, MAX_INT8_F1_DROP, PRECISIONS, avx2_int8, int8_units, normalize_precision,
                        openvino_capabilities, openvino_cpu_config)
from .preprocess import crop_back, prepare

__all__ = ["EngineError", "Engine", "open_engine", "PRECISIONS", "CPU_PRECISIONS", "openvino_cpu_config"]

DEFAULT_THRESHOLD = 0.5
KERAS_SUFFIXES = (".keras", ".h5")
ONNX_SUFFIXES = (".onnx",)
OPENVINO_SUFFIXES = (".xml",)  # OpenVINO IR (.xml + .bin beside it): the full-int8 model TensorRT.py --cpu_int8 writes
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")


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


def verify_model_file(model_path: str | Path) -> dict:
    """The card of ``model_path`` ({} without one) after checking that it vouches for this very file (sha256,
    cached by size and mtime: ``crackseg.card.check_model_file``); EngineError (one line) when it does not, e.g. a
    ``student.onnx`` left from an earlier model beside a newer card. ``open_engine`` checks every model it opens."""
    card = read_model_card(model_path)
    if card:
        try:
            check_model_file(model_path, card)
        except CardError as exc:
            raise EngineError(str(exc)) from None
    return card


def resolve_threshold(card: dict, override: float | None) -> float:
    if override is not None:
        if not 0 < float(override) < 1:
            raise EngineError(f"threshold must be in (0, 1), got {override!r}")
        return float(override)
    return float(card.get("threshold", DEFAULT_THRESHOLD))


# ---------------------------------------------------------------------------------------------- the interface
def check_images(images: list[np.ndarray]) -> None:
    """EngineError (one line) unless every image is RGB uint8 HxWx3."""
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise EngineError(f"image {i}: expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")


class Engine:
    """A loaded model. Subclasses implement ``_infer`` on a prepared batch; everything else is shared."""

    backend = "none"
    max_batch: int | None = None  # None: any batch size
    precision = "fp32"  # the arithmetic inference runs in (OpenVINO may run bf16 / int8, a TensorRT engine as built)
    choice = ""  # why this precision, when it was chosen automatically (precision="auto"); shown by describe()

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
        check_images(images)
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

    def predict_many(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Throughput mode: the probability of each image of ``images`` (any iterable, read lazily), in order.

        This default predicts one image after another; a backend with asynchronous inference (OpenVINO) keeps
        several requests in flight, so reading / decoding the next images and post-processing the finished ones
        overlap inference."""
        for image in images:
            yield self.predict(image)

    def mask(self, prob: np.ndarray) -> np.ndarray:
        """Boolean crack mask at this engine's threshold."""
        return np.asarray(prob) >= self.threshold

    def describe(self) -> str:
        text = f"{self.name} [{self.backend}] threshold {self.threshold:g}"
        return f"{text}; {self.choice}" if self.choice else text

    def close(self) -> None:
        """Release runtime resources (sessions, GPU buffers); the engine cannot predict afterwards."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- Keras / TF
# The one Keras loader and predict path (crackseg.keras_io; it imports Keras only when called).
class KerasEngine(Engine):
    backend = "keras"

    def __init__(self, path_or_preset: str, threshold: float | None = None, net=None):
        """``net``: an already loaded deployable model of ``path_or_preset`` (saves loading it twice)."""
        self._identify(path_or_preset, threshold)
        self.model = net if net is not None else load_deployable_keras(path_or_preset)

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Through ``crackseg.keras_io.predict_probabilities``, the predict path training validation and the card's
        threshold choice use too (images of one size batched, each size traced once)."""
        check_images(images)
        return predict_probabilities(self.model, [np.asarray(image) for image in images])

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch))


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
        from .onnx_export import export_onnx

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
INT8_ONNX_SUFFIX = "_int8"  # weights/student.onnx -> weights/student_int8.xml (full int8, TensorRT.py --cpu_int8)
INT8_EXPORTS = ("openvino_int8", "onnx_int8")  # model card entries of an int8 model (IR, then the older QDQ onnx)


def _sibling(onnx_path: str | Path, suffix: str, ext: str | None = None) -> Path:
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    ext = ext or onnx_path.suffix
    for known in (FAST_ONNX_SUFFIX, INT8_ONNX_SUFFIX):
        if stem.endswith(known):
            if known == suffix and ext == onnx_path.suffix:
                return onnx_path
            stem = stem[:-len(known)]
    return onnx_path.with_name(f"{stem}{suffix}{ext}")


def fast_onnx_for(onnx_path: str | Path) -> Path:
    """The clean (fast-CPU) export that ships beside an ONNX file: ``student.onnx`` -> ``student_fast.onnx``."""
    return _sibling(onnx_path, FAST_ONNX_SUFFIX, ".onnx")


def int8_onnx_for(onnx_path: str | Path) -> Path:
    """The int8 QDQ ONNX name beside an ONNX file: ``student.onnx`` (or ``student_fast.onnx``) ->
    ``student_int8.onnx`` (written before the full-int8 OpenVINO IR; still read when no IR is there)."""
    return _sibling(onnx_path, INT8_ONNX_SUFFIX, ".onnx")


def int8_ir_for(onnx_path: str | Path) -> Path:
    """The full-int8 OpenVINO IR beside an ONNX file: ``student.onnx`` -> ``student_int8.xml`` (+ ``.bin``)."""
    return _sibling(onnx_path, INT8_ONNX_SUFFIX, ".xml")


def int8_model_for(onnx_path: str | Path) -> Path:
    """The int8 model that ships beside an ONNX file: the IR when it is there, else the QDQ ``_int8.onnx`` (which
    may not exist either: callers check)."""
    ir = int8_ir_for(onnx_path)
    return ir if ir.is_file() else int8_onnx_for(onnx_path)


def check_same_model(given: str | Path, sibling: Path) -> None:
    """Refuse a sibling export made from another model than ``given``: both cards name the trained file they come
    from by its sha256, so a re-trained student next to a stale ``student_int8.xml`` is caught, not run."""
    if Path(given) == sibling or not model_card_path(sibling).is_file() or not model_card_path(given).is_file():
        return
    ours, theirs = read_model_card(given).get("sha256"), read_model_card(sibling).get("sha256")
    if ours and theirs and ours != theirs:
        raise EngineError(f"{sibling}: made from another model than {Path(given).name} (model card sha256 "
                          f"{theirs[:12]} vs {ours[:12]}); re-export it with TensorRT.py")


def int8_validation(int8_path: Path) -> dict | None:
    """The validation record (``{"f1_delta": ..., "images": ...}``) of an int8 model's card entry, or None when
    there is none or its ``f1_delta`` is not a finite number (NaN, a string: unknown, so never proof of accuracy)."""
    card = read_model_card(int8_path) if model_card_path(int8_path).is_file() else {}
    for key in INT8_EXPORTS:
        entry = card.get("exports", {}).get(key)
        if isinstance(entry, dict) and entry.get("file") == int8_path.name:
            record = entry.get("validation")
            if not isinstance(record, dict):
                return None
            delta = record.get("f1_delta")
            known = isinstance(delta, (int, float)) and not isinstance(delta, bool) and math.isfinite(delta)
            return record if known else None
    return None


def auto_precision(path_or_preset: str) -> tuple[str, str]:
    """What ``precision="auto"`` means for OpenVINO on this CPU: (precision, the reason, one line).

    int8 where the CPU has int8 dot-product units (AMX, AVX-512 VNNI, AVX-VNNI) or, without them, AVX2 (``avx2_int8``:
    only the full-int8 IR there, whose first layer is kept from the 16-bit overflow), and an int8 model lies beside
    the ``.onnx`` whose card records a validation F1 within 0.5 pt of fp32 (``MAX_INT8_F1_DROP``; TensorRT.py
    --cpu_int8 measures it); else bf16 where OpenVINO reports BF16; else fp32. Each fallback says why."""
    bf16 = "BF16" in openvino_capabilities()
    fallback = "bf16" if bf16 else "fp32"
    because = "OpenVINO reports BF16" if bf16 else "OpenVINO reports no BF16 on this CPU"
    dot_units = int8_units()
    units = dot_units or (["avx2 (no VNNI / AMX)"] if avx2_int8() else [])
    if not units:
        return fallback, f"auto: {fallback} (no int8 dot-product units (VNNI / AMX) or AVX2 on this CPU; {because})"
    has = f"CPU has {'/'.join(units)}"
    path = Path(path_or_preset)
    if path.suffix.lower() not in ONNX_SUFFIXES + OPENVINO_SUFFIXES:
        return fallback, f"auto: {fallback} ({has} but int8 needs the exported .onnx with its " \
                         f"int8 model beside it, not {path.name}; {because})"
    int8 = path if path.stem.endswith(INT8_ONNX_SUFFIX) else int8_model_for(path)
    if not int8.is_file():
        return fallback, (f"auto: {fallback} ({has} but no {int8_ir_for(path).name} beside "
                          f"{path.name}: python TensorRT.py --cpu_int8 writes it; {because})")
    if not dot_units and int8.suffix.lower() not in OPENVINO_SUFFIXES:
        return fallback, (f"auto: {fallback} ({has}: only the full-int8 {int8_ir_for(path).name} is taken there, a "
                          f"QDQ {int8.name} may overflow AVX2's 16-bit sums; python TensorRT.py --cpu_int8 writes "
                          f"the IR; {because})")
    try:
        check_same_model(path, int8)
    except EngineError:
        return fallback, f"auto: {fallback} ({int8.name} was made from another model than {path.name}; {because})"
    try:
        verify_model_file(int8)
    except EngineError:
        return fallback, f"auto: {fallback} ({int8.name} does not match the sha256 its card records; {because})"
    record = int8_validation(int8)
    if record is None:
        return fallback, (f"auto: {fallback} ({int8.name}'s card records no validation F1 against fp32 (missing or "
                          f"not a number: unknown); re-export with TensorRT.py --cpu_int8; {because})")
    delta = float(record["f1_delta"])
    if delta < -MAX_INT8_F1_DROP:
        return fallback, (f"auto: {fallback} ({int8.name} loses {-100 * delta:.2f} pt validation F1, more than "
                          f"{100 * MAX_INT8_F1_DROP:g} pt; {because})")
    return "int8", (f"auto: int8 ({has}; {int8.name} validation F1 {100 * delta:+.2f} pt vs "
                    f"fp32 on {record.get('images', '?')} images)")


def default_cache_dir() -> str:
    """Where compiled OpenVINO models are cached (``$CRACKSEG_CACHE`` or ``~/.cache/crackseg``, + ``/openvino``), so
    the first frame of the next run does not pay the compile; ``CRACKSEG_CACHE=""`` turns caching off."""
    root = os.environ.get("CRACKSEG_CACHE")
    if root == "":
        return ""
    return str(Path(root or Path.home() / ".cache" / "crackseg") / "openvino")


class OpenVinoEngine(Engine):
    """OpenVINO on the CPU: the default on machines without an NVIDIA GPU (chosen by benchmark.py; docs/speed.md).

    Reads the clean export beside an ONNX file (``student_fast.onnx``: native InstanceNormalization and dilated
    convolutions) when it exists, else the file itself; a ``.keras`` file or preset is exported clean to a temporary
    file; an OpenVINO IR (``.xml``) is read as it is. One compiled model per input shape (static shapes compile to
    faster kernels), latency hint, one stream, ``threads`` inference threads (0: all cores); compiled models are
    cached in ``cache_dir`` (``default_cache_dir()``; "" off). ``precision`` "fp32" keeps the fp32 masks; "bf16" is
    only honoured on CPUs that report BF16 (AMX / AVX-512 BF16); "int8" reads the int8 model beside the given
    ``.onnx`` (``student_int8.xml``, else ``student_int8.onnx``; fastest with VNNI / AMX, faster than fp32 with
    AVX2), refused when its card names another model; "auto" chooses one of them (``auto_precision``) and says why
    in ``choice``.

    ``predict_many`` is the throughput mode: its own compiled model per shape with the THROUGHPUT hint (several
    streams) and an ``AsyncInferQueue`` of as many requests as OpenVINO finds optimal.
    """

    backend = "openvino"
    max_shapes = 8  # compiled input shapes kept (a camera has one; a 4-dataset validation folder has 6)

    def __init__(self, path_or_preset: str, threshold: float | None = None, threads: int = 0,
                 precision: str = "fp32", cache_dir: str | None = None, verify: bool = False):
        """``verify``: also check the file actually read (``student_fast.onnx``, ``student_int8.xml``) against its
        own card (``open_engine`` does; TensorRT.py opens fresh exports before their cards record them)."""
        try:
            import openvino as ov
        except ImportError as exc:
            raise EngineError(f"{path_or_preset}: the openvino backend needs openvino ({exc})") from None
        preset = is_preset(path_or_preset)
        self._identify(path_or_preset, threshold)
        path = Path(path_or_preset)
        try:
            precision = normalize_precision(precision)
        except EngineError:
            raise EngineError(f"{path_or_preset}: unknown OpenVINO precision {precision!r}; choose one of "
                              f"{CPU_PRECISIONS}") from None
        if precision == "auto":
            precision, self.choice = auto_precision(path_or_preset)
        suffix = path.suffix.lower()
        int8 = precision == "int8" or path.stem.endswith(INT8_ONNX_SUFFIX)
        if int8 and suffix not in ONNX_SUFFIXES + OPENVINO_SUFFIXES:
            raise EngineError(f"{path_or_preset}: int8 runs the int8 model ({INT8_ONNX_SUFFIX}.xml) that TensorRT.py "
                              f"--cpu_int8 writes beside an .onnx; give that .onnx")
        if suffix in ONNX_SUFFIXES + OPENVINO_SUFFIXES:
            if not path.is_file():
                raise EngineError(f"{path}: {'ONNX' if suffix in ONNX_SUFFIXES else 'OpenVINO IR'} file not found")
            if int8:
                model_path = path if path.stem.endswith(INT8_ONNX_SUFFIX) else int8_model_for(path)
                if not model_path.is_file():
                    raise EngineError(f"{int8_ir_for(path)}: int8 model not found; write it with "
                                      f"python TensorRT.py --model={path} --cpu_int8")
            elif suffix in ONNX_SUFFIXES:
                model_path = fast_onnx_for(path) if fast_onnx_for(path).is_file() else path
            else:
                model_path = path
            check_same_model(path, model_path)
            if verify and model_path != path:
                verify_model_file(model_path)
        elif suffix in KERAS_SUFFIXES or preset:
            from .onnx_export import export_onnx

            tmp = tempfile.mkdtemp(prefix="crackseg_openvino_")
            self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, True)
            model_path = export_onnx(load_deployable_keras(path_or_preset), Path(tmp) / "model.onnx", clean=True)
            cache_dir = ""  # a temporary export: nothing worth caching
        else:
            raise EngineError(f"{path}: the openvino backend reads .onnx, .xml, .keras or a preset")
        self.onnx_path = model_path  # the file read (kept under its old name: callers and tests use it)
        if suffix in ONNX_SUFFIXES + OPENVINO_SUFFIXES:  # errors name the file read (student_fast.onnx)
            self.model_file = str(model_path)
        self.core = ov.Core()
        has_bf16 = "BF16" in openvino_capabilities()
        self.precision = "bf16" if precision == "bf16" and has_bf16 else "fp32"
        # int8 lives in the model's quantise / dequantise pairs; what stays unquantised runs in bf16 where the CPU has
        # it (measured on an AMX Xeon: the same validation F1 as fp32 there, 1.1-1.25x faster; docs/speed.md)
        self.rest_precision = ("bf16" if has_bf16 else "fp32") if int8 else self.precision
        self.config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, **openvino_cpu_config(self.rest_precision)}
        if int8:
            self.precision = "int8"
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        if self.cache_dir:
            self.config["CACHE_DIR"] = self.cache_dir
        try:
            self.model = self.core.read_model(str(model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise EngineError(f"{model_path}: OpenVINO cannot read it ({exc})") from None
        self._compiled: dict[tuple[int, ...], object] = {}
        self._throughput: dict[tuple[int, ...], object] = {}

    def _compile(self, shape: tuple[int, ...], hint: str):
        model = self.model.clone()
        model.reshape({model.inputs[0].any_name: list(shape)})
        config = dict(self.config, PERFORMANCE_HINT=hint)
        if hint == "THROUGHPUT":
            config.pop("NUM_STREAMS")  # the hint chooses the streams
        try:
            return self.core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise EngineError(f"{self.model_file}: OpenVINO cannot compile it for {shape} ({exc})") from None

    def _request(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            if len(self._compiled) >= self.max_shapes:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[shape] = self._compile(shape, "LATENCY").create_infer_request()
        return self._compiled[shape]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        request = self._request(tuple(batch.shape))
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def _queue(self, shape: tuple[int, ...], jobs: int):
        import openvino as ov

        if shape not in self._throughput:
            if len(self._throughput) >= self.max_shapes:
                self._throughput.pop(next(iter(self._throughput)))
            compiled = self._compile(shape, "THROUGHPUT")
            count = jobs or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._throughput[shape] = ov.AsyncInferQueue(compiled, max(1, count))
        return self._throughput[shape]

    def predict_many(self, images: Iterable[np.ndarray], jobs: int = 0) -> Iterator[np.ndarray]:
        """Throughput mode (see the class): probabilities in input order; ``jobs`` requests in flight (0: OpenVINO's
        optimal number). Reading the next image (the caller's iterator) and cropping finished ones overlap
        inference; at most ``jobs`` images per input size are in flight, so memory stays bounded."""
        done: dict[int, np.ndarray] = {}
        failed: list[BaseException] = []
        lock = threading.Lock()

        def finished(request, userdata) -> None:
            index, size, expected = userdata
            try:
                raw = np.asarray(request.get_output_tensor(0).data)
                if raw.shape not in (expected, expected + (1,)):
                    raise EngineError(f"{self.model_file}: output of shape {raw.shape} for an input of "
                                      f"{expected + (3,)}; expected (N, H, W, 1) -- re-export the model (TensorRT.py)")
                prob = crop_back(raw, size)[0].astype(np.float32, copy=True)
            except BaseException as exc:  # re-raised on the caller's thread
                with lock:
                    failed.append(exc)
                return
            with lock:
                done[index] = prob

        queues = []
        next_out = 0
        try:
            for index, image in enumerate(images):
                image = np.asarray(image)
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                    raise EngineError(f"image {index}: expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
                batch, size = prepare(image)
                queue = self._queue(tuple(batch.shape), jobs)
                if queue not in queues:
                    queues.append(queue)
                    queue.set_callback(finished)
                queue.start_async({0: batch}, (index, size, tuple(batch.shape[:3])))  # waits for an idle request
                while True:
                    with lock:
                        if failed:
                            raise failed[0]
                        prob = done.pop(next_out, None)
                    if prob is None:
                        break
                    next_out += 1
                    yield prob
            for queue in queues:
                queue.wait_all()
            if failed:
                raise failed[0]
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
        finally:
            for queue in queues:  # a caller that stops early leaves nothing running
                queue.wait_all()

    def describe(self) -> str:
        mixed = "+bf16" if self.precision == "int8" and self.rest_precision == "bf16" else ""
        text = f"{self.name} [{self.backend}] threshold {self.threshold:g} ({Path(self.onnx_path).name}, " \
               f"{self.precision}{mixed})"
        return f"{text}; {self.choice}" if self.choice else text

    def close(self) -> None:
        self._compiled.clear()
        self._throughput.clear()
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
        from .tensorrt import import_tensorrt, trt_logger

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
            self._runtime = trt.Runtime(trt_logger(trt))
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
        from .tensorrt import build_tensorrt_engine

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
    """The measured-fastest CPU runtime installed here (benchmark.py, docs/speed.md): OpenVINO on the clean
    export, else ONNX Runtime. A machine whose ONNX Runtime has CUDA keeps ONNX Runtime (it runs on the GPU)."""
    if _has_module("onnxruntime"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "onnx"
    if _has_module("openvino"):
        return "openvino"
    return "onnx"


def choose_backend(path_or_preset: str) -> str:
    """What ``backend="auto"`` means: TensorRT for engines, Keras for ``.keras``, OpenVINO for an IR ``.xml``; an ONNX
    file or a preset runs on the fastest CPU runtime installed (OpenVINO, then ONNX Runtime; ONNX Runtime when it has
    CUDA), a preset on Keras when neither is installed."""
    suffix = Path(path_or_preset).suffix.lower()
    if suffix in TENSORRT_SUFFIXES:
        return "tensorrt"
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix in ONNX_SUFFIXES:
        return default_cpu_backend()
    if suffix in OPENVINO_SUFFIXES:
        return "openvino"
    if is_preset(path_or_preset):
        return default_cpu_backend() if _has_module("onnxruntime") or _has_module("openvino") else "keras"
    raise EngineError(f"{path_or_preset}: unknown model format {suffix!r} (expected "
                      f"{', '.join(KERAS_SUFFIXES + ONNX_SUFFIXES + OPENVINO_SUFFIXES + TENSORRT_SUFFIXES)} "
                      "or a preset name)")


def open_engine(path_or_preset: str, backend: str = "auto", threshold: float | None = None,
                precision: str = "fp32") -> Engine:
    """Open a model file or preset on ``backend`` (``auto``, or one of ``backends()``).

    The model file must be the one its card (beside it) describes: its sha256 as the card records it (checked
    once per file version, ``verify_model_file``), else EngineError -- e.g. a ``student.onnx`` left from an earlier
    model beside a newer card. ``threshold`` overrides the model card's (default 0.5). ``precision``
    (``CPU_PRECISIONS``; ``f32`` is read as ``fp32``): "bf16" runs OpenVINO in bf16 where the CPU reports BF16 and in
    fp32 elsewhere, which ``describe()`` shows; "int8" runs the int8 model beside an ``.onnx`` on OpenVINO; "auto"
    (camera.py's and evaluate.py's default) picks the fastest accurate one for this CPU (``auto_precision``) on OpenVINO
    and says why in ``engine.choice``, and is fp32 (TensorRT: as built) on the other backends. Other backends only run
    fp32.
    """
    path_or_preset = str(path_or_preset)
    precision = normalize_precision(precision)
    if not is_preset(path_or_preset) and not Path(path_or_preset).exists():
        raise EngineError(f"{path_or_preset}: model file not found")
    if backend == "auto":
        backend = choose_backend(path_or_preset)
    if backend not in _BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose auto or one of {backends()}")
    if not is_preset(path_or_preset):
        verify_model_file(path_or_preset)  # every backend: the file must be the one its card describes
    if backend == OpenVinoEngine.backend and _BACKENDS[backend] is OpenVinoEngine:
        return OpenVinoEngine(path_or_preset, threshold=threshold, precision=precision, verify=True)
    if precision not in ("fp32", "auto"):
        raise EngineError(f"precision {precision} needs the openvino backend, not {backend}")
    engine = _BACKENDS[backend](path_or_preset, threshold=threshold)
    if precision == "auto":
        engine.choice = (f"auto: {engine.precision} (the {backend} backend runs "
                         f"{'as built' if backend == 'tensorrt' else 'fp32 only'})")
    return engine
