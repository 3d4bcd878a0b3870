"""crackseg.hysteresis: the masking rule on hand-made maps, the probability cache and scoring a rule from it."""
from __future__ import annotations

import numpy as np
import pytest

from crackseg.hysteresis import (HysteresisError, ProbabilityCache, hysteresis_mask, pieces, score_rule)


def _crack() -> np.ndarray:
    """A row of probabilities: a confident piece (0.9), a faint bridge (0.4), another confident piece, then a faint
    speck on its own (0.4) and a diagonal faint pixel touching the first piece only by a corner."""
    p = np.zeros((5, 14), np.float32)
    p[2, 1:4] = 0.9
    p[2, 4:6] = 0.4
    p[2, 6:9] = 0.9
    p[2, 12] = 0.4
    p[1, 0] = 0.4  # diagonal neighbour of (2, 1)
    return p


def test_hysteresis_keeps_faint_pixels_connected_to_a_seed():
    p = _crack()
    single = p >= 0.5
    assert pieces(single) == 2  # the faint bridge breaks the crack in two
    mask = hysteresis_mask(p, 0.3, 0.5)
    assert mask[2, 1:9].all() and pieces(mask) == 1  # bridged
    assert not mask[2, 12]  # a faint speck with no seed stays out
    assert mask[1, 0]  # 8-connected: the diagonal neighbour joins
    assert not hysteresis_mask(p, 0.3, 0.5, connectivity=4)[1, 0]
    assert np.array_equal(hysteresis_mask(p, 0.5, 0.5), single)  # low == high: the single threshold
    assert np.array_equal(hysteresis_mask(p, 0.4, 0.4), p >= 0.4)  # inclusive, as every threshold here
    assert not hysteresis_mask(p, 0.3, 0.95).any()  # no seed, no crack


def test_hysteresis_matches_scikit_image_with_4_connectivity():
    from skimage.filters import apply_hysteresis_threshold

    rng = np.random.default_rng(0)
    p = rng.random((40, 50)).astype(np.float32) ** 3  # values never equal to a threshold below
    assert np.array_equal(hysteresis_mask(p, 0.305, 0.705, connectivity=4), apply_hysteresis_threshold(p, 0.305, 0.705))


def test_hysteresis_refuses_low_above_high():
    with pytest.raises(HysteresisError, match="must not exceed"):
        hysteresis_mask(_crack(), 0.6, 0.5)
    with pytest.raises(HysteresisError, match="4 or 8"):
        hysteresis_mask(_crack(), 0.3, 0.5, connectivity=6)


def test_score_rule_per_dataset_with_pieces(tmp_path):
    p = _crack()
    truth = np.zeros(p.shape, bool)
    truth[2, 1:9] = True  # one crack of 8 px
    cache = ProbabilityCache(["a", "b"], ["RoadA", "RoadB"], [p.astype(np.float16), np.zeros_like(p, np.float16)],
                             [truth, np.zeros_like(truth)])
    path = tmp_path / "probs.npz"
    cache.save(path, {"model_sha256": "x"})
    loaded = ProbabilityCache.load(path, {"model_sha256": "x"})
    assert loaded.stems == ["a", "b"] and np.array_equal(loaded.truths[0], truth)
    with pytest.raises(HysteresisError, match="made for"):
        ProbabilityCache.load(path, {"model_sha256": "y"})
    single = score_rule(loaded, lambda q: q >= 0.5)
    hyst = score_rule(loaded, lambda q: hysteresis_mask(q, 0.3, 0.5))
    # single: 6 of 8 px found, none extra: strict F1 12/14; hysteresis: 8 found + the diagonal pixel: 16/17
    assert single["by_dataset"]["RoadA"]["strict"]["f1"] == pytest.approx(12 / 14)
    assert hyst["by_dataset"]["RoadA"]["strict"]["f1"] == pytest.approx(16 / 17)
    assert single["by_dataset"]["RoadA"]["pieces"]["predicted"] == 2 and hyst["by_dataset"]["RoadA"]["pieces"] == {
        "predicted": 1.0, "truth": 1.0, "predicted_median": 1.0}
    assert hyst["by_dataset"]["RoadB"]["strict"]["f1"] == 1.0 and hyst["pieces"]["truth"] == 0.5
    assert len(hyst["by_dataset"]["RoadA"]["image_counts"][0]) == 11 and "ods_f1" not in hyst
