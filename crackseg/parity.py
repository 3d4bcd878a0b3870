"""Parity of two engines on the same images: a candidate export (ONNX, OpenVINO, int8, TensorRT) against its
reference, per precision. No runtime imports: the engines are passed in."""
from __future__ import annotations

import numpy as np

# Parity of a candidate against its reference, per precision: (max abs probability difference or None for
# "not checked", largest fraction of mask pixels allowed to differ beyond the borderline ones).
PARITY_TOLERANCE = {"fp32": (1e-3, 0.0), "fp16": (5e-2, 1e-3), "int8": (None, 1e-2)}


def parity_check(reference, candidate, images: list[np.ndarray], threshold: float, precision: str = "fp32"
                 ) -> dict:
    """Compare two engines on the same images.

    Masks must be identical except at borderline pixels: where the reference probability lies within the
    allowed difference of the threshold, rounding alone may flip the mask, so those are reported separately.
    """
    atol, max_mask_fraction = PARITY_TOLERANCE[precision]
    max_diff, pixels, mismatched, borderline = 0.0, 0, 0, 0
    band = atol if atol is not None else 0.0
    for image in images:
        a, b = reference.predict(image), candidate.predict(image)
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        differ = (a >= threshold) != (b >= threshold)
        mismatched += int(differ.sum())
        borderline += int((differ & (np.abs(a - threshold) <= band)).sum())
        pixels += a.size
    beyond = mismatched - borderline
    passed = (atol is None or max_diff <= atol) and beyond <= max_mask_fraction * pixels
    return {"reference": reference.backend, "candidate": candidate.backend, "precision": precision,
            "images": len(images), "pixels": pixels, "threshold": threshold, "max_abs_diff": max_diff,
            "tolerance": atol, "mask_diff_pixels": mismatched, "mask_diff_borderline": borderline,
            "passed": bool(passed)}


def format_parity(r: dict) -> str:
    verdict = "PASS" if r["passed"] else "FAIL"
    tol = f" (<= {r['tolerance']:g})" if r["tolerance"] is not None else ""
    return (f"parity {r['candidate']} vs {r['reference']} [{r['precision']}] on {r['images']} images: "
            f"max |diff| {r['max_abs_diff']:.2e}{tol}, mask pixels differing {r['mask_diff_pixels']} of "
            f"{r['pixels']} ({r['mask_diff_borderline']} borderline) at threshold {r['threshold']:g}: {verdict}")

