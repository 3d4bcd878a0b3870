"""The int8 choices measured side by side (docs/speed.md): Conv-only QDQ vs full-graph NNCF int8, per-channel vs
per-tensor weights, calibration set size, accuracy-aware fallback; strict F1 on the full-size validation images
against OpenVINO fp32, single-image latency at --size and throughput over the validation folder.

    python scripts/int8_study.py --onnx=weights/student.onnx --out=/tmp/int8_study   # then read out/study.json

Writes its int8 models into --out, never into weights/. Speed: ratios within one run only.
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

onnx = "weights/student.onnx"     # the shipped export; its _fast.onnx beside it is quantised
out = "/tmp/int8_study"           # folder for the study's models and study.json
data = "../shared/datasets"
lists = "datasets/splits"
calib_sizes = "64,300"            # calibration crops to compare (training split, all datasets)
calib_size = 448
size = 448                        # latency crop
runs = 10
val_per_dataset = 60              # full-size validation images per dataset (0: the whole split)
variants = "qdq,full,full_tensor,full_big,full_ac"  # which models to measure
speed = True                      # also time them (pause other CPU work first)

config = configure(globals(), __doc__)

import numpy as np  # noqa: E402

from crackseg.bench import time_predict  # noqa: E402
from crackseg.data import load_pair, load_split, sample_images, square_crop  # noqa: E402
from crackseg.engines import OpenVinoEngine, fast_onnx_for, read_model_card  # noqa: E402
from crackseg.evaluation import LabelledImage, balanced_subset, evaluate_engine  # noqa: E402
from crackseg.io import atomic_write_json  # noqa: E402
from crackseg.precision import machine_line  # noqa: E402
from crackseg.quantize import quantize_full_int8, quantize_int8  # noqa: E402


def main() -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    fast = fast_onnx_for(onnx)
    threshold = float(read_model_card(onnx).get("threshold", 0.5))
    val = [load_pair(s) for s in balanced_subset(load_split(data, lists)["val"], val_per_dataset)]
    small, big = (int(n) for n in calib_sizes.split(","))
    train = sample_images(data, big, "train", lists)
    crops = [square_crop(image, calib_size) for image in train]
    crops_small = [crops[i] for i in np.unique(np.linspace(0, len(crops) - 1, small).round().astype(int))]
    print(f"machine: {machine_line()}; {len(val)} full-size validation images; calibration {small} / {len(crops)} "
          f"training crops {calib_size}^2", flush=True)
    models: dict[str, tuple[Path, str, dict]] = {"fp32": (fast, "fp32", {}), "bf16": (fast, "bf16", {})}
    names = [v.strip() for v in variants.split(",") if v.strip()]
    if "qdq" in names:
        path = folder / "qdq_int8.onnx"
        start = time.perf_counter()
    if "qdq" in names and not path.is_file():  # a model already in --out is reused (a study resumed)
        quantize_int8(fast, path, crops_small)
    if "qdq" in names:
        models["qdq"] = (path, "int8", {"seconds": round(time.perf_counter() - start, 1), "calibration": small})
    specs = {"full": (crops_small, True, False), "full_tensor": (crops_small, False, False),
             "full_big": (crops, True, False), "full_ac": (crops_small, True, True)}
    for name in names:
        if name in specs:
            calib, per_channel, control = specs[name]
            path = folder / name / "model_int8.xml"
            facts_file = path.with_suffix(".facts.json")
            if path.is_file() and facts_file.is_file():
                models[name] = (path, "int8", json.loads(facts_file.read_text()))
                continue
            _, facts = quantize_full_int8(fast, path, calib, validation=val if control else (), threshold=threshold,
                                          per_channel=per_channel, accuracy_control=control)
            models[name] = (path, "int8", facts)
            atomic_write_json(facts_file, facts)
    results = {"machine": machine_line(), "threshold": threshold, "validation_images": len(val), "models": {}}
    earlier = json.loads((folder / "study.json").read_text()) if (folder / "study.json").is_file() else {}
    labelled = [LabelledImage(image, truth) for image, truth in val]
    for name, (path, precision, facts) in models.items():
        if name in earlier.get("models", {}) and "f1" in earlier["models"][name]:  # F1 once; speed may be re-run
            results["models"][name] = {k: v for k, v in earlier["models"][name].items() if k in
                                       ("file", "precision", "f1", "facts")}
            continue
        engine = OpenVinoEngine(str(path), threshold, precision=precision, cache_dir="")
        f1 = evaluate_engine(engine, labelled)["strict"]["f1"]
        row = {"file": str(path), "precision": engine.precision, "f1": f1, "facts": facts}
        results["models"][name] = row
        print(f"{name:12s} {engine.precision:5s} strict F1 {f1:.4f}", flush=True)
        engine.close()
    base = results["models"]["fp32"]["f1"]
    for row in results["models"].values():
        row["f1_delta"] = row["f1"] - base
    atomic_write_json(folder / "study.json", results)
    if speed:
        measure_speed(results, models, labelled, threshold)
        atomic_write_json(folder / "study.json", results)
    print(f"wrote {folder / 'study.json'}")


def measure_speed(results: dict, models: dict, labelled: list, threshold: float) -> None:
    crop = square_crop(labelled[0].image, size)
    for name, (path, precision, _) in models.items():
        engine = OpenVinoEngine(str(path), threshold, precision=precision, cache_dir="")
        seconds = time_predict(engine, crop, runs, warmup=2)
        report = evaluate_engine(engine, labelled, throughput=True)
        row = results["models"][name]
        row.update({"latency_ms": 1000 * float(np.median(seconds)), "images_per_s_448": 1 / float(np.median(seconds)),
                    "folder_images_per_s": report["fps"], "folder_latency_ms": report["latency_ms"]})
        print(f"{name:12s} {row['precision']:5s} {row['images_per_s_448']:.2f} images/s at {size}^2, "
              f"folder throughput {report['fps']:.2f} images/s (single {report['latency_ms']:.0f} ms)", flush=True)
        engine.close()


if __name__ == "__main__":
    main()
