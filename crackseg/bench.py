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

ROW_KEYS = ("backend", "precision", "graph", "images_per_s", "latency_ms", "ratio_vs_keras_fp32", "f1_delta",
            "mask_agreement_pct", "f1", "gflops_per_s", "pct_of_peak", "peak_rss_delta_mb", "model_file", "note")
PEAK_CONV = (256, 64)  # the peak probe: a 3x3 convolution, this many channels in and out, on a square of this side


# ---------------------------------------------------------------------------------------------- inputs
def benchmark_images(size: int, count: int, data: str | None, lists: str | None, seed: int = 0
                     ) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """``count`` validation (image, mask) pairs centre-cropped to ``size``: real ones from ``data`` when it holds
    a dataset, else synthetic pavement (``datasets/synthetic.py``). Returns (images, masks, description)."""
    from .data import DataError, load_pair, load_split, square_crop

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
    """A backend / precision to measure: ``open()`` returns a ready engine (or raises EngineError). ``graph``: which
    export it runs (keras, plain: the tf2onnx export, fast: the clean export, qdq: Conv-only QDQ int8, full: NNCF
    full-graph int8)."""

    backend: str
    precision: str
    open: Callable[[], Engine]
    note: str = ""
    model_file: str = ""
    graph: str = ""


FP32_LAYERS = ("InstanceNorm", "AttentionGate", "TemperatureSoftmax", "CrackProbability")  # kept fp32 under bf16


class KerasMixedEngine(Engine):
    """The Keras model rebuilt under the ``mixed_bfloat16`` policy (bf16 compute, fp32 weights and output), with the
    layers bf16 hurts kept in float32 through their dtype policy: the instance norms (``moments`` over a whole
    feature map in bf16 loses the variance) and the sigmoid / softmax gates and the crack probability (a threshold
    of 0.85 sits where bf16 steps are 0.004). ``fp32_layers=()`` is the plain policy, for comparison."""

    backend = "keras"
    precision = "bf16"

    def __init__(self, reference_net, threshold: float, name: str, fp32_layers: tuple[str, ...] = FP32_LAYERS):
        import keras
        import tensorflow as tf

        import model as mcff

        super().__init__(name, threshold)
        # The deploy head's temperature is the reference's own (the student ships at T = 10): rebuilt at the default
        # T = 1 the probabilities are another map (mean |diff| 0.014, 1.6 % of the masks at threshold 0.85 differ
        # in fp32 already), which is what the "bf16 loses 2.8 pt F1" of issue 20 measured.
        heads = [layer for layer in reference_net.layers if type(layer).__name__ == "CrackProbability"]
        temperature = float(heads[-1].temperature) if heads else 1.0
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            net = mcff.deploy_model(mcff.build_model(mcff.infer_preset(reference_net), None), temperature=temperature)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        source = {layer.name: layer for layer in reference_net.layers}
        for layer in net.layers:
            if layer.weights and layer.name in source:
                layer.set_weights(source[layer.name].get_weights())
            if type(layer).__name__ in fp32_layers:
                layer.dtype_policy = keras.DTypePolicy("float32")  # inputs are cast up, outputs stay float32
        self.fp32_layers = sum(type(layer).__name__ in fp32_layers for layer in net.layers)
        signature = (tf.TensorSpec((None, None, None, 3), tf.float32),)
        self._forward = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32),
                                    input_signature=signature)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch).numpy()


def shipped_int8(model_spec: str) -> Path | None:
    """The shipped full-int8 IR made from ``model_spec`` (``weights/student_int8.xml`` beside student.onnx for
    student.keras), when it is there and its card names the same trained file; else None."""
    from .engines import check_same_model, int8_ir_for

    spec = Path(model_spec)
    if spec.suffix.lower() not in (".keras", ".h5"):
        return None
    onnx_path, ir = spec.with_suffix(".onnx"), int8_ir_for(spec.with_suffix(".onnx"))
    if not ir.is_file():
        return None
    try:
        check_same_model(spec, ir)
    except EngineError:
        return None
    return ir if onnx_path.is_file() else None


def candidates(model_spec: str, workdir: Path, calibration: list[np.ndarray], threads: int,
               skip: tuple[str, ...] = ()) -> tuple[list[Candidate], object, float]:
    """Every backend / precision available here for ``model_spec`` (a ``.keras`` file or a preset).

    Returns (candidates, the deployable Keras model, threshold). ONNX files are exported into ``workdir``: the
    plain tf2onnx export (what ``student.onnx`` is) and the clean one (``student_fast.onnx``). The full-int8 row runs
    the shipped ``student_int8.xml`` when it belongs to ``model_spec``, else a quick NNCF quantisation of the clean
    export on ``calibration`` (no accuracy control).
    """
    from .engines import KerasEngine, load_deployable_keras, read_model_card, resolve_threshold
    from .onnx_export import export_onnx
    from .quantize import quantize_full_int8, quantize_int8
    from .tensorrt import tensorrt_status

    net = load_deployable_keras(model_spec)
    threshold = resolve_threshold({} if is_preset(model_spec) else read_model_card(model_spec), None)
    name = f"{model_spec}-untrained" if is_preset(model_spec) else Path(model_spec).stem
    plain = export_onnx(net, workdir / "model.onnx")
    clean = export_onnx(net, workdir / "model_fast.onnx", clean=True)
    qdq = workdir / "model_qdq_int8.onnx"
    shipped = shipped_int8(model_spec)
    full = shipped or workdir / "model_int8.xml"

    def qdq_model() -> Path:
        """The Conv-only QDQ int8 model, quantised once and shared: ONNX Runtime and OpenVINO run it."""
        return qdq if qdq.is_file() else quantize_int8(clean, qdq, calibration)

    def full_model() -> Path:
        if not full.is_file():
            quantize_full_int8(clean, full, calibration, accuracy_control=False, log=lambda line: None)
        return full

    found = [
        Candidate("keras", "fp32", lambda: KerasEngine(model_spec, threshold, net=net), "TF/oneDNN", graph="keras"),
        Candidate("keras", "bf16", lambda: KerasMixedEngine(net, threshold, name),
                  "mixed_bfloat16 policy, norms and gates float32", graph="keras"),
        Candidate("onnxruntime", "fp32", lambda: _ort(plain, threshold, threads), "plain tf2onnx export",
                  plain.name, "plain"),
        Candidate("onnxruntime", "fp32", lambda: _ort(clean, threshold, threads),
                  "clean export: InstanceNormalization + dilated Conv", clean.name, "fast"),
        Candidate("onnxruntime", "int8", lambda: _ort(qdq_model(), threshold, threads),
                  f"static QDQ (Conv only), {len(calibration)} calibration images", qdq.name, "qdq"),
        Candidate("openvino", "fp32", lambda: OpenVinoEngine(str(plain), threshold, threads, cache_dir=""),
                  "plain export", plain.name, "plain"),
        Candidate("openvino", "fp32", lambda: OpenVinoEngine(str(clean), threshold, threads, cache_dir=""),
                  "clean export, latency hint", clean.name, "fast"),
        Candidate("openvino", "int8", lambda: OpenVinoEngine(str(qdq_model()), threshold, threads, cache_dir=""),
                  "the onnxruntime Conv-only QDQ model run by OpenVINO", qdq.name, "qdq"),
        Candidate("openvino", "int8", lambda: OpenVinoEngine(str(full_model()), threshold, threads, cache_dir=""),
                  "full-graph NNCF int8" + (f" (shipped {full.name})" if shipped else
                                            f", {len(calibration)} calibration images"), full.name, "full"),
    ]
    from .precision import openvino_capabilities

    if "BF16" in openvino_capabilities():
        found.append(Candidate("openvino", "bf16", lambda: OpenVinoEngine(str(clean), threshold, threads,
                                                                          precision="bf16", cache_dir=""),
                               "clean export, bf16 inference precision", clean.name, "fast"))
    if tensorrt_status()[0]:
        from .engines import TensorRTEngine

        found.append(Candidate("tensorrt", "fp32", lambda: TensorRTEngine(str(plain), threshold), "built in memory",
                               graph="plain"))
    return [c for c in found if not skipped(c, skip)], net, threshold


def skipped(candidate: Candidate, skip: tuple[str, ...]) -> bool:
    """``skip`` entries: ``backend``, ``backend:precision`` or ``backend:precision:graph`` (old words accepted:
    ``fp32-clean`` = ``fp32:fast``, ``mixed_bf16`` = ``bf16``)."""
    old = {"fp32-clean": "fp32:fast", "bf16-clean": "bf16:fast", "mixed_bf16": "bf16", "f32": "fp32"}
    for entry in skip:
        parts = entry.split(":")
        if len(parts) > 1:
            parts = [parts[0], *old.get(parts[1], parts[1]).split(":"), *parts[2:]]
        mine = [candidate.backend, candidate.precision, candidate.graph]
        if mine[:len(parts)] == parts:
            return True
    return False


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
            reference_masks: list[np.ndarray] | None) -> tuple[dict, list[np.ndarray], Engine, list[float]]:
    """One benchmark row for ``candidate``, its masks on ``images`` (for the agreement of later rows), its engine,
    still open (``backend_rows`` times it again in later rounds, then closes it), and the timed calls' seconds."""
    predicted: list[np.ndarray] = []
    engine = None
    try:
        with PeakRss() as memory:
            engine = candidate.open()
            seconds = time_predict(engine, images[0], runs, warmup)
        # warmup=0: time_predict has already warmed the engine up
        quality = evaluate_engine(engine, [LabelledImage(image, truth) for image, truth in zip(images, masks)],
                                  warmup=0, on_prediction=lambda prob: predicted.append(engine.mask(prob)))
    except BaseException:  # a failed row leaves no engine (threads, compiled models) behind
        if engine is not None:
            engine.close()
        raise
    agreement = None
    if reference_masks is not None:
        same = sum(int((a == b).sum()) for a, b in zip(predicted, reference_masks))
        agreement = 100.0 * same / sum(m.size for m in predicted)
    row = {"backend": candidate.backend, "precision": candidate.precision, "graph": candidate.graph,
           "images_per_s": None, "latency_ms": None, "ratio_vs_keras_fp32": None, "f1_delta": None,
           "mask_agreement_pct": agreement, "f1": quality["strict"]["f1"], "gflops_per_s": None, "pct_of_peak": None,
           "peak_rss_delta_mb": memory.delta_mb, "model_file": candidate.model_file, "note": candidate.note}
    _set_timing(row, seconds)
    return row, predicted, engine, seconds


def _set_timing(row: dict, seconds: list[float]) -> None:
    """Latency (median) and images/s of a row from all its timed calls."""
    latency = float(np.median(seconds)) * 1000
    row.update(images_per_s=1000.0 / latency, latency_ms=latency, runs=len(seconds),
               latency_min_ms=min(seconds) * 1000)


def backend_rows(model_spec: str, images: list[np.ndarray], masks: list[np.ndarray], runs: int, warmup: int,
                 threads: int = 0, skip: tuple[str, ...] = (), log: Callable[[str], None] = print,
                 gflop_per_image: float | None = None, peaks: dict[str, float] | None = None,
                 rounds: int = 1) -> list[dict]:
    """Measure every available backend on the same images; ratios and F1 deltas are against Keras fp32. With
    ``gflop_per_image`` each row gets its effective GFLOP/s, and with ``peaks`` (``peak_gflops``) its share of this
    machine's peak in the row's precision.

    ``rounds`` > 1 keeps every engine open and times them all again ``rounds - 1`` times, interleaved (each round in
    the reverse order of the one before), with ``runs`` calls each: on a shared or throttled machine the speed
    drifts over a run, and timing the rows one after another would hand that drift to whichever row ran then. Each
    row's latency is the median of all its timed calls."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    with tempfile.TemporaryDirectory(prefix="crackseg_bench_") as tmp:
        found, _, _ = candidates(model_spec, Path(tmp), images, threads, skip)
        rows, reference, opened = [], None, []  # opened: (row, engine, its timed calls' seconds)
        try:
            for candidate in found:
                log(f"measuring {candidate.backend} {candidate.precision} ...")
                try:
                    row, predicted, engine, seconds = measure(candidate, images, masks, runs, warmup, reference)
                except (EngineError, RuntimeError, ValueError, ImportError) as exc:
                    log(f"  skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    continue
                if rounds > 1:
                    opened.append((row, engine, seconds))
                else:  # one round: nothing to time again, and no engine holds memory while the next one is measured
                    engine.close()
                if candidate.backend == "keras" and candidate.precision == "fp32":
                    reference = predicted
                    row["mask_agreement_pct"] = 100.0
                rows.append(row)
                log(f"  {row['latency_ms']:.0f} ms, {row['images_per_s']:.2f} images/s")
            for number in range(2, rounds + 1):
                log(f"round {number} of {rounds} ...")
                for row, engine, seconds in opened[::-1] if number % 2 == 0 else opened:
                    seconds.extend(time_predict(engine, images[0], runs, 0))
            for row, _, seconds in opened:
                _set_timing(row, seconds)
        finally:
            for _, engine, _ in opened:
                engine.close()
    base = next((r for r in rows if r["backend"] == "keras" and r["precision"] == "fp32"), None)
    for row in rows:
        if base:
            row["ratio_vs_keras_fp32"] = row["images_per_s"] / base["images_per_s"]
            row["f1_delta"] = row["f1"] - base["f1"]
        if gflop_per_image:
            row["gflops_per_s"] = gflop_per_image * row["images_per_s"]
            peak = (peaks or {}).get(row["precision"])
            row["pct_of_peak"] = 100.0 * row["gflops_per_s"] / peak if peak else None
    return rows


def gflop_per_image(net, card: dict, size: int) -> float | None:
    """GFLOP of one ``size`` x ``size`` image: the card's ``gflops`` (at ``flops_input_size``, scaled by area), else
    TensorFlow's profiler on ``net``; None where neither is available."""
    if card.get("gflops"):
        return float(card["gflops"]) * (size / float(card.get("flops_input_size", 448))) ** 2
    from model.profile import can_count_flops, count_flops

    return count_flops(net, size) / 1e9 if can_count_flops() else None


def peak_gflops(precision: str, channels: int = PEAK_CONV[0], side: int = PEAK_CONV[1], runs: int = 10,
                threads: int = 0) -> dict:
    """This machine's peak in ``precision`` (fp32 / bf16 / int8) as OpenVINO reaches it: GFLOP/s of a large 3x3
    convolution (``channels`` -> ``channels`` on ``side`` x ``side``, batch 1, latency hint, all cores), median of
    ``runs``. int8 is the pattern NNCF writes (quantised activations, int8 weights with a scale); the kernel OpenVINO
    chose is returned, so a row that says int8 is known to run an int8 kernel (e.g. brgconv_avx512_amx_I8)."""
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    data = ops.parameter([1, channels, side, side], ov.Type.f32, name="x")
    weights = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    if precision == "int8":
        lo, hi = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
        data_in = ops.fake_quantize(data, lo, hi, lo, hi, 256)
        codes = ops.constant(np.clip(np.round(weights * 32), -127, 127).astype(np.int8))
        kernel = ops.multiply(ops.convert(codes, ov.Type.f32),
                              ops.constant(np.full((channels, 1, 1, 1), 1 / 32, np.float32)))
    else:
        data_in, kernel = data, ops.constant(weights)
    conv = ops.convolution(data_in, kernel, [1, 1], [1, 1], [1, 1], [1, 1])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(ov.Model([conv], [data]), "CPU", config)
    request = compiled.create_infer_request()
    x = rng.uniform(0, 4, (1, channels, side, side)).astype(np.float32)
    for _ in range(3):
        request.infer({0: x})
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: x})
        seconds.append(time.perf_counter() - start)
    kernels = [op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ops()
               if "primitiveType" in op.get_rt_info() and op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    flop = 2 * channels * channels * 9 * side * side
    return {"precision": precision, "gflops": flop / float(np.median(seconds)) / 1e9,
            "probe": f"conv3x3 {channels}->{channels} {side}x{side}", "kernel": ",".join(kernels)}


def machine_peaks(precisions: tuple[str, ...] = ("fp32", "bf16", "int8"), threads: int = 0) -> dict[str, dict]:
    """``peak_gflops`` for each precision this CPU runs in OpenVINO (bf16 only where OpenVINO reports BF16)."""
    from .precision import openvino_capabilities

    return {p: peak_gflops(p, threads=threads) for p in precisions
            if p != "bf16" or "BF16" in openvino_capabilities()}


# ---------------------------------------------------------------------------------------------- pipelines
def camera_pipeline(engine: Engine, frames: list[np.ndarray], overlap: bool, jpeg_quality: int = 80,
                    throughput: bool = False) -> float:
    """Frames per second of camera.py's own loop (``crackseg.pipeline.FramePipeline``) on ``frames`` saved as a
    folder of JPEGs: read + decode (``FrameSource``) -> predict (preprocess + inference) -> mask -> crack statistics
    -> overlay -> JPEG encode + stream header, handed to a sender that discards them (camera.py ``--send`` without a
    network, no ``--save``, headless). ``overlap``: camera.py's ``--overlap``; ``throughput``: its ``--throughput``
(asynchronous requests in flight, what a folder or video file gets by default)."""
    from .pipeline import FramePipeline
    from .sources import FrameSource

    with tempfile.TemporaryDirectory(prefix="crackseg_camera_") as folder:
        for i, frame in enumerate(frames):
            cv2.imwrite(str(Path(folder) / f"{i:06d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        source = FrameSource(folder)
        engine.predict(frames[0])  # warm-up: the first call compiles / allocates
        if throughput:  # the throughput mode compiles a model of its own (THROUGHPUT hint): not part of the rate
            for _ in engine.predict_many([frames[0]]):
                pass
        pipeline = FramePipeline(engine, send=lambda header, jpeg: None, device="bench", jpeg_quality=jpeg_quality,
                                 overlap=overlap, throughput=throughput)
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
    many = camera_pipeline(engine, frames, overlap=True, throughput=True)
    return {"backend": engine.backend, "precision": engine.precision, "frames": len(frames),
            "pure_inference_fps": pure, "pipeline_sequential_fps": sequential, "pipeline_overlapped_fps": overlapped,
            "overlapped_vs_pure_pct": 100.0 * overlapped / pure, "pipeline_throughput_fps": many}


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

    lines = [f"{'backend':12s} {'precision':9s} {'graph':6s} {'images/s':>9s} {'latency ms':>11s} {'vs keras':>9s} "
             f"{'F1 delta':>9s} {'mask agree %':>13s} {'GFLOP/s':>8s} {'% peak':>7s} {'peak RSS MB':>12s}"]
    for r in rows:
        lines.append(f"{r['backend']:12s} {r['precision']:9s} {r.get('graph', ''):6s} {num(r['images_per_s'], '9.3f')} "
                     f"{num(r['latency_ms'], '11.0f')} {num(r['ratio_vs_keras_fp32'], '8.2f')}x "
                     f"{num(r['f1_delta'], '+9.4f')} {num(r['mask_agreement_pct'], '13.3f')} "
                     f"{num(r.get('gflops_per_s'), '8.1f')} {num(r.get('pct_of_peak'), '7.1f')} "
                     f"{num(r['peak_rss_delta_mb'], '12.0f')}{'  <- ' + r['default'] if r.get('default') else ''}")
    return "\n".join(lines)


def format_model_comparison(models: dict[str, dict]) -> str:
    """One line per model of a several-model run: what ``--precision=auto`` runs (its marked row, else Keras fp32),
    its images/s as a ratio to the first model's, and its strict F1 on the benchmark images. Same images, same CPU,
    same run: the only way speeds of two models compare."""
    picked = {}
    for name, measured in models.items():
        rows = measured.get("rows", [])
        row = next((r for r in rows if r.get("default")), None) or next(
            (r for r in rows if r["backend"] == "keras" and r["precision"] == "fp32"), None)
        if row is not None:
            picked[name] = row
    if not picked:
        return "models: no row measured"
    base = next(iter(picked.values()))["images_per_s"]
    lines = [f"{'model':40s} {'row (auto)':22s} {'images/s':>9s} {'vs first':>9s} {'F1':>7s} {'GFLOP/img':>10s}"]
    for name, row in picked.items():
        gflop = models[name].get("gflop_per_image")
        lines.append(f"{name[-40:]:40s} {row['backend'] + ' ' + row['precision'] + ' ' + row.get('graph', ''):22s} "
                     f"{row['images_per_s']:9.3f} {row['images_per_s'] / base:8.2f}x "
                     f"{'n/a' if row.get('f1') is None else format(row['f1'], '7.4f')} "
                     f"{'n/a' if gflop is None else format(gflop, '10.2f')}")
    return "\n".join(lines)


def machine_facts() -> dict:
    """CPU model, core count and the SIMD extensions that decide bf16 / int8 speed (Linux /proc/cpuinfo), and
    ``line``: the one-line form every speed figure is reported with."""
    from .precision import machine_line

    facts = {"cpu": "unknown", "cores": os.cpu_count(), "line": machine_line()}
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
    from .precision import MACHINE_FLAGS as wanted

    facts["simd"] = [f for f in wanted if f in flags]
    try:
        import openvino as ov

        facts["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except ImportError:
        pass
    return facts
