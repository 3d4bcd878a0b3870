"""TensorRT.py: export the deployable student to ONNX, check it against Keras, and build a TensorRT engine.

    python TensorRT.py --model weights/student.keras --onnx weights/student.onnx
    python TensorRT.py --model student --onnx /tmp/untrained.onnx                    # a preset: toolchain check
    python TensorRT.py --model weights/student.keras --onnx weights/student.onnx \\
                       --engine weights/student_fp16.engine --precision fp16
    python TensorRT.py --model weights/student.keras --no-fast                       # skip student_fast.onnx
    python TensorRT.py --model weights/student.keras --cpu_int8                      # + student_int8.xml (CPU int8)
    python TensorRT.py --model weights/student.onnx --engine weights/student_int8.engine --precision int8 \\
                       --calib_data ../shared/datasets                                # on a Jetson: no TensorFlow

The ONNX model has dynamic batch, height and width, passes onnx.checker, and must match Keras on real images
(max |difference| <= 1e-3, identical masks at the model card's threshold). Where TensorRT and an NVIDIA GPU exist,
an engine is built (fp32 / fp16 / int8 with an entropy calibrator on real training images), saved with its own
model card and checked against ONNX Runtime. Without them this says so in one line; the exit status is non-zero
only when --engine was asked for and cannot be built, or a parity check fails.

--cpu_int8 quantises the whole graph (NNCF, calibrated on --calib_images real training crops of every dataset in
the split lists, accuracy-aware fallback of the layers that cost F1) to student_int8.xml / .bin (OpenVINO IR), and
records in its card (student_int8.json, exports.openvino_int8.validation) the strict F1 of fp32 and int8 on the
full-size validation images: camera.py / evaluate.py --precision=auto pick int8 only when it is within 0.5 pt.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

model = "weights/student.keras"    # .keras file, .onnx file (skip the Keras export) or a preset name (untrained)
onnx = "weights/student.onnx"      # ONNX output (ignored when --model is already .onnx)
opset = 17
threshold = None                   # mask threshold for the parity check; None: the model card's (default 0.5)
data = "../shared/datasets"        # real images: parity on the val split, INT8 calibration on the train split
lists = "datasets/splits"          # folder with train.txt / val.txt; "none": seeded split
parity_images = 8
fast = True                        # also write the clean fast-CPU export beside --onnx (student_fast.onnx), checked
                                   # on OpenVINO (the CPU default backend) against Keras
cpu_int8 = False                   # also write student_int8.xml/.bin: the fast export quantised to full int8 (NNCF) for
                                   # CPUs with VNNI / AMX / AVX2 (--precision=int8|auto on camera.py / evaluate.py),
                                   # calibrated like TensorRT INT8 (--calib_data, --calib_images, --calib_size), checked
                                   # against Keras, its validation F1 vs fp32 recorded in its card
int8_per_channel = True            # --cpu_int8: weight scales per output channel (False: per tensor)
int8_accuracy_control = True       # --cpu_int8: return the layers that cost most F1 to fp32 until within 0.5 pt
int8_val_per_dataset = 60          # --cpu_int8: validation images (full size) per dataset for the F1 check and the
                                   # accuracy control, spread over each dataset's part of the split; 0: all of them
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

from crackseg import onnx_export, parity, quantize, tensorrt  # noqa: E402
from crackseg.card import CardError, complete_card_facts, drop_export, write_export_card  # noqa: E402
from crackseg.data import DataError, sample_images, square_crop  # noqa: E402
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
    if complete_card_facts(model, net):
        print(f"model card of {model}: GFLOPs added (it was written where TensorFlow was not installed)")
    out = onnx_export.export_onnx(net, onnx, opset)
    summary = onnx_export.onnx_summary(out)
    print(f"ONNX: wrote {out} (opset {summary['opset']}, {summary['nodes']} nodes, inputs {summary['inputs']}, "
          f"outputs {summary['outputs']}); onnx.checker: ok")
    reference = KerasEngine(model, threshold, net=net)
    candidate = OnnxEngine(str(out), reference.threshold)
    images = sample_images(data, parity_images, "val", lists)
    result = parity.parity_check(reference, candidate, images, reference.threshold)
    print(parity.format_parity(result))
    card = write_export_card(None if reference.name.endswith("-untrained") else model, out, "onnx",
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

    out = onnx_export.export_onnx(net, fast_onnx_for(plain_onnx), opset, clean=True)
    summary = onnx_export.onnx_summary(out)
    print(f"ONNX (fast CPU): wrote {out} ({summary['nodes']} nodes vs {onnx_export.onnx_summary(plain_onnx)['nodes']})")
    results = {}
    for candidate in (OpenVinoEngine(str(out), reference.threshold), OnnxEngine(str(out), reference.threshold)):
        results[candidate.backend] = parity.parity_check(reference, candidate, images, reference.threshold)
        print(parity.format_parity(results[candidate.backend]))
        candidate.close()
    card = write_export_card(None if reference.name.endswith("-untrained") else model, out, "onnx_fast",
                                {"opset": opset, "nodes": summary["nodes"], "parity_vs_keras": results})
    print(f"model card: {card}")
    if not all(r["passed"] for r in results.values()):
        sys.exit(f"error: {out}: the fast export does not match Keras (see the parity lines above)")
    return out


def calibration_images() -> list:
    """Real training images for int8 calibration (TensorRT and CPU alike), centre-cropped to --calib_size."""
    images = [square_crop(image, calib_size)
              for image in sample_images(calib_data or data, calib_images, "train", lists)]
    print(f"INT8: calibrating on {len(images)} real training images ({calib_size}^2 crops) from {calib_data or data}")
    return images


def validation_pairs() -> list:
    """The validation split's (image, mask) pairs at full size: --int8_val_per_dataset of each dataset (0: all)."""
    from crackseg.data import load_pair, load_split
    from crackseg.evaluation import balanced_subset

    return [load_pair(sample) for sample in balanced_subset(load_split(data, lists)["val"], int8_val_per_dataset)]


def validation_f1(engine, pairs: list) -> float:
    from crackseg.evaluation import LabelledImage, evaluate_engine

    return evaluate_engine(engine, [LabelledImage(image, truth) for image, truth in pairs])["strict"]["f1"]


def export_cpu_int8(reference, images, fast_onnx: Path) -> None:
    """student_int8.xml/.bin beside the fast export: its full-graph int8 quantisation, checked on OpenVINO against
    Keras (at most 1 % of mask pixels may differ) and on the validation split (strict F1 within 0.5 pt of fp32)
    before it replaces any earlier one; its own model card entry ``openvino_int8`` records both."""
    import tempfile

    from crackseg.engines import OpenVinoEngine, int8_ir_for, int8_onnx_for
    from crackseg.precision import MAX_INT8_F1_DROP, machine_line

    out = int8_ir_for(fast_onnx)
    calibration = calibration_images()
    pairs = validation_pairs()
    print(f"INT8: validating on {len(pairs)} full-size validation images ({machine_line()})")
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as scratch:
        candidate_path = Path(scratch) / out.name  # a model that fails a check never replaces the one there
        _, facts = quantize.quantize_full_int8(fast_onnx, candidate_path, calibration, validation=pairs,
                                               threshold=reference.threshold, per_channel=int8_per_channel,
                                               accuracy_control=int8_accuracy_control)
        candidate = OpenVinoEngine(str(candidate_path), reference.threshold, cache_dir="")
        result = parity.parity_check(reference, candidate, images, reference.threshold, "int8")
        print(parity.format_parity(result))
        fp32 = OpenVinoEngine(str(fast_onnx), reference.threshold, precision="fp32", cache_dir="")
        f1_fp32, f1_int8 = validation_f1(fp32, pairs), validation_f1(candidate, pairs)
        int8_runs = f"OpenVINO int8, the unquantised ops in {candidate.rest_precision}"
        candidate.close()
        fp32.close()
        delta = f1_int8 - f1_fp32
        print(f"INT8: validation strict F1 {f1_int8:.4f} vs fp32 {f1_fp32:.4f} ({100 * delta:+.2f} pt) on "
              f"{len(pairs)} full-size images")
        if not result["passed"]:
            sys.exit(f"error: {out}: not written, the int8 model differs from Keras on more than 1 % of mask pixels")
        if delta < -MAX_INT8_F1_DROP:
            sys.exit(f"error: {out}: not written, int8 loses {-100 * delta:.2f} pt validation F1 (more than "
                     f"{100 * MAX_INT8_F1_DROP:g} pt)")
        os.replace(candidate_path.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(candidate_path, out)
    print(f"OpenVINO IR (CPU int8): wrote {out} + {out.with_suffix('.bin').name} "
          f"({out.with_suffix('.bin').stat().st_size / 2**20:.1f} MiB)")
    stale = int8_onnx_for(fast_onnx)
    if stale.is_file():  # the older Conv-only QDQ model shares the card name; the IR supersedes it
        stale.unlink()
        print(f"removed {stale} (the Conv-only QDQ int8 model, superseded by {out.name})")
    drop_export(out, "onnx_int8")
    validation = {"split": "val", "images": len(pairs), "per_dataset": int8_val_per_dataset, "full_size": True,
                  "data": data, "lists": lists,
                  "threshold": reference.threshold, "fp32_f1": f1_fp32, "int8_f1": f1_int8, "f1_delta": delta,
                  "fp32": "OpenVINO fp32 on " + fast_onnx.name, "int8": int8_runs}
    card = write_export_card(None if reference.name.endswith("-untrained") else model, out, "openvino_int8",
                             {"source": fast_onnx.name, "quantization": facts, "calibration_images": len(calibration),
                              "calibration_size": calib_size, "parity_vs_keras": result, "validation": validation})
    print(f"model card: {card}")


def build_engine(onnx_path: Path) -> None:
    calibration = calibration_images() if precision == "int8" else None
    cache = calib_cache or (str(Path(engine).with_suffix(".calib")) if precision == "int8" else None)
    tensorrt.build_tensorrt_engine(onnx_path, engine, precision, calibration, calib_size, calibration_cache=cache,
                             min_size=min_size, opt_size=opt_size, max_size=max_size, max_batch=max_batch,
                             workspace_mb=workspace_mb)
    print(f"TensorRT: wrote {engine} ({precision})")
    from crackseg.engines import TensorRTEngine

    reference = OnnxEngine(str(onnx_path), threshold)
    candidate = TensorRTEngine(engine, reference.threshold)
    images = sample_images(data, parity_images, "val", lists)
    result = parity.parity_check(reference, candidate, images, reference.threshold, precision)
    print(parity.format_parity(result))
    info = {"precision": precision, "onnx": Path(onnx_path).name, "tensorrt": tensorrt.tensorrt_status()[1],
            "profile": {"min": min_size, "opt": opt_size, "max": max_size, "max_batch": max_batch},
            "parity_vs_onnxruntime": result}
    card = write_export_card(str(onnx_path), engine, "tensorrt", info)
    print(f"model card: {card}")
    candidate.close()
    if not result["passed"]:
        sys.exit(f"error: {engine}: TensorRT does not match ONNX Runtime at {precision} (see the parity line above)")


if __name__ == "__main__":
    if precision not in parity.PARITY_TOLERANCE:
        sys.exit(f"error: --precision must be one of {sorted(parity.PARITY_TOLERANCE)}, got {precision!r}")
    try:
        onnx_path = export_and_check()
        available, status = tensorrt.tensorrt_status()
        if not engine:
            print(status if not available else f"{status}: pass --engine=OUT.engine to build an engine")
        elif not available:
            sys.exit(f"error: cannot build {engine}: {status}")
        else:
            build_engine(onnx_path)
    except (EngineError, CardError, DataError) as exc:
        sys.exit(f"error: {exc}")
