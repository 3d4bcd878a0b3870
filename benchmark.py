"""benchmark.py: every backend / precision side by side on the same validation images, in one run.

    python benchmark.py --size 448 --json runs_bench.json            # the table in README.md (Inference speed)
    python benchmark.py --model weights/student.keras --runs 20
    python benchmark.py --size 64 --runs 2 --width 4 --blocks 1 --no-camera --no-training   # a quick check
    python benchmark.py --model weights/student.keras,weights/teacher.keras --rounds 3        # student vs teacher

Per backend: images/s and latency (median of --runs timed predict calls after --warmup), peak RSS delta, the ratio
to Keras fp32 and the strict-F1 change and mask agreement vs Keras fp32 on --images validation images (real ones
from --data, else synthetic), the effective GFLOP/s (the model card's GFLOPs per image, scaled to --size) and its
share of this machine's peak in the row's precision (a large 3x3 convolution in OpenVINO, measured first; --peak).
The row --precision=auto runs (camera.py / evaluate.py's default) is marked, with the reason. Then camera.py's
per-frame pipeline (decode, preprocess, infer, overlay, encode) sequential and overlapped vs pure inference on the
default CPU backend, and the training input pipeline vs the model-only train step. Ratios, not absolute times,
carry across machines. --skip: e.g. "keras:mixed_bf16,openvino".
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

model = "student"               # .keras file or a preset name (untrained); A,B: several models in one run (e.g.
                                # weights/student.keras,weights/teacher.keras), on the same images and CPU
size = 448                      # square input (multiple of 4)
runs = 20                       # timed predict calls per backend and round (median reported)
rounds = 1                      # >1: every backend timed again in this many interleaved rounds (drift on a shared
                                # machine then reaches all rows alike; the median is over all rounds)
warmup = 2
images = 8                      # validation images for F1 / mask agreement (and int8 calibration)
data = "../shared/datasets"     # dataset root; synthetic images when absent
lists = "datasets/splits"
threads = 0                     # inference threads for ONNX Runtime / OpenVINO; 0: the runtime's default (all cores)
width = None                    # preset overrides (tests use a tiny network); None: the preset's own
blocks = None
skip = ""                       # comma-separated backend, backend:precision or backend:precision:graph to leave out
peak = True                     # measure this machine's peak GFLOP/s per precision (OpenVINO convolution)
camera = True                   # measure the camera pipeline
camera_frames = 6
training = True                 # measure the training input pipeline
train_crop = 256
train_batch = 4
train_steps = 3
json = ""                       # write {"rows", "camera", "training", "machine", ...} here

config = configure(globals(), __doc__)

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from crackseg import bench  # noqa: E402
from crackseg.engines import EngineError, default_cpu_backend, open_engine  # noqa: E402
from crackseg.io import atomic_write_json  # noqa: E402


def model_spec(workdir: Path, name: str) -> str:
    """``name``, or a saved tiny variant of the preset when --width / --blocks override it."""
    if width is None and blocks is None:
        return name
    import model as mcff

    net = mcff.deploy_model(mcff.build_model(name, None, width=width, blocks=blocks))
    path = workdir / f"{name}_w{width}_b{blocks}.keras"
    net.save(path)
    return str(path)


def gflop_of(spec: str) -> float | None:
    from crackseg.engines import is_preset, load_deployable_keras, read_model_card

    card = {} if is_preset(spec) else read_model_card(spec)
    return bench.gflop_per_image(None if card.get("gflops") else load_deployable_keras(spec), card, size)


def default_choice(spec: str) -> tuple[str, str]:
    """What --precision=auto runs for this model: judged on the shipped .onnx beside a .keras file (its int8 model
    and card), else on the model itself."""
    from crackseg.engines import auto_precision

    onnx_file = Path(spec).with_suffix(".onnx")
    return auto_precision(str(onnx_file) if onnx_file.is_file() else spec)


def camera_model(spec: str) -> str:
    """What camera.py runs for this model: the shipped .onnx beside a .keras file (with its int8 model), else it."""
    onnx_file = Path(spec).with_suffix(".onnx")
    return str(onnx_file) if Path(spec).suffix == ".keras" and onnx_file.is_file() else spec


def measure_model(spec: str, pictures, masks, peaks: dict) -> dict:
    """Every backend row of one model on the shared images, plus its camera pipeline and training step."""
    out: dict = {}
    gflop = gflop_of(spec)
    out["gflop_per_image"] = gflop
    rows = bench.backend_rows(spec, pictures, masks, runs, warmup, threads,
                              tuple(s.strip() for s in skip.split(",") if s.strip()), gflop_per_image=gflop,
                              peaks={k: v["gflops"] for k, v in peaks.items()}, rounds=rounds)
    chosen, reason = default_choice(spec)
    for row in rows:
        if row["backend"] == "openvino" and row["precision"] == chosen and row["graph"] == (
                "full" if chosen == "int8" else "fast"):
            row["default"] = "default (--precision=auto)"
    out["rows"], out["auto"] = rows, {"precision": chosen, "reason": reason}
    print(bench.format_table(rows))
    print(f"GFLOP per image: {gflop if gflop is None else round(gflop, 2)}; --precision=auto here: {reason}")
    if camera:
        try:
            with open_engine(camera_model(spec), default_cpu_backend(), precision="auto") as engine:
                frames = [pictures[i % len(pictures)] for i in range(camera_frames)]
                out["camera"] = bench.camera_rows(engine, frames, max(2, min(runs, 5)))
            c = out["camera"]
            print(f"camera pipeline [{c['backend']} {c['precision']}]: pure inference "
                  f"{c['pure_inference_fps']:.2f} FPS, end to end sequential {c['pipeline_sequential_fps']:.2f} "
                  f"FPS, overlapped {c['pipeline_overlapped_fps']:.2f} FPS ({c['overlapped_vs_pure_pct']:.0f}% of "
                  f"pure), throughput mode (folders / videos) {c['pipeline_throughput_fps']:.2f} FPS")
        except EngineError as exc:
            print(f"camera pipeline: skipped ({exc})")
    if training:
        t = bench.training_rows(spec, pictures, masks, min(train_crop, size), train_batch, train_steps)
        out["training"] = t
        print(f"training [{t['crop']}px crops, batch {t['batch_size']}, {t['steps']} steps]: input pipeline "
              f"{t['input_pipeline_images_per_s']:.1f} images/s, model-only train step "
              f"{t['model_only_images_per_s']:.2f} images/s, both {t['fit_images_per_s']:.2f} images/s "
              f"({t['fit_vs_model_only_pct']:.0f}% of model-only)")
    return out


def main() -> dict:
    if size % 4:
        sys.exit(f"error: --size must be a multiple of 4, got {size}")
    if rounds < 1:
        sys.exit(f"error: --rounds must be at least 1, got {rounds}")
    machine = bench.machine_facts()
    print(f"machine: {machine['line']}; OpenVINO: {' '.join(machine.get('openvino_capabilities', []))}")
    pictures, masks, described = bench.benchmark_images(size, images, data, lists)
    print(f"images: {described}")
    report = {"command": " ".join(["python", "benchmark.py", *sys.argv[1:]]), "machine": machine,
              "images": described, "size": size, "runs": runs, "rounds": rounds,
              "memory": "peak RSS delta from before opening the engine to its last timed run of round 1 (sampled "
                        "every 5 ms)"}
    with tempfile.TemporaryDirectory(prefix="crackseg_benchmark_") as tmp:
        peaks = bench.machine_peaks(threads=threads) if peak else {}
        for p in peaks.values():
            print(f"peak {p['precision']}: {p['gflops']:.0f} GFLOP/s ({p['probe']}, OpenVINO kernel {p['kernel']})")
        report["peaks"] = peaks
        names = [m.strip() for m in str(model).split(",") if m.strip()]
        if not names:
            sys.exit("error: --model names no model")
        for i, name in enumerate(names):
            spec = model_spec(Path(tmp), name)
            if len(names) > 1:
                print(f"\n== model {i + 1} of {len(names)}: {name}")
            measured = measure_model(spec, pictures, masks, peaks)
            if i == 0:  # the first model's rows at the top level, as in a one-model report
                report.update(measured)
            report.setdefault("models", {})[name] = measured
        if len(names) > 1:
            print("\n" + bench.format_model_comparison(report["models"]))
    if json:
        atomic_write_json(json, report)
        print(f"wrote {json}")
    return report


if __name__ == "__main__":
    main()
