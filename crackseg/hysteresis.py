"""Hysteresis thresholding of crack probability maps, and scoring any masking rule on cached probabilities.

Hysteresis (Canny's rule, ``skimage.filters.apply_hysteresis_threshold``): pixels at or above ``high`` seed cracks;
pixels at or above ``low`` join them when connected (8-connected here) to a seed. A faint stretch between two
confident pieces is kept, a faint speck on its own is not. ``low == high`` is the single threshold.

The rule is written with OpenCV only (no scikit-image), so an edge engine could apply it as written; with
``connectivity=4`` it is scikit-image's function except that this one keeps values equal to a threshold (``>=``, the
convention of every threshold in this project; scikit-image uses ``>``).

``score_rule`` scores one masking rule over per-image probabilities already computed (``ProbabilityCache``), so a
sweep of (low, high) never runs the model twice: strict, tolerant and centreline F1 per dataset (the
``MetricAccumulator`` report) and the crack pieces per image (``measure.crack_stats``' 8-connected components).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .metrics import MetricAccumulator


class HysteresisError(ValueError):
    """Bad thresholds or an unusable probability cache (one line)."""


def hysteresis_mask(prob: np.ndarray, low: float, high: float, connectivity: int = 8) -> np.ndarray:
    """Boolean HxW mask: pixels >= ``low`` connected (``connectivity`` 4 or 8) to a pixel >= ``high``."""
    if not low <= high:
        raise HysteresisError(f"hysteresis thresholds: low {low} must not exceed high {high}")
    if connectivity not in (4, 8):
        raise HysteresisError(f"connectivity {connectivity}: 4 or 8")
    prob = np.asarray(prob, np.float32)
    weak = prob >= low
    if low == high or not weak.any():
        return weak
    count, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=connectivity)
    seeded = np.zeros(count, bool)
    seeded[np.unique(labels[prob >= high])] = True
    seeded[0] = False  # label 0 is the background
    return seeded[labels]


def pieces(mask: np.ndarray) -> int:
    """8-connected crack regions of a boolean mask (``measure.crack_stats``' ``components``)."""
    mask = np.asarray(mask, bool)
    return int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1) if mask.any() else 0


@dataclass
class ProbabilityCache:
    """Per-image crack probabilities of one model on a list of images, with their masks and datasets."""

    stems: list[str]
    datasets: list[str]
    probs: list[np.ndarray]      # float16 HxW (a threshold step of 0.01 is far coarser than float16 near 1)
    truths: list[np.ndarray]     # bool HxW

    def save(self, path: str | Path, meta: dict) -> None:
        """One compressed .npz: the arrays, plus ``meta`` (e.g. the model's sha256) to check the cache against."""
        import json

        arrays = {f"p{i}": p for i, p in enumerate(self.probs)}
        arrays.update({f"t{i}": np.packbits(t, axis=-1) for i, t in enumerate(self.truths)})
        widths = np.array([t.shape[1] for t in self.truths])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, stems=np.array(self.stems), datasets=np.array(self.datasets), widths=widths,
                            meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)

    @classmethod
    def load(cls, path: str | Path, meta: dict | None = None) -> "ProbabilityCache":
        """The cache at ``path``; ``meta``: refused unless the saved meta equals it (another model or list)."""
        import json

        try:
            z = np.load(path)
        except (OSError, ValueError) as exc:
            raise HysteresisError(f"{path}: not a probability cache ({exc})") from None
        saved = json.loads(str(z["meta"]))
        if meta is not None and saved != json.loads(json.dumps(meta, sort_keys=True)):
            raise HysteresisError(f"{path}: made for {saved}, not {meta}")
        n = len(z["stems"])
        truths = [np.unpackbits(z[f"t{i}"], axis=-1, count=int(w)).astype(bool) for i, w in zip(range(n), z["widths"])]
        return cls([str(s) for s in z["stems"]], [str(d) for d in z["datasets"]], [z[f"p{i}"] for i in range(n)],
                   truths)


def score_rule(cache: ProbabilityCache, rule: Callable[[np.ndarray], np.ndarray], distance: int = 2) -> dict:
    """The masking ``rule`` (probability map -> boolean mask) over every cached image: the metric report overall
    and ``by_dataset`` (strict / tolerant / centreline at the rule's mask; ODS / OIS there are of the raw
    probabilities and do not depend on the rule) and, per report, ``pieces``: the mean number of 8-connected crack
    regions per image in the rule's masks and in the ground truth, and ``per_image_counts`` for paired bootstrap
    comparisons (``metrics.paired_f1_difference``)."""
    overall = MetricAccumulator(0.5, distance)
    parts: dict[str, MetricAccumulator] = {}
    found: dict[str, list[int]] = {}
    true: dict[str, list[int]] = {}
    for prob, truth, name in zip(cache.probs, cache.truths, cache.datasets, strict=True):
        mask = rule(prob.astype(np.float32))
        for acc in (overall, parts.setdefault(name, MetricAccumulator(0.5, distance))):
            acc.update_mask(mask, truth)
        found.setdefault(name, []).append(pieces(mask))
        true.setdefault(name, []).append(pieces(truth))

    def report(acc: MetricAccumulator, f: list[int], t: list[int]) -> dict:
        r = acc.result()
        r.pop("threshold", None)
        r["pieces"] = {"predicted": float(np.mean(f)), "truth": float(np.mean(t)),
                       "predicted_median": float(np.median(f))}
        r["image_counts"] = [list(map(int, row)) for row in acc.image_counts]
        return r

    out = report(overall, sum(found.values(), []), sum(true.values(), []))
    out["by_dataset"] = {name: report(parts[name], found[name], true[name]) for name in sorted(parts)}
    return out
