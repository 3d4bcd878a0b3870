"""Crack statistics on drawn shapes of known length and width."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from crackseg.measure import crack_stats, format_stats, skeleton, skeleton_length


def band(shape, length: int, width: int, vertical: bool = False) -> np.ndarray:
    """An axis-aligned crack of exactly ``length`` x ``width`` pixels."""
    mask = np.zeros(shape, bool)
    top, left = 20, 30
    if vertical:
        mask[left:left + length, top:top + width] = True
    else:
        mask[top:top + width, left:left + length] = True
    return mask


@pytest.mark.parametrize("width", [1, 3, 5, 8])
@pytest.mark.parametrize("vertical", [False, True])
def test_straight_band_length_and_width(width, vertical):
    stats = crack_stats(band((260, 260), 180, width, vertical))
    assert stats["crack_pixels"] == 180 * width
    assert stats["crack_ratio"] == pytest.approx(180 * width / (260 * 260))
    # The skeleton stops about half a width short of each end.
    assert 180 - width - 1 <= stats["length_px"] <= 180
    assert stats["max_width_px"] == pytest.approx(width, abs=1.0)
    assert stats["components"] == 1


def test_diagonal_line_counts_sqrt2_per_step():
    mask = np.zeros((128, 128), bool)
    idx = np.arange(10, 110)
    mask[idx, idx] = True  # 100 pixels on the diagonal: 99 diagonal steps
    assert crack_stats(mask)["length_px"] == pytest.approx(99 * math.sqrt(2), abs=0.01)
    assert crack_stats(mask)["max_width_px"] == pytest.approx(1.0)


def test_thick_diagonal_line():
    mask = np.zeros((256, 256), np.uint8)
    cv2.line(mask, (30, 30), (200, 200), 1, 5)
    stats = crack_stats(mask > 0)
    true_length = math.dist((30, 30), (200, 200))
    assert true_length * 0.95 <= stats["length_px"] <= true_length * 1.03
    # cv2 draws thickness 5 as a band about 7 px wide across the line
    across = np.count_nonzero(mask[115, :])  # horizontal cut: width * sqrt(2)
    assert stats["max_width_px"] == pytest.approx(across / math.sqrt(2), abs=1.5)


def test_oblique_line_within_chain_code_bias():
    mask = np.zeros((256, 256), np.uint8)
    cv2.line(mask, (20, 50), (220, 120), 1, 3)
    true_length = math.dist((20, 50), (220, 120))
    # 1 / sqrt(2) step weights overestimate oblique digital lines by up to ~8 % (Freeman chain-code bias).
    assert true_length * 0.97 <= crack_stats(mask > 0)["length_px"] <= true_length * 1.09


def test_skeleton_is_thin_and_connected():
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, (80, 60), 40, 1, 6)
    skel = skeleton(mask > 0)
    assert skel.sum() > 0
    assert cv2.connectedComponents(skel, connectivity=8)[0] - 1 == 1
    # thin: no 2x2 block of skeleton pixels anywhere
    blocks = skel[:-1, :-1] & skel[1:, :-1] & skel[:-1, 1:] & skel[1:, 1:]
    assert not blocks.any()
    assert skeleton_length(skel) == pytest.approx(2 * math.pi * 40, rel=0.08)


def test_two_cracks_and_empty_mask():
    mask = band((200, 260), 100, 3) | band((200, 260), 60, 3, vertical=True)[:, ::-1]
    stats = crack_stats(mask)
    assert stats["components"] == 2
    assert 150 <= stats["length_px"] <= 160
    empty = crack_stats(np.zeros((50, 60), bool))
    assert empty == {"crack_ratio": 0.0, "crack_pixels": 0, "length_px": 0.0, "max_width_px": 0.0, "components": 0}
    assert "length" in format_stats(stats)


def test_rejects_non_2d_mask():
    with pytest.raises(ValueError, match="2-D"):
        crack_stats(np.zeros((4, 4, 3), bool))
