"""evaluate.py: one evaluator for every stage -- a model file on a folder of images, or saved predictions.

    python evaluate.py --model weights/student.keras --images DIR --masks DIR [--json OUT.json]
    python evaluate.py --pred DIR --masks DIR [--json OUT.json]

--model: any format crackseg.engines opens (.keras, .onnx, TensorRT .engine); threshold from its model card unless
--threshold. --pred: PNG/BMP/TIFF probability maps (8-bit: value / 255, 16-bit: value / 65535, float TIFF in
[0, 1]) or binary masks (0/255, or an 8-bit map holding only 0 and 1); default threshold 0.5.
Masks: PNG 0/255 or 0/1, or CrackForest .mat. Files are paired by stem; an unpaired, unreadable or wrongly sized
file stops the run with one line naming it. --subset=LIST evaluates only the images a split list names (ids or
stems; names of other folders are ignored), e.g. --subset=datasets/splits/val.txt.
Prints a table (strict / tolerant P R F1 IoU, ODS, OIS, mIoU, images/s) and writes it as JSON with --json.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure  # noqa: E402

model = None          # a model file (.keras / .onnx / .engine) ...
images = None         # ... and its folder of images
pred = None           # or: a folder of saved predictions
masks = None          # ground-truth folder (both modes)
json = None           # write the report here as JSON
threshold = None      # None: the model card's (--model) or 0.5
distance = 2          # tolerance of the tolerant metrics (Chebyshev pixels)
backend = "auto"      # --model only: auto (CPU: openvino) | keras | onnx | openvino | tensorrt
subset = None         # a split list file: evaluate only the images it names

config = configure(globals(), __doc__)

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from crackseg.data import IMAGE_EXTS, MASK_EXTS, DataError, decode_file, read_image, read_mask  # noqa: E402
from crackseg.io import atomic_write_json  # noqa: E402
from crackseg.metrics import MetricAccumulator, format_report  # noqa: E402

PRED_EXTS = (".png", ".bmp", ".tif", ".tiff")  # lossless formats only: a JPEG probability map is not a prediction


def _fail(message: str) -> SystemExit:
    return SystemExit(f"error: {message}")


def files_by_stem(folder: str | Path, exts: tuple[str, ...], what: str) -> dict[str, Path]:
    """``{stem: path}`` of the ``exts`` files in ``folder``; two files with one stem are refused (ambiguous)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _fail(f"{folder}: {what} folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in exts:
            if path.stem in found:
                raise _fail(f"{path}: two {what} files with stem {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    if not found:
        raise _fail(f"{folder}: no {what} files ({', '.join(exts)})")
    return found


def read_subset(path: str | Path) -> set[str]:
    """Stems named by a split list file (ids like ``DeepCrack/train_img/11111.jpg`` or bare stems)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(f"{path}: subset list not found")
    lines = [line.strip() for line in path.read_text().splitlines()]
    return {Path(line).stem for line in lines if line and not line.startswith("#")}


def pair_files(inputs: dict[str, Path], truths: dict[str, Path], what: str,
               only: set[str] | None = None) -> list[tuple[str, Path, Path]]:
    """(stem, input, mask) sorted by stem; every input needs a mask and, without ``only``, every mask an input."""
    if only is not None:
        inputs = {s: p for s, p in inputs.items() if s in only}
        if not inputs:
            raise _fail(f"no {what} file is named in the subset list")
    for stem, path in inputs.items():
        if stem not in truths:
            raise _fail(f"{path}: no mask with stem {stem!r}")
    if only is None:
        for stem, path in truths.items():
            if stem not in inputs:
                raise _fail(f"{path}: no {what} with stem {stem!r}")
    return [(stem, inputs[stem], truths[stem]) for stem in sorted(inputs)]


def read_prediction(path: str | Path) -> np.ndarray:
    """A saved prediction as float32 HxW crack probability in [0, 1]."""
    path = Path(path)
    try:
        pred = decode_file(path, cv2.IMREAD_UNCHANGED, "prediction")
    except DataError as exc:
        raise _fail(str(exc)) from None
    if pred.ndim == 3:
        if pred.shape[2] == 4 or not all(np.array_equal(pred[..., 0], pred[..., c]) for c in range(1, pred.shape[2])):
            raise _fail(f"{path}: prediction is a colour image; expected one grey channel")
        pred = pred[..., 0]
    if pred.dtype == np.uint8:
        # A map holding only 0 and 1 is a 0/1 binary mask, not probabilities of at most 1/255.
        return pred.astype(np.float32) if pred.max() <= 1 else pred.astype(np.float32) / 255.0
    if pred.dtype == np.uint16:
        return pred.astype(np.float32) / 65535.0
    if pred.dtype in (np.float32, np.float64):
        if not np.isfinite(pred).all() or pred.min() < 0 or pred.max() > 1:
            raise _fail(f"{path}: float prediction has values outside [0, 1]")
        return pred.astype(np.float32)
    raise _fail(f"{path}: unsupported prediction type {pred.dtype} (8/16-bit or float image expected)")


def _mask(path: Path) -> np.ndarray:
    try:
        return read_mask(path)
    except DataError as exc:
        raise _fail(str(exc)) from None


def _progress(items: list, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=None)  # None: a bar on a terminal, quiet in logs


def evaluate_predictions(pred_dir: str | Path, masks_dir: str | Path, threshold: float | None = None,
                         distance: int = 2, subset: str | Path | None = None) -> dict:
    """The metrics report of saved predictions against masks (paired by stem)."""
    pairs = pair_files(files_by_stem(pred_dir, PRED_EXTS, "prediction"), files_by_stem(masks_dir, MASK_EXTS, "mask"),
                       "prediction", read_subset(subset) if subset else None)
    acc = MetricAccumulator(0.5 if threshold is None else threshold, distance)
    for _, pred_path, mask_path in _progress(pairs, "evaluate"):
        prob, truth = read_prediction(pred_path), _mask(mask_path)
        if prob.shape != truth.shape:
            raise _fail(f"{pred_path}: prediction size {prob.shape[1]}x{prob.shape[0]} does not match mask "
                        f"{mask_path.name} size {truth.shape[1]}x{truth.shape[0]}")
        acc.update(prob, truth)
    return acc.result()


def evaluate_model(model_path: str | Path, images_dir: str | Path, masks_dir: str | Path,
                   threshold: float | None = None, distance: int = 2, backend: str = "auto",
                   subset: str | Path | None = None) -> dict:
    """The metrics report of a model on a folder of images, plus ``fps`` (images per second of ``predict``,
    decoding excluded, after one warm-up image) and the model's name and backend."""
    from crackseg.engines import EngineError, open_engine

    pairs = pair_files(files_by_stem(images_dir, IMAGE_EXTS, "image"), files_by_stem(masks_dir, MASK_EXTS, "mask"),
                       "image", read_subset(subset) if subset else None)
    try:
        engine = open_engine(str(model_path), backend, threshold)
    except EngineError as exc:
        raise _fail(str(exc)) from None
    acc = MetricAccumulator(engine.threshold, distance)
    seconds = 0.0
    for i, (_, image_path, mask_path) in enumerate(_progress(pairs, f"evaluate {engine.name}")):
        try:
            image = read_image(image_path)
        except DataError as exc:
            raise _fail(str(exc)) from None
        truth = _mask(mask_path)
        if image.shape[:2] != truth.shape:
            raise _fail(f"{mask_path}: mask size {truth.shape[1]}x{truth.shape[0]} does not match image "
                        f"{image_path.name} size {image.shape[1]}x{image.shape[0]}")
        if i == 0:
            engine.predict(image)  # warm-up: graph tracing / session start-up is not throughput
        start = time.perf_counter()
        prob = engine.predict(image)
        seconds += time.perf_counter() - start
        acc.update(prob, truth)
    return {**acc.result(), "fps": len(pairs) / seconds if seconds > 0 else 0.0, "model": str(model_path),
            "backend": engine.backend}


def main(config: dict) -> dict:
    if bool(config["model"]) == bool(config["pred"]):
        raise _fail("give either --model (with --images) or --pred, and --masks; --help explains")
    if not config["masks"]:
        raise _fail("--masks is required")
    if config["model"]:
        if not config["images"]:
            raise _fail("--model needs --images")
        report = evaluate_model(config["model"], config["images"], config["masks"], config["threshold"],
                                config["distance"], config["backend"], config["subset"])
    else:
        report = evaluate_predictions(config["pred"], config["masks"], config["threshold"], config["distance"],
                                      config["subset"])
    print(format_report(report))
    if config["json"]:
        atomic_write_json(config["json"], report)
        print(f"wrote {config['json']}")
    return report


if __name__ == "__main__":
    main(config)
