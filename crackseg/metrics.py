"""Crack-class metrics: the numpy reference every tool reports with (no TensorFlow here).

Definitions (crack = probability >= threshold; counts are summed over the dataset, i.e. micro-averaged):

* strict: pixel-exact tp / fp / fn; P = tp/(tp+fp), R = tp/(tp+fn), F1 = 2PR/(P+R), IoU = tp/(tp+fp+fn).
* tolerant at distance d (Chebyshev, default 2 = a 5x5 square, as the paper's max-pool):
  tp = predicted crack pixels with a true crack pixel within d, fp = the other predicted crack pixels,
  fn = true crack pixels with no predicted crack pixel within d; P = tp/(tp+fp),
  R = (true crack pixels within d of a prediction)/(true crack pixels), IoU = tp/(tp+fp+fn).
* centreline at distance d (width-free): both masks thinned to one-pixel skeletons
  (``skimage.morphology.skeletonize``), then matched as the tolerant metric matches pixels: P = (predicted skeleton
  pixels with a true skeleton pixel within d) / (predicted skeleton pixels), R = (true skeleton pixels with a
  predicted skeleton pixel within d) / (true skeleton pixels). Annotation styles differ several-fold in width
  (CRACK500 paints full width, CrackForest and AigleRN trace 2-3 px lines); this one asks only "was the crack
  found, along its length", not "was its width agreed".
* mIoU: mean of the strict crack IoU and background IoU.
* ODS F1: the best dataset (strict) F1 over thresholds 0.01..0.99; OIS F1: the mean over images of each
  image's best strict F1 over the same thresholds.
* interval: a 95 % interval of the strict, tolerant and centreline F1 from resampling the images with replacement
  (bootstrap, seeded, so a report is reproducible): how far the figure could move on another draw of images like
  these.

Empty cases: when an image (or dataset) has neither true nor predicted crack pixels, P = R = F1 = IoU = 1;
otherwise a ratio whose denominator is 0 is 0 (centreline: the same, with skeleton pixels).
"""
from __future__ import annotations

import cv2
import numpy as np

THRESHOLDS = np.round(np.arange(1, 100) / 100.0, 2)
COUNT_KEYS = ("tp", "fp", "fn", "tn", "tol_tp", "tol_fp", "tol_fn", "tol_hit", "truth",
              "cl_tp", "cl_pred", "cl_hit", "cl_truth")
# One row per image for the bootstrap: the first 7 columns as before the centreline metric existed (rows saved
# then still resample), the last 4 the centreline counts.
ROW_KEYS = ("tp", "fp", "fn", "tol_tp", "tol_fp", "tol_hit", "truth", "cl_tp", "cl_pred", "cl_hit", "cl_truth")
_BASE_COLUMNS = 7


def dilate(mask: np.ndarray, distance: int) -> np.ndarray:
    """Pixels within Chebyshev ``distance`` of a True pixel (a (2d+1)^2 square structuring element)."""
    if distance <= 0:
        return mask.astype(bool)
    kernel = np.ones((2 * distance + 1, 2 * distance + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def centreline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel skeleton of a boolean mask (scikit-image's ``skeletonize``, Zhang's method in 2-D)."""
    from skimage.morphology import skeletonize  # here, not at the top: edge installs import this module without it

    mask = np.asarray(mask, bool)
    return skeletonize(mask) if mask.any() else mask.copy()


def centreline_counts(pred: np.ndarray, truth: np.ndarray, distance: int = 2) -> dict[str, int]:
    """Centreline counts of one image: ``cl_tp`` predicted skeleton pixels within ``distance`` of the true
    skeleton, ``cl_pred`` predicted skeleton pixels, ``cl_hit`` true skeleton pixels within ``distance`` of the
    predicted skeleton, ``cl_truth`` true skeleton pixels."""
    sp, st = centreline(pred), centreline(truth)
    return {"cl_tp": int(np.count_nonzero(sp & dilate(st, distance))), "cl_pred": int(np.count_nonzero(sp)),
            "cl_hit": int(np.count_nonzero(st & dilate(sp, distance))), "cl_truth": int(np.count_nonzero(st))}


def counts(pred: np.ndarray, truth: np.ndarray, distance: int = 2) -> dict[str, int]:
    """Strict, tolerant and centreline counts of one image (boolean HxW arrays of equal shape)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    near_truth, near_pred = dilate(truth, distance), dilate(pred, distance)
    tp = int(np.count_nonzero(pred & truth))
    n_pred, n_truth = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    tol_tp = int(np.count_nonzero(pred & near_truth))
    tol_hit = int(np.count_nonzero(truth & near_pred))
    return {"tp": tp, "fp": n_pred - tp, "fn": n_truth - tp, "tn": int(pred.size) - n_pred - n_truth + tp,
            "tol_tp": tol_tp, "tol_fp": n_pred - tol_tp, "tol_fn": n_truth - tol_hit, "tol_hit": tol_hit,
            "truth": n_truth, **centreline_counts(pred, truth, distance)}


def _ratio(num: float, den: float, nothing_there: bool) -> float:
    if den > 0:
        return float(num) / float(den)
    return 1.0 if nothing_there else 0.0


def _f1(p: float, r: float, nothing_there: bool) -> float:
    if nothing_there:
        return 1.0
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def scores(c: dict[str, int]) -> dict[str, dict[str, float] | float]:
    """Strict and tolerant P / R / F1 / IoU and mIoU from (summed) counts; with the ``cl_*`` counts, centreline
    P / R / F1 too."""
    empty = c["tp"] + c["fp"] + c["fn"] == 0  # no true and no predicted crack pixels
    p, r = _ratio(c["tp"], c["tp"] + c["fp"], empty), _ratio(c["tp"], c["tp"] + c["fn"], empty)
    strict = {"precision": p, "recall": r, "f1": _f1(p, r, empty),
              "iou": _ratio(c["tp"], c["tp"] + c["fp"] + c["fn"], empty)}
    tp_ = _ratio(c["tol_tp"], c["tol_tp"] + c["tol_fp"], empty)
    tr_ = _ratio(c["tol_hit"], c["truth"], empty)
    tolerant = {"precision": tp_, "recall": tr_, "f1": _f1(tp_, tr_, empty),
                "iou": _ratio(c["tol_tp"], c["tol_tp"] + c["tol_fp"] + c["tol_fn"], empty)}
    bg_den = c["tn"] + c["fp"] + c["fn"]
    miou = (strict["iou"] + _ratio(c["tn"], bg_den, bg_den == 0)) / 2
    out = {"strict": strict, "tolerant": tolerant, "miou": miou}
    if "cl_pred" in c:
        nothing = c["cl_pred"] + c["cl_truth"] == 0
        cp, cr = _ratio(c["cl_tp"], c["cl_pred"], nothing), _ratio(c["cl_hit"], c["cl_truth"], nothing)
        out["centreline"] = {"precision": cp, "recall": cr, "f1": _f1(cp, cr, nothing)}
    return out


def threshold_counts(prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Strict (tp, fp, fn) of one image at every threshold, shape (len(thresholds), 3), by sorting once."""
    prob, truth = np.asarray(prob, np.float32).ravel(), np.asarray(truth, bool).ravel()
    pos, neg = np.sort(prob[truth]), np.sort(prob[~truth])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")  # prob >= threshold
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return np.stack([tp, fp, pos.size - tp], axis=1).astype(np.int64)


def _tables(image_counts: list) -> list[np.ndarray]:
    """Per-image count rows as float arrays of ``ROW_KEYS`` columns: all 11, or only the first 7 when any table
    has only those (rows saved before the centreline metric existed; such a table has no centreline interval)."""
    tables = [np.asarray(c, np.float64) for c in image_counts]
    tables = [t.reshape(-1, t.shape[-1] if t.ndim == 2 and t.shape[-1] in (_BASE_COLUMNS, len(ROW_KEYS))
                        else _BASE_COLUMNS) for t in tables]
    width = min(t.shape[1] for t in tables)
    return [t[:, :width] for t in tables]


def _resampled_f1(weights: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Strict, tolerant and (with 11 columns) centreline F1 of each resample: ``weights`` (resamples, images) times
    per-image counts ``c`` (images, ``ROW_KEYS``), with the conventions of ``scores``."""
    summed = (weights @ c).T
    tp, fp, fn, tol_tp, tol_fp, tol_hit, truth = summed[:_BASE_COLUMNS]
    strict = _f1_from_tpfpfn(np.stack([tp, fp, fn], axis=-1))
    tol = np.where(tp + fp + fn == 0, 1.0, _f1_of(tol_tp, tol_tp + tol_fp, tol_hit, truth))
    centre = None
    if c.shape[1] == len(ROW_KEYS):
        cl_tp, cl_pred, cl_hit, cl_truth = summed[_BASE_COLUMNS:]
        centre = np.where(cl_pred + cl_truth == 0, 1.0, _f1_of(cl_tp, cl_pred, cl_hit, cl_truth))
    return strict, tol, centre  # nothing true and nothing predicted: 1, as scores()


def _f1_of(hit_p: np.ndarray, den_p: np.ndarray, hit_r: np.ndarray, den_r: np.ndarray) -> np.ndarray:
    p = np.where(den_p > 0, hit_p / np.maximum(den_p, 1), 0.0)
    r = np.where(den_r > 0, hit_r / np.maximum(den_r, 1), 0.0)
    return np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)


def _bootstrap(image_counts: list, resamples: int, seed: int) -> dict[str, list[np.ndarray]]:
    """``{"strict_f1": [...], "tolerant_f1": [...], ("centreline_f1": [...])}``: the F1 of every resample for each
    of the count tables, all resampled with the same multinomial image weights (so tables of two models on the same
    images stay paired). Centreline only when every table has its columns."""
    tables = _tables(image_counts)
    n = len(tables[0])
    if n == 0:
        raise ValueError("no images to resample")
    if any(len(t) != n for t in tables):
        raise ValueError(f"paired count tables differ in length: {[len(t) for t in tables]}")
    names = ("strict_f1", "tolerant_f1") + (("centreline_f1",) if tables[0].shape[1] == len(ROW_KEYS) else ())
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[np.ndarray]]] = {name: [[] for _ in tables] for name in names}
    for start in range(0, resamples, 250):  # chunks keep the weight matrix small for thousands of images
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(250, resamples - start))
        for i, table in enumerate(tables):
            for name, values in zip(names, _resampled_f1(weights, table)):
                out[name][i].append(values)
    return {name: [np.concatenate(v) for v in per_table] for name, per_table in out.items()}


def _bounds(values: np.ndarray, level: float) -> list[float]:
    tail = (1.0 - level) / 2 * 100
    return [float(x) for x in np.percentile(values, [tail, 100 - tail])]


def f1_interval(image_counts: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Bootstrap interval of the (micro-averaged) strict, tolerant and centreline F1 over images.
    ``image_counts``: one row per image, columns ``ROW_KEYS`` as ``counts`` gives them (rows of the first 7 only:
    no centreline interval). Each resample draws as many images as there are, with replacement (multinomial weights
    per image), and sums their counts. Returns ``{"level", "resamples", "strict_f1": [low, high], "tolerant_f1":
    [low, high], "centreline_f1": [low, high]}``."""
    runs = _bootstrap([image_counts], resamples, seed)
    return {"level": level, "resamples": int(resamples),
            **{name: _bounds(values, level) for name, (values,) in runs.items()}}


def paired_f1_difference(counts_a: np.ndarray, counts_b: np.ndarray, resamples: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict:
    """F1 of B minus F1 of A on the same images, with a paired bootstrap interval: every resample draws the same
    images for both, so what makes an image hard cancels and the interval is narrower than the two separate ones.
    ``counts_a`` / ``counts_b``: per-image count rows as in ``f1_interval``, in the same image order. Returns
    ``{"level", "resamples", "images", "strict_f1": {"difference", "interval": [low, high], "b_better"}, "tolerant_f1":
    {...}, "centreline_f1": {...} (when both tables have its columns)}``; ``b_better`` is the fraction of resamples
    in which B scores higher."""
    a, b = _tables([counts_a, counts_b])
    runs = _bootstrap([a, b], resamples, seed)
    out = {"level": level, "resamples": int(resamples), "images": len(a)}
    full = np.ones((1, len(a)))
    points_a, points_b = _resampled_f1(full, a), _resampled_f1(full, b)
    for index, (name, (ra, rb)) in enumerate(runs.items()):
        point = points_b[index][0] - points_a[index][0]
        out[name] = {"difference": float(point), "interval": _bounds(rb - ra, level),
                     "b_better": float(np.mean(rb > ra))}
    return out


def _f1_from_tpfpfn(t: np.ndarray) -> np.ndarray:
    tp, fp, fn = t[..., 0].astype(float), t[..., 1].astype(float), t[..., 2].astype(float)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)  # 2PR/(P+R) == 2tp/(2tp+fp+fn)


class MetricAccumulator:
    """Accumulates images one at a time; ``result()`` is the report every tool prints and writes as JSON."""

    def __init__(self, threshold: float = 0.5, distance: int = 2):
        self.threshold, self.distance = float(threshold), int(distance)
        self.total = dict.fromkeys(COUNT_KEYS, 0)
        self.per_threshold = np.zeros((len(THRESHOLDS), 3), np.int64)
        self.best_image_f1: list[float] = []
        self.image_counts: list[tuple[int, ...]] = []  # per image, for the bootstrap interval

    def update(self, prob: np.ndarray, truth: np.ndarray) -> dict[str, int]:
        """Add one image: ``prob`` crack probability HxW in [0, 1] (or a binary mask), ``truth`` boolean HxW."""
        prob, truth = np.asarray(prob, np.float32), np.asarray(truth, bool)
        if prob.shape != truth.shape:
            raise ValueError(f"prediction shape {prob.shape} != mask shape {truth.shape}")
        c = self.update_mask(prob >= self.threshold, truth)
        t = threshold_counts(prob, truth)
        self.per_threshold += t
        self.best_image_f1.append(float(_f1_from_tpfpfn(t).max()))
        return c

    def update_mask(self, mask: np.ndarray, truth: np.ndarray) -> dict[str, int]:
        """Add one image already made a mask by some other rule (e.g. hysteresis): its counts only, so a report of
        such images has no ODS / OIS (those sweep the threshold of a probability map)."""
        c = counts(mask, truth, self.distance)
        for k in COUNT_KEYS:
            self.total[k] += c[k]
        self.image_counts.append(tuple(c[k] for k in ROW_KEYS))
        return c

    def result(self) -> dict:
        s = scores(self.total)
        out = {"images": len(self.image_counts), "threshold": self.threshold,
               "strict": s["strict"], "tolerant": {**s["tolerant"], "distance": self.distance},
               "centreline": {**s["centreline"], "distance": self.distance}}
        if self.best_image_f1 or not self.image_counts:  # probability maps were given (``update``), not masks
            f1_curve = _f1_from_tpfpfn(self.per_threshold)
            best = int(np.argmax(f1_curve))
            out.update(ods_f1=float(f1_curve[best]), ods_threshold=float(THRESHOLDS[best]),
                       ois_f1=float(np.mean(self.best_image_f1)) if self.best_image_f1 else 0.0)
        out["miou"] = s["miou"]
        if self.image_counts:
            out["interval"] = f1_interval(np.array(self.image_counts))
        return out


def evaluate_arrays(probs, truths, threshold: float = 0.5, distance: int = 2) -> dict:
    """``MetricAccumulator`` over paired sequences of probability maps and masks."""
    acc = MetricAccumulator(threshold, distance)
    for p, t in zip(probs, truths, strict=True):
        acc.update(p, t)
    return acc.result()


def balanced_threshold(curves: dict[str, np.ndarray], floors: dict[str, float] | None = None) -> dict:
    """The threshold that no single dataset's pixel count dominates: the one maximising the mean over datasets of
    their strict F1. ``curves``: per dataset, the summed (tp, fp, fn) at every threshold (``threshold_counts``
    added over its images). ``floors`` ({dataset: F1}): only thresholds where each named dataset keeps at least that
    F1 compete (a set that must not get worse); when no threshold keeps them all, the unconstrained choice, with
    ``floors_met`` False. Returns ``{"threshold", "mean_f1", "floors_met", "by_dataset": {name: {"f1" (at the
    threshold), "best_threshold", "best_f1"}}}``."""
    if not curves:
        raise ValueError("no datasets to choose a threshold on")
    f1 = {name: _f1_from_tpfpfn(c) for name, c in sorted(curves.items())}
    unknown = sorted(set(floors or {}) - set(f1))
    if unknown:
        raise ValueError(f"floor for {', '.join(unknown)}: no such dataset here ({', '.join(f1)})")
    mean = np.mean(np.stack(list(f1.values())), axis=0)
    allowed = np.ones_like(mean, dtype=bool)
    for name, floor in (floors or {}).items():
        allowed &= f1[name] >= floor
    met = bool(allowed.any())
    best = int(np.argmax(np.where(allowed, mean, -np.inf))) if met else int(np.argmax(mean))
    return {"threshold": float(THRESHOLDS[best]), "mean_f1": float(mean[best]), "floors_met": met,
            "by_dataset": {name: {"f1": float(c[best]), "best_threshold": float(THRESHOLDS[int(np.argmax(c))]),
                                  "best_f1": float(c.max())} for name, c in f1.items()}}


def rule_score(choice: dict) -> float:
    """The score of a ``balanced_threshold`` choice: the mean F1, minus 1 when no threshold kept the floors (so any
    choice that keeps them ranks above every one that does not)."""
    return choice["mean_f1"] - (0.0 if choice["floors_met"] else 1.0)


def dataset_curves(probs, truths, datasets) -> dict[str, np.ndarray]:
    """Per dataset, the (tp, fp, fn) of its images summed at every threshold (input of ``balanced_threshold``)."""
    curves: dict[str, np.ndarray] = {}
    for prob, truth, name in zip(probs, truths, datasets, strict=True):
        curves[name] = curves.get(name, 0) + threshold_counts(prob, truth)
    return curves


def format_report(r: dict) -> str:
    """A small table of a ``result()`` dict."""
    rows = [f"images {r['images']}  threshold {r['threshold']:.2f}",
            f"{'':10s}{'precision':>10s}{'recall':>10s}{'F1':>10s}{'IoU':>10s}"]
    for name in ("strict", "tolerant", "centreline"):
        m = r.get(name)
        if m is None:  # a report saved before the centreline metric existed
            continue
        label = {"strict": "strict", "tolerant": f"tol(d={m.get('distance')})",
                 "centreline": f"cl(d={m.get('distance')})"}[name]
        rows.append(f"{label:10s}" + "".join(f"{m[k]:10.4f}" if k in m else f"{'-':>10s}"
                                             for k in ("precision", "recall", "f1", "iou")))
    sweep = (f"ODS F1 {r['ods_f1']:.4f} (t={r['ods_threshold']:.2f})  OIS F1 {r['ois_f1']:.4f}  "
             if "ods_f1" in r else "")
    rows.append(sweep + f"mIoU {r['miou']:.4f}" + (f"  {r['fps']:.2f} images/s" if r.get("fps") else ""))
    if r.get("interval"):
        i = r["interval"]
        rows.append(f"{i['level']:.0%} interval (images resampled {i['resamples']}x): strict F1 "
                    f"{i['strict_f1'][0]:.4f}-{i['strict_f1'][1]:.4f}, tolerant F1 "
                    f"{i['tolerant_f1'][0]:.4f}-{i['tolerant_f1'][1]:.4f}"
                    + (f", centreline F1 {i['centreline_f1'][0]:.4f}-{i['centreline_f1'][1]:.4f}"
                       if "centreline_f1" in i else ""))
    return "\n".join(rows)
