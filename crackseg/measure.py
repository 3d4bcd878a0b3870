"""Per-frame crack statistics from a binary mask (numpy/OpenCV only; ``cv2.ximgproc`` is not in headless builds).

* ``crack_ratio``: crack pixels / all pixels;
* ``length_px``: length of the mask's skeleton, 1 per horizontal/vertical step and sqrt(2) per diagonal step;
* ``max_width_px``: widest point, from the distance transform read on the skeleton (the skeleton runs along the
  middle of the crack, where the distance to the background is half the width);
* ``components``: connected crack regions (8-connected).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

_SQRT2 = math.sqrt(2.0)


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    """The 8 neighbours P2..P9 of every pixel of a zero-padded 0/1 array, clockwise from north (Zhang-Suen order)."""
    p = np.pad(img, 1)
    h, w = img.shape
    at = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    return [at(-1, 0), at(-1, 1), at(0, 1), at(1, 1), at(1, 0), at(1, -1), at(0, -1), at(-1, -1)]


def _zhang_suen(img: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning (vectorised: every sub-iteration removes all deletable pixels at once)."""
    img = img.astype(np.uint8).copy()
    while True:
        changed = False
        for step in (0, 1):
            n = _neighbours(img)
            p2, p3, p4, p5, p6, p7, p8, p9 = n
            count = sum(n)
            ring = n + [p2]
            transitions = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            delete = (img == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & cond
            if delete.any():
                img[delete] = 0
                changed = True
        if not changed:
            return img


def _remove_staircases(skel: np.ndarray) -> np.ndarray:
    """Drop the corner pixel of every L-shaped step (e.g. N and E set, S and W clear): Zhang-Suen leaves them on
    diagonal runs, and each would add 2 instead of sqrt(2) to the length. The diagonal neighbour opposite the
    corner must be clear too, so removing it never disconnects anything; one orientation per pass keeps the
    simultaneous removals independent."""
    skel = skel.copy()
    # (two set 4-neighbours, two clear 4-neighbours, the diagonal that must be clear), as (dy, dx)
    orientations = [
        (((-1, 0), (0, 1)), ((1, 0), (0, -1)), (1, -1)),
        (((0, 1), (1, 0)), ((-1, 0), (0, -1)), (-1, -1)),
        (((1, 0), (0, -1)), ((-1, 0), (0, 1)), (-1, 1)),
        (((0, -1), (-1, 0)), ((1, 0), (0, 1)), (1, 1)),
    ]
    h, w = skel.shape
    for set_dirs, clear_dirs, diagonal in orientations:
        p = np.pad(skel, 1)
        at = lambda d: p[1 + d[0]:1 + d[0] + h, 1 + d[1]:1 + d[1] + w]  # noqa: E731
        corner = (skel == 1) & (at(diagonal) == 0)
        for d in set_dirs:
            corner &= at(d) == 1
        for d in clear_dirs:
            corner &= at(d) == 0
        skel[corner] = 0
    return skel


def skeleton(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide, 8-connected centre line of a boolean mask (uint8 0/1, same shape)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # thin only the bounding box: much cheaper
    out[y0:y1, x0:x1] = _remove_staircases(_zhang_suen(mask[y0:y1, x0:x1]))
    return out


def skeleton_length(skel: np.ndarray) -> float:
    """Length of a skeleton: each 4-connected pair of pixels counts 1, each diagonal pair sqrt(2) unless the two
    are already joined through a shared 4-neighbour (a junction or corner), which would count that step twice."""
    s = np.asarray(skel, bool)
    if not s.any():
        return 0.0
    p = np.pad(s, 1)
    h, w = s.shape
    at = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    straight = np.count_nonzero(s & at(0, 1)) + np.count_nonzero(s & at(1, 0))
    # diagonal to the south-east: bridged when east or south is set; to the south-west: when west or south is.
    diag_se = s & at(1, 1) & ~at(0, 1) & ~at(1, 0)
    diag_sw = s & at(1, -1) & ~at(0, -1) & ~at(1, 0)
    return float(straight + _SQRT2 * (np.count_nonzero(diag_se) + np.count_nonzero(diag_sw)))


def crack_stats(mask: np.ndarray) -> dict[str, float | int]:
    """Statistics of one boolean HxW crack mask (see the module docstring); all in pixels."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    crack_pixels = int(np.count_nonzero(mask))
    stats = {"crack_ratio": crack_pixels / mask.size if mask.size else 0.0, "crack_pixels": crack_pixels,
             "length_px": 0.0, "max_width_px": 0.0, "components": 0}
    if not crack_pixels:
        return stats
    skel = skeleton(mask)
    # cv2 distance: to the nearest background pixel centre, so the middle of a w-pixel band is (w + 1) / 2 away;
    # the width is therefore 2 d - 1. The zero border makes cracks touching the frame edge end there.
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    on_skeleton = distance[skel.astype(bool)]
    stats["length_px"] = round(skeleton_length(skel), 2)
    stats["max_width_px"] = round(float(2.0 * on_skeleton.max() - 1.0), 2) if on_skeleton.size else 1.0
    stats["components"] = int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1)
    return stats


def format_stats(stats: dict) -> str:
    """One short line for logs and overlays."""
    return (f"crack {100 * stats['crack_ratio']:.2f}%  length {stats['length_px']:.0f}px  "
            f"max width {stats['max_width_px']:.1f}px")
