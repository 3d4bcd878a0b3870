"""Side-by-side speed of every backend / precision on the same images, plus the camera and training pipelines.

Used by ``benchmark.py``. What is measured, per backend:

* latency: median of ``runs`` timed ``engine.predict`` calls (preprocess + inference + crop back, batch 1) after
  ``warmup`` untimed ones; images/s = 1000 / median latency;
* peak memory: the process's resident set size (RSS, /proc/self/statm) sampled every 5 ms from before the engine is
  opened until its last timed run, peak minus the value before opening (native allocations included);
* quality on validation images: strict F1 (``evaluation.evaluate_engine``, at the model's threshold) minus Keras
  fp32's, and the share of mask pixels equal to Keras fp32's (the only meaningful number for an untrained model).

Ratios measured in one run are what carry across machines; absolute times depend on the CPU and its load.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .engines import Engine, EngineError, OnnxEngine, OpenVinoEngine, is_preset
from .evaluation import LabelledImage, evaluate_engine

ROW_KEYS = ("backend", "precision", "images_per_s", "latency_ms", "ratio_vs_keras_fp32", "f1_delta",
            "mask_agreement_pct", "f1", "peak_rss_delta_mb", "model_file", "note")


# ---------------------------------------------------------------------------------------------- inputs
def benchmark_images(size: int, count: int, data: str | None, lists: str | None, seed: int = 0
                     ) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """``count`` validation (image, mask) pairs centre-cropped to ``size``: real ones from ``data`` when it holds
    a dataset, else synthetic pavement (``datasets/synthetic.py``). Returns (images, masks, description)."""
    from .data import DataError, load_pair, load_split
    from .export import square_crop

    if data and Path(data).is_dir():
        try:
            splits = load_split(data, lists)
            samples = splits["val"] or splits["train"]
            picks = np.unique(np.linspace(0, len(samples) - 1, min(count, len(samples))).round().astype(int))
            images, masks = [], []
            for i in picks:
                image, mask = load_pair(samples[i])
                images.append(square_crop(image, size))
                masks.append(square_crop(mask.astype(np.uint8) * 255, size) > 127)
            return images, masks, f"{len(images)} real validation images from {data}, centre crops {size}x{size}"
        except DataError as exc:
            print(f"data: {exc}; using synthetic images")
    from datasets.synthetic import sample

    rng = np.random.default_rng(seed)
    pairs = [sample(rng, size, size) for _ in range(count)]
    return [p[0] for p in pairs], [p[1] for p in pairs], f"{count} synthetic images {size}x{size}"


# ---------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Peak resident set size while active, sampled every ``interval`` s by a thread (Linux /proc)."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.start, self.peak = interval, 0, 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


# ---------------------------------------------------------------------------------------------- backends
@dataclass
class Candidate:
    """A backend / precision to measure: ``open()`` returns a ready engine (or raises EngineError)."""

    backend: str
    precision: str
    open: Callable[[], Engine]
    note: str = ""
    model_file: str = ""


class KerasMixedEngine(Engine):
    """The Keras model rebuilt under the ``mixed_bfloat16`` policy (bf16 compute, fp32 weights and output)."""

    backend = "keras"

    def __init__(self, reference_net, threshold: float, name: str):
        import keras
        import tensorflow as tf

        import model as mcff

        super().__init__(name, threshold)
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            net = mcff.deploy_model(mcff.build_model(mcff.infer_preset(reference_net), None))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        source = {layer.name: layer for layer in reference_net.layers}
        for layer in net.layers:
            if layer.weights and layer.name in source:
                layer.set_weights(source[layer.name].get_weights())
        signature = (tf.TensorSpec((None, None, None, 3), tf.float32),)
        self._forward = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32),
                                    input_signature=signature)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch).numpy()


def candidates(model_spec: str, workdir: Path, calibration: list[np.ndarray], threads: int,
               skip: tuple[str, ...] = ()) -> tuple[list[Candidate], object, float]:
    """Every backend / precision available here for ``model_spec`` (a ``.keras`` file or a preset).

    Returns (candidates, the deployable Keras model, threshold). ONNX files are exported into ``workdir``: the
    plain tf2onnx export (what ``student.onnx`` is) and the clean one (``student_fast.onnx``).
    """
    from .engines import KerasEngine, load_deployable_keras, read_model_card, resolve_threshold
    from .export import export_onnx, quantize_int8, tensorrt_status

    net = load_deployable_keras(model_spec)
    threshold = resolve_threshold({} if is_preset(model_spec) else read_model_card(model_spec), None)
    name = f"{model_spec}-untrained" if is_preset(model_spec) else Path(model_spec).stem
    plain = export_onnx(net, workdir / "model.onnx")
    clean = export_onnx(net, workdir / "model_fast.onnx", clean=True)
    int8 = workdir / "model_int8.onnx"

    def int8_model() -> Path:
        """The QDQ int8 model, quantised once and shared: ONNX Runtime and OpenVINO (which runs QDQ in int8)."""
        return int8 if int8.is_file() else quantize_int8(clean, int8, calibration)

    found = [
        Candidate("keras", "fp32", lambda: KerasEngine(model_spec, threshold, net=net), "TF/oneDNN"),
        Candidate("keras", "mixed_bf16", lambda: KerasMixedEngine(net, threshold, name),
                  "mixed_bfloat16 policy (no native bf16 here unless the CPU has AVX-512 BF16 / AMX)"),
        Candidate("onnxruntime", "fp32", lambda: _ort(plain, threshold, threads), "plain tf2onnx export",
                  plain.name),
        Candidate("onnxruntime", "fp32-clean", lambda: _ort(clean, threshold, threads),
                  "clean export: InstanceNormalization + dilated Conv", clean.name),
        Candidate("onnxruntime", "int8", lambda: _ort(int8_model(), threshold, threads),
                  f"static QDQ, {len(calibration)} calibration images", int8.name),
        Candidate("openvino", "fp32", lambda: OpenVinoEngine(str(plain), threshold, threads), "plain export",
                  plain.name),
        Candidate("openvino", "fp32-clean", lambda: OpenVinoEngine(str(clean), threshold, threads),
                  "clean export, latency hint (the CPU default)", clean.name),
        Candidate("openvino", "int8", lambda: OpenVinoEngine(str(int8_model()), threshold, threads),
                  "the onnxruntime int8 QDQ model run by OpenVINO", int8.name),
    ]
    import openvino as ov

    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        found.append(Candidate("openvino", "bf16-clean", lambda: OpenVinoEngine(str(clean), threshold, threads,
                                                                               precision="bf16"),
                               "clean export, bf16 inference precision", clean.name))
    if tensorrt_status()[0]:
        from .engines import TensorRTEngine

        found.append(Candidate("tensorrt", "fp32", lambda: TensorRTEngine(str(plain), threshold), "built in memory"))
    return [c for c in found if f"{c.backend}:{c.precision}" not in skip and c.backend not in skip], net, threshold


def _ort(path: Path, threshold: float, threads: int) -> OnnxEngine:
    engine = OnnxEngine(str(path), threshold, providers=["CPUExecutionProvider"])
    if threads:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        engine.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return engine


# ---------------------------------------------------------------------------------------------- measuring
def time_predict(engine: Engine, image: np.ndarray, runs: int, warmup: int) -> list[float]:
    """Seconds of each of ``runs`` ``engine.predict(image)`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        engine.predict(image)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.predict(image)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(candidate: Candidate, images: list[np.ndarray], masks: list[np.ndarray], runs: int, warmup: int,
            reference_masks: list[np.ndarray] | None) -> tuple[dict, list[np.ndarray]]:
    """One benchmark row for ``candidate`` and its masks on ``images`` (for the agreement of later rows)."""
    with PeakRss() as memory:
        engine = candidate.open()
        seconds = time_predict(engine, images[0], runs, warmup)
    predicted: list[np.ndarray] = []  # warmup=0: time_predict has already warmed the engine up
    quality = evaluate_engine(engine, [LabelledImage(image, truth) for image, truth in zip(images, masks)],
                              warmup=0, on_prediction=lambda prob: predicted.append(engine.mask(prob)))
    engine.close()
    latency = float(np.median(seconds)) * 1000
    agreement = None
    if reference_masks is not None:
        same = sum(int((a == b).sum()) for a, b in zip(predicted, reference_masks))
        agreement = 100.0 * same / sum(m.size for m in predicted)
    row = {"backend": candidate.backend, "precision": candidate.precision, "images_per_s": 1000.0 / latency,
           "latency_ms": latency, "ratio_vs_keras_fp32": None, "f1_delta": None,
           "mask_agreement_pct": agreement, "f1": quality["strict"]["f1"],
           "peak_rss_delta_mb": memory.delta_mb, "model_file": candidate.model_file, "note": candidate.note,
           "runs": runs, "latency_min_ms": min(seconds) * 1000}
    return row, predicted


def backend_rows(model_spec: str, images: list[np.ndarray], masks: list[np.ndarray], runs: int, warmup: int,
                 threads: int = 0, skip: tuple[str, ...] = (), log: Callable[[str], None] = print) -> list[dict]:
    """Measure every available backend on the same images; ratios and F1 deltas are against Keras fp32."""
    with tempfile.TemporaryDirectory(prefix="crackseg_bench_") as tmp:
        found, _, _ = candidates(model_spec, Path(tmp), images, threads, skip)
        rows, reference = [], None
        for candidate in found:
            log(f"measuring {candidate.backend} {candidate.precision} ...")
            try:
                row, predicted = measure(candidate, images, masks, runs, warmup, reference)
            except (EngineError, RuntimeError, ValueError, ImportError) as exc:
                log(f"  skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            if candidate.backend == "keras" and candidate.precision == "fp32":
                reference = predicted
                row["mask_agreement_pct"] = 100.0
            rows.append(row)
            log(f"  {row['latency_ms']:.0f} ms, {row['images_per_s']:.2f} images/s")
    base = next((r for r in rows if r["backend"] == "keras" and r["precision"] == "fp32"), None)
    for row in rows:
        if base:
            row["ratio_vs_keras_fp32"] = row["images_per_s"] / base["images_per_s"]
            row["f1_delta"] = row["f1"] - base["f1"]
    return rows


# ---------------------------------------------------------------------------------------------- pipelines
def camera_pipeline(engine: Engine, frames: list[np.ndarray], overlap: bool, jpeg_quality: int = 80) -> float:
    """Frames per second of camera.py's own loop (``crackseg.pipeline.FramePipeline``) on ``frames`` saved as a
    folder of JPEGs: read + decode (``FrameSource``) -> predict (preprocess + inference) -> mask -> crack statistics
    -> overlay -> JPEG encode + stream header, handed to a sender that discards them (camera.py ``--send`` without a
    network, no ``--save``, headless). ``overlap``: camera.py's ``--overlap``."""
    from .pipeline import FramePipeline
    from .sources import FrameSource

    with tempfile.TemporaryDirectory(prefix="crackseg_camera_") as folder:
        for i, frame in enumerate(frames):
            cv2.imwrite(str(Path(folder) / f"{i:06d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        source = FrameSource(folder)
        engine.predict(frames[0])  # warm-up: the first call compiles / allocates
        pipeline = FramePipeline(engine, send=lambda header, jpeg: None, device="bench", jpeg_quality=jpeg_quality,
                                 overlap=overlap)
        start = time.perf_counter()
        with closing(pipeline.results(source.frames())) as results:
            count = sum(1 for _ in results)
        seconds = time.perf_counter() - start
        source.close()
    return count / seconds


def camera_rows(engine: Engine, frames: list[np.ndarray], runs: int) -> dict:
    """Pure inference FPS (``predict`` only) vs the end-to-end camera pipeline, sequential and overlapped."""
    seconds = time_predict(engine, frames[0], runs, 1)
    pure = 1.0 / float(np.median(seconds))
    sequential = camera_pipeline(engine, frames, overlap=False)
    overlapped = camera_pipeline(engine, frames, overlap=True)
    return {"backend": engine.backend, "frames": len(frames), "pure_inference_fps": pure,
            "pipeline_sequential_fps": sequential, "pipeline_overlapped_fps": overlapped,
            "overlapped_vs_pure_pct": 100.0 * overlapped / pure}


def training_rows(model_spec: str, images: list[np.ndarray], masks: list[np.ndarray], crop: int, batch_size: int,
                  steps: int) -> dict:
    """``crackseg.inputs.train_dataset`` batches/s (input pipeline alone), the model-only train-step rate
    (``train_on_batch`` on one fixed batch) and the two together, each over ``steps`` steps after one warm-up."""
    import keras

    import model as mcff
    from .engines import load_deployable_keras
    from .inputs import train_dataset

    preset = mcff.infer_preset(load_deployable_keras(model_spec))
    net = mcff.build_model(preset, crop)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"mix": "categorical_crossentropy"})
    batches = train_dataset(images, masks, crop=crop, batch_size=batch_size)

    def endless():  # what fit does: every batch of an epoch, then the next epoch's order
        while True:
            yield from (batches[i] for i in range(len(batches)))
            batches.epoch += 1

    iterator = endless()
    x, y = next(iterator)
    net.train_on_batch(x, {"mix": y})  # warm-up: tracing

    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    pipeline = steps * batch_size / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        net.train_on_batch(x, {"mix": y})
    model_only = steps * batch_size / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        xb, yb = next(iterator)
        net.train_on_batch(xb, {"mix": yb})
    together = steps * batch_size / (time.perf_counter() - start)
    return {"crop": crop, "batch_size": batch_size, "steps": steps, "input_pipeline_images_per_s": pipeline,
            "model_only_images_per_s": model_only, "fit_images_per_s": together,
            "fit_vs_model_only_pct": 100.0 * together / model_only}


# ---------------------------------------------------------------------------------------------- printing
def format_table(rows: list[dict]) -> str:
    """The backend rows as a fixed-width table."""
    def num(value, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    lines = [f"{'backend':12s} {'precision':11s} {'images/s':>9s} {'latency ms':>11s} {'vs keras':>9s} "
             f"{'F1 delta':>9s} {'mask agree %':>13s} {'peak RSS MB':>12s}"]
    for r in rows:
        lines.append(f"{r['backend']:12s} {r['precision']:11s} {num(r['images_per_s'], '9.3f')} "
                     f"{num(r['latency_ms'], '11.0f')} {num(r['ratio_vs_keras_fp32'], '8.2f')}x "
                     f"{num(r['f1_delta'], '+9.4f')} {num(r['mask_agreement_pct'], '13.3f')} "
                     f"{num(r['peak_rss_delta_mb'], '12.0f')}")
    return "\n".join(lines)


def machine_facts() -> dict:
    """CPU model, core count and the SIMD extensions that decide bf16 / int8 speed (Linux /proc/cpuinfo)."""
    facts = {"cpu": "unknown", "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    flags = set()
    for line in text.splitlines():
        if line.startswith("model name") and facts["cpu"] == "unknown":
            facts["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    facts["simd"] = [f for f in wanted if f in flags]
    try:
        import openvino as ov

        facts["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except ImportError:
        pass
    return facts
