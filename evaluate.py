"""evaluate.py: one evaluator for every stage -- a model file on a folder of images, or saved predictions.

    python evaluate.py --model weights/student.keras --images DIR --masks DIR [--json OUT.json]
    python evaluate.py --pred DIR --masks DIR [--json OUT.json]
    python evaluate.py --model weights/student.keras --data ../shared/datasets --subset datasets/splits/val.txt
    python evaluate.py --model weights/student.keras --compare runs/new/student.keras --data ../shared/datasets \
                       --subset datasets/splits/val.txt            # is the new model better on these images?

--model: any format crackseg.engines opens (.keras, .onnx, TensorRT .engine); threshold from its model card unless
--threshold. --pred: PNG/BMP/TIFF probability maps (8-bit: value / 255, 16-bit: value / 65535, float TIFF in
[0, 1]) or binary masks (0/255, or an 8-bit map holding only 0 and 1); default threshold 0.5.
Masks: PNG 0/255 or 0/1, or CrackForest .mat. Files are paired by stem; an unpaired, unreadable or wrongly sized
file stops the run with one line naming it. --subset=LIST evaluates only the images a split list names (ids or
stems; names of other folders are ignored), e.g. --subset=datasets/splits/val.txt; with --data, an id picks its
sample where two folders hold one stem (DeepCrack's test images reuse train stems).
--data=ROOT[,ROOT...] replaces --images and --masks: the images and masks of dataset roots in any layout
crackseg.data reads (--pred files are then paired with their masks by stem). When the images come from several
datasets (the folder holding each image folder, e.g. CrackForest, DeepCrack), each one is reported too.
Prints a table (strict / tolerant P R F1 IoU, centreline P R F1, ODS, OIS, mIoU, images/s) and writes it as JSON
with --json (per-dataset reports under "by_dataset"). With --model, images/s is the throughput over the whole
folder (decode, inference and scoring overlapped; --no-throughput: one image after another) and the single-image
latency is printed beside it. --compare=B: B against --model (A) on the same images, B - A strict / tolerant /
centreline F1 with a paired bootstrap interval overall and per dataset, and each model's balanced val_score (mean
over datasets of strict F1 at one threshold, the rule training selects by); the JSON holds both reports ("a", "b")
and "difference".
Centreline F1 (width-free): both masks thinned to one-pixel skeletons and matched within --distance pixels, so a
model is not scored on agreeing with an annotation's width (CRACK500 paints full width, CrackForest and AigleRN
trace 2-3 px lines); crackseg.metrics has the definitions.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

model = None          # a model file (.keras / .onnx / .engine) ...
images = None         # ... and its folder of images
pred = None           # or: a folder of saved predictions
masks = None          # ground-truth folder (both modes)
data = None           # or, instead of --images / --masks: dataset roots (comma-separated), reported per dataset
json = None           # write the report here as JSON
threshold = None      # None: the model card's (--model) or 0.5
distance = 2          # tolerance of the tolerant and centreline metrics (Chebyshev pixels)
backend = "auto"      # --model only: auto (CPU: openvino) | keras | onnx | openvino | tensorrt
precision = "auto"    # --model only: auto (the fastest accurate one for this CPU: int8 with VNNI / AMX / AVX2 when
                      # the int8 model's card is within 0.5 pt F1, else bf16, else fp32; the model: line says why) |
                      # fp32 | bf16 (OpenVINO, where the CPU reports BF16) | int8 (OpenVINO, student_int8.xml)
throughput = True     # --model only: several asynchronous requests in flight (OpenVINO), decoding overlapped;
                      # images/s of the whole folder, plus the single-image latency. False: one image at a time
subset = None         # a split list file: evaluate only the images it names
compare = None        # --model only: a second model file on the same images; prints B - A (B = this file) with a
                      # paired 95 % bootstrap interval, overall and per dataset (is a fine-tune really better?)

config = configure(globals(), __doc__)

from crackseg.data import DataError  # noqa: E402
from crackseg.engines import EngineError  # noqa: E402
from crackseg.evaluation import (compare_models, dataset_pairs, evaluate_model, evaluate_predictions,  # noqa: E402
                                 folder_pairs, format_comparison, format_reports)
from crackseg.io import atomic_write_json  # noqa: E402


def main(config: dict) -> dict:
    if config["compare"] and not config["model"]:
        raise SystemExit("error: --compare needs --model (the two model files are compared on the same images)")
    if bool(config["model"]) == bool(config["pred"]):
        raise SystemExit("error: give either --model (with --images) or --pred, and --masks; --help explains")
    if config["data"] and (config["images"] or config["masks"]):
        raise SystemExit("error: --data replaces --images and --masks; give one or the other")
    if not config["masks"] and not config["data"]:
        raise SystemExit("error: --masks is required")
    if config["model"] and not config["images"] and not config["data"]:
        raise SystemExit("error: --model needs --images")
    try:
        if config["data"]:
            pairs = dataset_pairs(config["data"], config["pred"], config["subset"])
        else:
            pairs = folder_pairs(config["pred"] or config["images"], config["masks"],
                                 "prediction" if config["pred"] else "image", config["subset"])
        if config["compare"]:
            report = compare_models(config["model"], config["compare"], pairs, config["threshold"],
                                    config["distance"], config["backend"], config["precision"])
            print(f"model A: {report['a']['described']}\nmodel B: {report['b']['described']}")
        elif config["model"]:
            report = evaluate_model(config["model"], pairs, config["threshold"], config["distance"],
                                    config["backend"], config["precision"], config["throughput"])
            print(f"model: {report['described']}")
        else:
            report = evaluate_predictions(pairs, config["threshold"], config["distance"])
    except (DataError, EngineError) as exc:  # bad input: one line naming the file, not a traceback
        raise SystemExit(f"error: {exc}") from None
    print(format_comparison(report) if config["compare"] else format_reports(report))
    if report.get("mode") == "throughput":
        print(f"speed: {report['fps']:.2f} images/s over {report['images']} images (throughput mode), single-image "
              f"latency {report['latency_ms']:.0f} ms ({1000 / report['latency_ms']:.2f} images/s)")
    if config["json"]:
        atomic_write_json(config["json"], report)
        print(f"wrote {config['json']}")
    return report


if __name__ == "__main__":
    main(config)
