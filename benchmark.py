"""benchmark.py: every backend / precision side by side on the same validation images, in one run.

    python benchmark.py --size 448 --json runs_bench.json            # the table in README.md (Inference speed)
    python benchmark.py --model weights/student.keras --runs 20
    python benchmark.py --size 64 --runs 2 --width 4 --blocks 1 --no-camera --no-training   # a quick check

Per backend: images/s and latency (median of --runs timed predict calls after --warmup), peak RSS delta, the ratio
to Keras fp32 and the strict-F1 change and mask agreement vs Keras fp32 on --images validation images (real ones
from --data, else synthetic). Then camera.py's per-frame pipeline (decode, preprocess, infer, overlay, encode)
sequential and overlapped vs pure inference on the default CPU backend, and the training input pipeline vs the
model-only train step. Ratios, not absolute times, carry across machines. --skip: e.g. "keras:mixed_bf16,openvino".
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure  # noqa: E402

model = "student"               # .keras file or a preset name (untrained)
size = 448                      # square input (multiple of 4)
runs = 20                       # timed predict calls per backend (median reported)
warmup = 2
images = 8                      # validation images for F1 / mask agreement (and int8 calibration)
data = "../shared/datasets"     # dataset root; synthetic images when absent
lists = "datasets/splits"
threads = 0                     # inference threads for ONNX Runtime / OpenVINO; 0: the runtime's default (all cores)
width = None                    # preset overrides (tests use a tiny network); None: the preset's own
blocks = None
skip = ""                       # comma-separated backend or backend:precision to leave out
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


def model_spec(workdir: Path) -> str:
    """--model, or a saved tiny variant of the preset when --width / --blocks override it."""
    if width is None and blocks is None:
        return model
    import model as mcff

    net = mcff.deploy_model(mcff.build_model(model, None, width=width, blocks=blocks))
    path = workdir / f"{model}_w{width}_b{blocks}.keras"
    net.save(path)
    return str(path)


def main() -> dict:
    if size % 4:
        sys.exit(f"error: --size must be a multiple of 4, got {size}")
    machine = bench.machine_facts()
    print(f"machine: {machine}")
    pictures, masks, described = bench.benchmark_images(size, images, data, lists)
    print(f"images: {described}")
    report = {"command": " ".join(["python", "benchmark.py", *sys.argv[1:]]), "machine": machine,
              "images": described, "size": size, "runs": runs, "memory": "peak RSS delta from before opening the "
              "engine to its last timed run (sampled every 5 ms)"}
    with tempfile.TemporaryDirectory(prefix="crackseg_benchmark_") as tmp:
        spec = model_spec(Path(tmp))
        rows = bench.backend_rows(spec, pictures, masks, runs, warmup, threads,
                                  tuple(s.strip() for s in skip.split(",") if s.strip()))
        report["rows"] = rows
        print(bench.format_table(rows))
        if camera:
            try:
                with open_engine(spec, default_cpu_backend()) as engine:
                    frames = [pictures[i % len(pictures)] for i in range(camera_frames)]
                    report["camera"] = bench.camera_rows(engine, frames, max(2, min(runs, 5)))
                c = report["camera"]
                print(f"camera pipeline [{c['backend']}]: pure inference {c['pure_inference_fps']:.2f} FPS, "
                      f"end to end sequential {c['pipeline_sequential_fps']:.2f} FPS, overlapped "
                      f"{c['pipeline_overlapped_fps']:.2f} FPS ({c['overlapped_vs_pure_pct']:.0f}% of pure)")
            except EngineError as exc:
                print(f"camera pipeline: skipped ({exc})")
        if training:
            t = bench.training_rows(spec, pictures, masks, min(train_crop, size), train_batch, train_steps)
            report["training"] = t
            print(f"training [{t['crop']}px crops, batch {t['batch_size']}, {t['steps']} steps]: input pipeline "
                  f"{t['input_pipeline_images_per_s']:.1f} images/s, model-only train step "
                  f"{t['model_only_images_per_s']:.2f} images/s, both {t['fit_images_per_s']:.2f} images/s "
                  f"({t['fit_vs_model_only_pct']:.0f}% of model-only)")
    if json:
        atomic_write_json(json, report)
        print(f"wrote {json}")
    return report


if __name__ == "__main__":
    main()
