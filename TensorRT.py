"""TensorRT.py: export the deployable student to ONNX, check it against Keras, and build a TensorRT engine.

    python TensorRT.py --model weights/student.keras --onnx weights/student.onnx
    python TensorRT.py --model student --onnx /tmp/untrained.onnx                    # a preset: toolchain check
    python TensorRT.py --model weights/student.keras --onnx weights/student.onnx \\
                       --engine weights/student_fp16.engine --precision fp16
    python TensorRT.py --model weights/student.keras --no-fast                       # skip student_fast.onnx
    python TensorRT.py --model weights/student.keras --cpu_int8                      # + student_int8.onnx (CPU int8)
    python TensorRT.py --model weights/student.onnx --engine weights/student_int8.engine --precision int8 \\
                       --calib_data ../shared/datasets                                # on a Jetson: no TensorFlow

The ONNX model has dynamic batch, height and width, passes onnx.checker, and must match Keras on real images
(max |difference| <= 1e-3, identical masks at the model card's threshold). Where TensorRT and an NVIDIA GPU exist,
an engine is built (fp32 / fp16 / int8 with an entropy calibrator on real training images), saved with its own
model card and checked against ONNX Runtime. Without them this says so in one line; the exit status is non-zero
only when --engine was asked for and cannot be built, or a parity check fails.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure  # noqa: E402

model = "weights/student.keras"    # .keras file, .onnx file (skip the Keras export) or a preset name (untrained)
onnx = "weights/student.onnx"      # ONNX output (ignored when --model is already .onnx)
opset = 17
threshold = None                   # mask threshold for the parity check; None: the model card's (default 0.5)
data = "../shared/datasets"        # real images: parity on the val split, INT8 calibration on the train split
lists = "datasets/splits"          # folder with train.txt / val.txt; "none": seeded split
parity_images = 8
fast = True                        # also write the clean fast-CPU export beside --onnx (student_fast.onnx), checked
                                   # on OpenVINO (the CPU default backend) against Keras
cpu_int8 = False                   # also write student_int8.onnx: the fast export quantised to int8 (QDQ) for CPUs with
                                   # VNNI / AMX (--precision=int8 on camera.py / evaluate.py), calibrated like TensorRT
                                   # INT8 (--calib_data, --calib_images, --calib_size) and checked against Keras
# TensorRT -------------------------------------------------------------------------------------------------------
engine = ""                        # engine output, e.g. weights/student_fp16.engine; "" = ONNX only
precision = "fp16"                 # fp32 | fp16 | int8
calib_data = ""                    # INT8 calibration images (dataset root or image folder, train split); "" = --data
calib_images = 64                  # (TensorRT INT8 and --cpu_int8 alike)
calib_size = 448                   # calibration crops (multiple of 4)
calib_cache = ""                   # reuse / write the INT8 scale cache here; "" = beside the engine
min_size = 32                      # optimization profile: H, W from min_size to max_size, tuned for opt_size
opt_size = 448
max_size = 1024
max_batch = 4
workspace_mb = 2048
_TRAINED_ONNX = onnx  # the shipped file: never overwritten by an untrained preset

config = configure(globals(), __doc__)

from pathlib import Path  # noqa: E402

from crackseg import export as ex  # noqa: E402
from crackseg.engines import EngineError, KerasEngine, OnnxEngine, is_preset, load_deployable_keras  # noqa: E402


def export_and_check() -> Path:
    """The ONNX file to build from: exported from Keras and parity-checked, or --model itself when .onnx."""
    if Path(model).suffix.lower() == ".onnx":
        if cpu_int8:
            sys.exit(f"error: --cpu_int8 quantises the Keras export and checks it against Keras; give the .keras "
                     f"file, not {model}")
        print(f"ONNX: using {model} as given (no Keras export)")
        return Path(model)
    if is_preset(model) and Path(onnx) == Path(_TRAINED_ONNX):
        sys.exit(f"error: --model {model} is an untrained preset; give --onnx=OUT.onnx (refusing to overwrite {onnx})")
    net = load_deployable_keras(model)
    if ex.complete_card_facts(model, net):
        print(f"model card of {model}: GFLOPs added (it was written where TensorFlow was not installed)")
    out = ex.export_onnx(net, onnx, opset)
    summary = ex.onnx_summary(out)
    print(f"ONNX: wrote {out} (opset {summary['opset']}, {summary['nodes']} nodes, inputs {summary['inputs']}, "
          f"outputs {summary['outputs']}); onnx.checker: ok")
    reference = KerasEngine(model, threshold, net=net)
    candidate = OnnxEngine(str(out), reference.threshold)
    images = ex.sample_images(data, parity_images, "val", lists)
    result = ex.parity_check(reference, candidate, images, reference.threshold)
    print(ex.format_parity(result))
    card = ex.write_export_card(None if reference.name.endswith("-untrained") else model, out, "onnx",
                                {"opset": opset, "dynamic": ["batch", "height", "width"], "parity_vs_keras": result})
    print(f"model card: {card}")
    if not result["passed"]:
        sys.exit(f"error: {out}: ONNX Runtime does not match Keras (see the parity line above)")
    if fast or cpu_int8:
        fast_onnx = export_fast(net, reference, images, out)
        if cpu_int8:
            export_cpu_int8(reference, images, fast_onnx)
    return out


def export_fast(net, reference, images, plain_onnx: Path) -> Path:
    """The clean export (native InstanceNormalization / dilated Conv) beside the plain one, parity-checked on
    OpenVINO and ONNX Runtime against Keras; its own model card entry ``onnx_fast``."""
    from crackseg.engines import OpenVinoEngine, fast_onnx_for

    out = ex.export_onnx(net, fast_onnx_for(plain_onnx), opset, clean=True)
    summary = ex.onnx_summary(out)
    print(f"ONNX (fast CPU): wrote {out} ({summary['nodes']} nodes vs {ex.onnx_summary(plain_onnx)['nodes']})")
    results = {}
    for candidate in (OpenVinoEngine(str(out), reference.threshold), OnnxEngine(str(out), reference.threshold)):
        results[candidate.backend] = ex.parity_check(reference, candidate, images, reference.threshold)
        print(ex.format_parity(results[candidate.backend]))
        candidate.close()
    card = ex.write_export_card(None if reference.name.endswith("-untrained") else model, out, "onnx_fast",
                                {"opset": opset, "nodes": summary["nodes"], "parity_vs_keras": results})
    print(f"model card: {card}")
    if not all(r["passed"] for r in results.values()):
        sys.exit(f"error: {out}: the fast export does not match Keras (see the parity lines above)")
    return out


def calibration_images() -> list:
    """Real training images for int8 calibration (TensorRT and CPU alike), centre-cropped to --calib_size."""
    images = [ex.square_crop(image, calib_size)
              for image in ex.sample_images(calib_data or data, calib_images, "train", lists)]
    print(f"INT8: calibrating on {len(images)} real training images ({calib_size}^2 crops) from {calib_data or data}")
    return images


def export_cpu_int8(reference, images, fast_onnx: Path) -> None:
    """student_int8.onnx beside the fast export: its QDQ int8 quantisation, checked on OpenVINO against Keras (at
    most 1 % of mask pixels may differ) before it replaces any earlier one; its own model card entry ``onnx_int8``."""
    from crackseg.engines import OpenVinoEngine, int8_onnx_for
    from crackseg.io import atomic_path

    out = int8_onnx_for(fast_onnx)
    with atomic_path(out) as candidate_path:  # a model that fails the check never replaces the one there
        ex.quantize_int8(fast_onnx, candidate_path, calibration_images())
        candidate = OpenVinoEngine(str(candidate_path), reference.threshold)
        result = ex.parity_check(reference, candidate, images, reference.threshold, "int8")
        candidate.close()
        print(ex.format_parity(result))
        if not result["passed"]:
            sys.exit(f"error: {out}: not written, the int8 model differs from Keras on more than 1 % of mask pixels")
    print(f"ONNX (CPU int8): wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    card = ex.write_export_card(None if reference.name.endswith("-untrained") else model, out, "onnx_int8",
                                {"source": fast_onnx.name, "quantization": "QDQ: Conv / ConvTranspose int8 weights "
                                 "per channel, uint8 activations, min/max calibration", "calibration_images":
                                 calib_images, "calibration_size": calib_size, "parity_vs_keras": result})
    print(f"model card: {card}")


def build_engine(onnx_path: Path) -> None:
    calibration = calibration_images() if precision == "int8" else None
    cache = calib_cache or (str(Path(engine).with_suffix(".calib")) if precision == "int8" else None)
    ex.build_tensorrt_engine(onnx_path, engine, precision, calibration, calib_size, calibration_cache=cache,
                             min_size=min_size, opt_size=opt_size, max_size=max_size, max_batch=max_batch,
                             workspace_mb=workspace_mb)
    print(f"TensorRT: wrote {engine} ({precision})")
    from crackseg.engines import TensorRTEngine

    reference = OnnxEngine(str(onnx_path), threshold)
    candidate = TensorRTEngine(engine, reference.threshold)
    images = ex.sample_images(data, parity_images, "val", lists)
    result = ex.parity_check(reference, candidate, images, reference.threshold, precision)
    print(ex.format_parity(result))
    info = {"precision": precision, "onnx": Path(onnx_path).name, "tensorrt": ex.tensorrt_status()[1],
            "profile": {"min": min_size, "opt": opt_size, "max": max_size, "max_batch": max_batch},
            "parity_vs_onnxruntime": result}
    card = ex.write_export_card(str(onnx_path), engine, "tensorrt", info)
    print(f"model card: {card}")
    candidate.close()
    if not result["passed"]:
        sys.exit(f"error: {engine}: TensorRT does not match ONNX Runtime at {precision} (see the parity line above)")


if __name__ == "__main__":
    if precision not in ex.PARITY_TOLERANCE:
        sys.exit(f"error: --precision must be one of {sorted(ex.PARITY_TOLERANCE)}, got {precision!r}")
    try:
        onnx_path = export_and_check()
        available, status = ex.tensorrt_status()
        if not engine:
            print(status if not available else f"{status}: pass --engine=OUT.engine to build an engine")
        elif not available:
            sys.exit(f"error: cannot build {engine}: {status}")
        else:
            build_engine(onnx_path)
    except EngineError as exc:
        sys.exit(f"error: {exc}")
