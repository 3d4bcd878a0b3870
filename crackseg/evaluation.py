"""Evaluation against ground-truth masks: pairing files, running an engine or reading saved predictions, and the
metrics report overall and per dataset (what evaluate.py prints, and the F1 benchmark.py compares backends by).

Pairs come from a folder of inputs (images or predictions) and a folder of masks, or from dataset roots in any
layout ``crackseg.data`` reads. A stem names one evaluated image everywhere (prediction files, split lists), so two
files or samples with one stem are refused as ambiguous. A pair's dataset is the folder holding its image or mask
folder (``CrackForest`` for ``CrackForest/image/001.jpg``). When the pairs span several datasets the report also has
one report per dataset under ``by_dataset``: thin CrackForest annotations and wide DeepCrack masks score very
differently, and a pooled figure hides which one a model fails on.

Bad input raises ``DataError`` (one line naming the file); a model that cannot be opened, ``EngineError``.
"""
from __future__ import annotations

import itertools
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import cv2
import numpy as np

from .data import IMAGE_EXTS, MASK_EXTS, DataError, Sample, decode_file, find_samples, load_pair, read_mask
from .engines import Engine, open_engine
from .metrics import MetricAccumulator, balanced_threshold, format_report, paired_f1_difference

PRED_EXTS = (".png", ".bmp", ".tif", ".tiff")  # lossless formats only: a JPEG probability map is not a prediction


@dataclass(frozen=True)
class Pair:
    """One evaluated image: ``source`` (an image for a model, or a saved prediction), its mask and its dataset."""

    stem: str
    source: Path
    mask: Path
    dataset: str


class LabelledImage(NamedTuple):
    """An RGB uint8 HxWx3 image with its boolean HxW mask and the name of the dataset it belongs to."""

    image: np.ndarray
    truth: np.ndarray
    dataset: str = ""


# ---------------------------------------------------------------------------------------------- pairing
def files_by_stem(folder: str | Path, exts: tuple[str, ...], what: str) -> dict[str, Path]:
    """``{stem: path}`` of the ``exts`` files in ``folder``; two files with one stem are refused (ambiguous)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in exts:
            if path.stem in found:
                raise DataError(f"{path}: two {what} files with stem {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    if not found:
        raise DataError(f"{folder}: no {what} files ({', '.join(exts)})")
    return found


def read_subset(path: str | Path) -> set[str]:
    """Stems named by a split list file (ids like ``DeepCrack/train_img/11111.jpg`` or bare stems)."""
    return {Path(line).stem for line in _subset_lines(path)}


def pair_files(inputs: dict[str, Path], truths: dict[str, Path], what: str,
               only: set[str] | None = None) -> list[tuple[str, Path, Path]]:
    """(stem, input, mask) sorted by stem; every input needs a mask and, without ``only``, every mask an input."""
    if only is not None:
        inputs = {s: p for s, p in inputs.items() if s in only}
        if not inputs:
            raise DataError(f"no {what} file is named in the subset list")
    for stem, path in inputs.items():
        if stem not in truths:
            raise DataError(f"{path}: no mask with stem {stem!r}")
    if only is None:
        for stem, path in truths.items():
            if stem not in inputs:
                raise DataError(f"{path}: no {what} with stem {stem!r}")
    return [(stem, inputs[stem], truths[stem]) for stem in sorted(inputs)]


def _dataset_of(folder: Path) -> str:
    # abspath, not resolve: "." or ".." roots get a real name, and symlinked folders keep the name the user gave.
    return Path(os.path.abspath(folder)).parent.name


def folder_pairs(inputs: str | Path, masks: str | Path, what: str = "image",
                 subset: str | Path | None = None) -> list[Pair]:
    """Files of the ``inputs`` folder (``what``: ``"image"`` or ``"prediction"``) paired by stem with the
    ``masks`` folder; ``subset``: a split list, keeping only the inputs it names."""
    exts = PRED_EXTS if what == "prediction" else IMAGE_EXTS
    matched = pair_files(files_by_stem(inputs, exts, what), files_by_stem(masks, MASK_EXTS, "mask"), what,
                         read_subset(subset) if subset else None)
    dataset = _dataset_of(Path(masks))
    return [Pair(stem, source, mask, dataset) for stem, source, mask in matched]


def dataset_pairs(data: str, predictions: str | Path | None = None, subset: str | Path | None = None) -> list[Pair]:
    """The samples of the comma-separated dataset roots ``data``: each image with its mask, or with
    ``predictions`` the prediction file of the image's stem in that folder instead of the image. ``subset``: a
    split list; a line naming a sample's id (``DeepCrack/train_img/11289-1.jpg``) picks that sample even where
    another folder has an image of the same stem (DeepCrack's official test images reuse train stems); a bare stem
    must name one sample."""
    found = [sample for root in (r.strip() for r in data.split(",") if r.strip()) for sample in find_samples(root)]
    only = None
    if subset:
        ids = _subset_lines(subset)
        by_id = {sample.id for sample in found}
        stems = {Path(line).stem for line in ids if line not in by_id}  # bare stems (or ids of other roots)
        found = [sample for sample in found if sample.id in ids or sample.image.stem in stems]
        only = {sample.image.stem for sample in found}
        if not found:
            raise DataError(f"{subset}: names none of the samples in {data}")
    samples: dict[str, Sample] = {}
    for sample in found:
        stem = sample.image.stem
        if stem in samples:
            raise DataError(f"{sample.image}: two samples with stem {stem!r} ({samples[stem].image})")
        samples[stem] = sample
    if predictions is None:
        what, inputs = "image", {stem: s.image for stem, s in samples.items()}
    else:
        what, inputs = "prediction", files_by_stem(predictions, PRED_EXTS, "prediction")
    matched = pair_files(inputs, {stem: s.mask for stem, s in samples.items()}, what, only)
    return [Pair(stem, source, mask, _dataset_of(samples[stem].image.parent)) for stem, source, mask in matched]


def sample_pairs(samples: list[Sample]) -> list[Pair]:
    """Pairs of ``crackseg.data`` samples (e.g. ``load_split(...)["val"]``), each with its dataset's name."""
    pairs, seen = [], {}
    for sample in samples:
        stem = sample.image.stem
        if stem in seen:
            raise DataError(f"{sample.image}: two samples with stem {stem!r} ({seen[stem]})")
        seen[stem] = sample.image
        pairs.append(Pair(stem, sample.image, sample.mask, _dataset_of(sample.image.parent)))
    return pairs


def _subset_lines(path: str | Path) -> set[str]:
    """The names (ids or stems) of a split list file, comments and blank lines left out."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subset list not found")
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def balanced_subset(samples: list, per_dataset: int) -> list:
    """Up to ``per_dataset`` samples of each dataset (the first part of a sample's ``id``: ``CRACK500/...``), spread
    evenly over each one, in their order; 0 keeps them all. A check that must run many times (int8 accuracy
    control) sees every dataset, not mostly the largest."""
    if per_dataset <= 0:
        return list(samples)
    groups: dict[str, list] = {}
    for sample in samples:
        groups.setdefault(str(sample.id).split("/")[0], []).append(sample)
    keep = set()
    for members in groups.values():
        picks = np.unique(np.linspace(0, len(members) - 1, min(per_dataset, len(members))).round().astype(int))
        keep.update(id(members[i]) for i in picks)
    return [s for s in samples if id(s) in keep]


def spans_datasets(pairs: list[Pair]) -> bool:
    """Whether ``pairs`` come from more than one dataset (then reports are given per dataset too)."""
    return len({p.dataset for p in pairs}) > 1


# ---------------------------------------------------------------------------------------------- reading
def _progress(items: list, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=None)  # None: a bar on a terminal, quiet in logs


def read_prediction(path: str | Path) -> np.ndarray:
    """A saved prediction as float32 HxW crack probability in [0, 1]."""
    path = Path(path)
    pred = decode_file(path, cv2.IMREAD_UNCHANGED, "prediction")
    if pred.ndim == 3:
        if pred.shape[2] == 4 or not all(np.array_equal(pred[..., 0], pred[..., c]) for c in range(1, pred.shape[2])):
            raise DataError(f"{path}: prediction is a colour image; expected one grey channel")
        pred = pred[..., 0]
    if pred.dtype == np.uint8:
        # A map holding only 0 and 1 is a 0/1 binary mask, not probabilities of at most 1/255.
        return pred.astype(np.float32) if pred.max() <= 1 else pred.astype(np.float32) / 255.0
    if pred.dtype == np.uint16:
        return pred.astype(np.float32) / 65535.0
    if pred.dtype in (np.float32, np.float64):
        if not np.isfinite(pred).all() or pred.min() < 0 or pred.max() > 1:
            raise DataError(f"{path}: float prediction has values outside [0, 1]")
        return pred.astype(np.float32)
    raise DataError(f"{path}: unsupported prediction type {pred.dtype} (8/16-bit or float image expected)")


def read_labelled(pairs: list[Pair], desc: str = "evaluate") -> Iterator[LabelledImage]:
    """Each pair's image and mask, decoded one at a time (a dataset does not fit in memory), with a progress bar."""
    for pair in _progress(pairs, desc):
        image, truth = load_pair(Sample(pair.stem, pair.source, pair.mask))
        yield LabelledImage(image, truth, pair.dataset)


# ---------------------------------------------------------------------------------------------- metrics
class DatasetReports:
    """The metrics report overall and, with ``by_dataset``, one per dataset; with timed predictions, images/s.

    Per-dataset accumulators are kept only when asked: each one costs a second metric update per image.
    """

    def __init__(self, threshold: float, distance: int = 2, by_dataset: bool = False):
        self.threshold, self.distance = threshold, distance
        self.overall = MetricAccumulator(threshold, distance)
        self.datasets: dict[str, MetricAccumulator] | None = {} if by_dataset else None
        self.seconds: dict[str, float] = {}

    def update(self, prob: np.ndarray, truth: np.ndarray, dataset: str, seconds: float | None = None) -> None:
        """Add one image; ``seconds``: the time its prediction took, when throughput is reported."""
        self.overall.update(prob, truth)
        if self.datasets is not None:
            if dataset not in self.datasets:
                self.datasets[dataset] = MetricAccumulator(self.threshold, self.distance)
            self.datasets[dataset].update(prob, truth)
        if seconds is not None:
            self.seconds[dataset] = self.seconds.get(dataset, 0.0) + seconds

    def _report(self, accumulator: MetricAccumulator, seconds: float) -> dict:
        report = accumulator.result()
        if self.seconds:
            report["fps"] = report["images"] / seconds if seconds > 0 else 0.0
        return report

    def curves(self) -> dict[str, np.ndarray]:
        """Per dataset, (tp, fp, fn) summed at every threshold (``metrics.balanced_threshold``'s input); one
        "dataset" of all images when reports are not split by dataset."""
        if self.datasets:
            return {name: acc.per_threshold for name, acc in self.datasets.items()}
        return {"all": self.overall.per_threshold}

    def result(self, image_counts: bool = False) -> dict:
        """``MetricAccumulator.result()`` fields (+ ``fps``), and ``by_dataset``: ``{name: the same fields}``;
        ``image_counts``: each report also lists its per-image count rows (``metrics.paired_f1_difference``'s
        input), so two models scored apart can be compared image by image later."""
        report = self._report(self.overall, sum(self.seconds.values()))
        if image_counts:
            report["image_counts"] = [list(row) for row in self.overall.image_counts]
        if self.datasets is not None:
            report["by_dataset"] = {name: self._report(acc, self.seconds.get(name, 0.0))
                                    for name, acc in sorted(self.datasets.items())}
            if image_counts:
                for name, acc in self.datasets.items():
                    report["by_dataset"][name]["image_counts"] = [list(row) for row in acc.image_counts]
        return report


def evaluate_predictions(pairs: list[Pair], threshold: float | None = None, distance: int = 2) -> dict:
    """The metrics report of saved predictions (``Pair.source``) against their masks; threshold default 0.5."""
    reports = DatasetReports(0.5 if threshold is None else threshold, distance, spans_datasets(pairs))
    for pair in _progress(pairs, "evaluate"):
        prob, truth = read_prediction(pair.source), read_mask(pair.mask)
        if prob.shape != truth.shape:
            raise DataError(f"{pair.source}: prediction size {prob.shape[1]}x{prob.shape[0]} does not match mask "
                            f"{pair.mask.name} size {truth.shape[1]}x{truth.shape[0]}")
        reports.update(prob, truth, pair.dataset)
    return reports.result()


def evaluate_engine(engine: Engine, labelled: Iterable[LabelledImage], distance: int = 2, warmup: int = 1,
                    by_dataset: bool = False, on_prediction: Callable[[np.ndarray], None] | None = None,
                    throughput: bool = False, latency_runs: int = 3, image_counts: bool = False) -> dict:
    """The metrics report of ``engine`` (at its threshold) on ``labelled`` images, plus ``fps``: images per second
    of ``predict`` alone (decoding excluded) after ``warmup`` untimed calls on the first image.

    ``throughput``: the images go through ``engine.predict_many`` (OpenVINO: several asynchronous requests in flight,
    decoding the next images and scoring the finished ones overlapped), and ``fps`` is images per second of the
    whole loop (decode + inference + metrics, wall clock); ``latency_ms`` is then the median single-image
    ``predict`` of the first image (``latency_runs`` runs after the warm-up), for comparison.

    ``on_prediction`` receives each probability map (e.g. to compare backends' masks without predicting twice).
    ``image_counts``: see ``DatasetReports.result``.
    """
    if throughput:
        return _evaluate_throughput(engine, labelled, distance, warmup, by_dataset, on_prediction, latency_runs,
                                    image_counts)
    reports = DatasetReports(engine.threshold, distance, by_dataset)
    for i, item in enumerate(labelled):
        if i == 0:
            for _ in range(warmup):
                engine.predict(item.image)  # graph tracing / session start-up is not throughput
        start = time.perf_counter()
        prob = engine.predict(item.image)
        reports.update(prob, item.truth, item.dataset, time.perf_counter() - start)
        if on_prediction is not None:
            on_prediction(prob)
    return reports.result(image_counts)


def _evaluate_throughput(engine: Engine, labelled: Iterable[LabelledImage], distance: int, warmup: int,
                         by_dataset: bool, on_prediction: Callable[[np.ndarray], None] | None,
                         latency_runs: int, image_counts: bool) -> dict:
    reports = DatasetReports(engine.threshold, distance, by_dataset)
    items = iter(labelled)
    first = next(items, None)
    if first is None:
        return reports.result(image_counts)
    for _ in range(max(warmup, 1)):
        engine.predict(first.image)  # compile / start-up is neither latency nor throughput
    seconds = []
    for _ in range(max(latency_runs, 1)):
        start = time.perf_counter()
        engine.predict(first.image)
        seconds.append(time.perf_counter() - start)
    waiting: deque[LabelledImage] = deque()

    def images() -> Iterator[np.ndarray]:
        for item in itertools.chain([first], items):
            waiting.append(item)  # before its image is handed over: its prediction can only come after
            yield item.image

    count, start = 0, time.perf_counter()
    for prob in engine.predict_many(images()):
        item = waiting.popleft()
        reports.update(prob, item.truth, item.dataset)
        if on_prediction is not None:
            on_prediction(prob)
        count += 1
    wall = time.perf_counter() - start
    report = reports.result(image_counts)
    report["fps"] = count / wall if wall > 0 else 0.0
    report["latency_ms"] = float(np.median(seconds)) * 1000
    report["mode"] = "throughput"
    return report


def evaluate_model(model: str | Path, pairs: list[Pair], threshold: float | None = None, distance: int = 2,
                   backend: str = "auto", precision: str = "fp32", throughput: bool = False,
                   image_counts: bool = False) -> dict:
    """``evaluate_engine`` of a model file on image pairs, plus the model's name, backend, the precision it ran at
    (and why, when ``precision="auto"`` chose it) and its one-line description; threshold default: the model
    card's. ``throughput``, ``image_counts``: see ``evaluate_engine``."""
    with open_engine(str(model), backend, threshold, precision) as engine:
        report = evaluate_engine(engine, read_labelled(pairs, f"evaluate {engine.name}"), distance,
                                 by_dataset=spans_datasets(pairs), throughput=throughput, image_counts=image_counts)
        return {**report, "model": str(model), "backend": engine.backend, "precision": engine.precision,
                "precision_choice": engine.choice, "described": engine.describe()}


def compare_models(model_a: str | Path, model_b: str | Path, pairs: list[Pair], threshold: float | None = None,
                   distance: int = 2, backend: str = "auto", precision: str = "fp32") -> dict:
    """Two model files on the same images (each at its card's threshold unless ``threshold``), and B minus A with a
    paired bootstrap interval (``metrics.paired_f1_difference``), overall and per dataset: finer than comparing two
    separate intervals, because both models meet the same hard and easy images in every resample. Each report also
    has ``val_score``: the mean over datasets of strict F1 at the one threshold maximising it
    (``metrics.balanced_threshold``, training's rule) and that threshold (``val_score_threshold``). Returns
    ``{"a": report, "b": report, "difference": {..., "by_dataset": {name: {...}}}}``."""
    by_dataset = spans_datasets(pairs)
    with open_engine(str(model_a), backend, threshold, precision) as engine_a, \
            open_engine(str(model_b), backend, threshold, precision) as engine_b:
        reports = {"a": DatasetReports(engine_a.threshold, distance, by_dataset),
                   "b": DatasetReports(engine_b.threshold, distance, by_dataset)}
        for item in read_labelled(pairs, f"compare {engine_a.name} / {engine_b.name}"):
            for key, engine in (("a", engine_a), ("b", engine_b)):
                reports[key].update(engine.predict(item.image), item.truth, item.dataset)
        out = {}
        for key, model, engine in (("a", model_a, engine_a), ("b", model_b, engine_b)):
            # val_score: training's balanced rule on these images (mean over datasets of strict F1 at one threshold)
            choice = balanced_threshold(reports[key].curves())
            out[key] = {**reports[key].result(), "model": str(model), "backend": engine.backend,
                        "precision": engine.precision, "precision_choice": engine.choice,
                        "described": engine.describe(), "val_score": choice["mean_f1"],
                        "val_score_threshold": choice["threshold"]}
    a, b = reports["a"], reports["b"]
    difference = paired_f1_difference(a.overall.image_counts, b.overall.image_counts)
    if a.datasets is not None and b.datasets is not None:
        difference["by_dataset"] = {name: paired_f1_difference(a.datasets[name].image_counts,
                                                               b.datasets[name].image_counts)
                                    for name in sorted(a.datasets)}
    return {**out, "difference": difference}


def format_comparison(comparison: dict) -> str:
    """Both models' strict F1 and B - A strict / tolerant / centreline F1 with its paired interval, one line overall
    and one per dataset; then each model's balanced val_score when the comparison has it."""
    a, b, d = comparison["a"], comparison["b"], comparison["difference"]
    lines = [f"A: {a['model']} (threshold {a['threshold']:.2f})", f"B: {b['model']} (threshold {b['threshold']:.2f})",
             f"B - A, paired over the same images ({d['level']:.0%} bootstrap interval, {d['resamples']} resamples):",
             f"{'':<14}{'images':>7}  {'strict A':>8} {'strict B':>8}  {'B - A [interval]':<28}"
             f"{'tolerant B - A [interval]':<28}{'centreline B - A [interval]':<30}{'P(B > A)':>8}"]

    def row(name: str, ra: dict, rb: dict, diff: dict) -> str:
        s, t = diff["strict_f1"], diff["tolerant_f1"]
        span = lambda x: f"{x['difference']:+.4f} [{x['interval'][0]:+.4f}, {x['interval'][1]:+.4f}]"  # noqa: E731
        c = span(diff["centreline_f1"]) if "centreline_f1" in diff else "-"
        return (f"{name:<14}{diff['images']:>7}  {ra['strict']['f1']:>8.4f} {rb['strict']['f1']:>8.4f}  "
                f"{span(s):<28}{span(t):<28}{c:<30}{s['b_better']:>8.3f}")

    lines.append(row("all", a, b, d))
    for name, part in d.get("by_dataset", {}).items():
        lines.append(row(name, a["by_dataset"][name], b["by_dataset"][name], part))
    if "val_score" in a and "val_score" in b:
        lines.append(f"balanced val_score (mean over datasets of strict F1 at one threshold): A {a['val_score']:.4f} "
                     f"(t={a['val_score_threshold']:.2f}), B {b['val_score']:.4f} (t={b['val_score_threshold']:.2f})")
    return "\n".join(lines)


def format_reports(report: dict) -> str:
    """The table of a report, then one per dataset when it has ``by_dataset``."""
    parts = [format_report(report)]
    for name, part in report.get("by_dataset", {}).items():
        parts.append(f"{name}:\n{format_report(part)}")
    return "\n\n".join(parts)
