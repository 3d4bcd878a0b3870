"""crackseg.metrics (numpy reference) on hand-computed cases, and crackseg.keras_metrics agreeing with it."""
from __future__ import annotations

import numpy as np
import pytest

from crackseg.metrics import (MetricAccumulator, centreline, counts, dilate, evaluate_arrays, f1_interval,
                              format_report, paired_f1_difference, scores)


def _mask(shape, *pixels):
    m = np.zeros(shape, bool)
    for y, x in pixels:
        m[y, x] = True
    return m


def _score(pred, truth, distance=2):
    return scores(counts(pred, truth, distance))


# ---------------------------------------------------------------------------------------------- strict
def test_strict_counts_and_scores_on_a_small_array():
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
    c = counts(pred, truth, distance=0)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (2, 1, 1, 5)
    s = scores(c)["strict"]
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["iou"] == pytest.approx(2 / 4)


def test_miou_is_the_mean_of_crack_and_background_iou():
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
    # crack IoU 2/4; background: tn 5 / (tn 5 + fp 1 + fn 1)
    assert _score(pred, truth)["miou"] == pytest.approx((2 / 4 + 5 / 7) / 2)
    r = evaluate_arrays([pred.astype(np.float32)], [truth])
    assert r["miou"] == pytest.approx((2 / 4 + 5 / 7) / 2)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        counts(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


# ---------------------------------------------------------------------------------------------- tolerant
@pytest.mark.parametrize("pred_px, hit", [
    ((5, 7), True),   # 2 px to the right
    ((3, 5), True),   # 2 px up
    ((7, 7), True),   # diagonal: Chebyshev 2 (Euclidean 2.8)
    ((5, 8), False),  # 3 px away
    ((8, 7), False),  # Chebyshev 3
    ((2, 2), False),  # diagonal 3
])
def test_tolerance_is_chebyshev_distance_2(pred_px, hit):
    truth, pred = _mask((11, 11), (5, 5)), _mask((11, 11), pred_px)
    c = counts(pred, truth, distance=2)
    assert (c["tp"], c["fp"], c["fn"]) == (0, 1, 1)  # strictly a miss either way
    t = scores(c)["tolerant"]
    expected = 1.0 if hit else 0.0
    assert t["precision"] == t["recall"] == t["f1"] == t["iou"] == expected
    assert (c["tol_tp"], c["tol_fp"], c["tol_fn"]) == ((1, 0, 0) if hit else (0, 1, 1))


def test_tolerance_at_the_image_border():
    truth, pred = _mask((6, 6), (0, 0)), _mask((6, 6), (2, 2))
    assert _score(pred, truth)["tolerant"]["f1"] == 1.0
    assert _score(pred, truth, distance=1)["tolerant"]["f1"] == 0.0


def test_tolerant_precision_and_recall_count_different_pixels():
    truth = np.zeros((11, 11), bool)
    truth[5, :10] = True  # a 10-pixel crack
    pred = _mask((11, 11), (5, 5))  # one predicted pixel on it
    c = counts(pred, truth, 2)
    # the prediction reaches truth columns 3..7: 5 true pixels hit, 5 missed
    assert (c["tol_tp"], c["tol_fp"], c["tol_hit"], c["tol_fn"]) == (1, 0, 5, 5)
    t = scores(c)["tolerant"]
    assert t["precision"] == 1.0
    assert t["recall"] == pytest.approx(0.5)
    assert t["f1"] == pytest.approx(2 / 3)
    assert t["iou"] == pytest.approx(1 / 6)


def test_dilate_is_a_square():
    d = dilate(_mask((9, 9), (4, 4)), 2)
    assert d.sum() == 25 and d[2:7, 2:7].all()
    assert dilate(_mask((3, 3), (1, 1)), 0).sum() == 1


# ---------------------------------------------------------------------------------------------- centreline
def _line(shape, row, cols):
    """A one-pixel horizontal line: its own skeleton."""
    m = np.zeros(shape, bool)
    m[row, cols[0]:cols[1] + 1] = True
    return m


def test_centreline_of_a_one_pixel_line_is_the_line():
    line = _line((12, 30), 5, (2, 11))
    assert np.array_equal(centreline(line), line)
    assert not centreline(np.zeros((4, 4), bool)).any()


def test_centreline_ignores_width():
    # truth: a 5 px wide band (rows 3-7, cols 2-17), thinned to its middle row (shortened by at most 2 px at each
    # end); prediction: the 16 px middle line. Every skeleton pixel of each lies within 2 px of the other's: P = R
    # = 1, while strict F1 = 2 * 16 / (16 + 80) = 1/3 (16 of the band's 80 pixels found).
    truth = np.zeros((11, 20), bool)
    truth[3:8, 2:18] = True
    pred = _line((11, 20), 5, (2, 17))
    s = _score(pred, truth)
    assert s["strict"]["f1"] == pytest.approx(1 / 3)
    assert s["centreline"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_centreline_counts_by_hand():
    # truth: row 5, cols 2-11 (10 px). prediction: the same line 2 px lower (all within 2 px) plus a far vertical
    # 5 px line at col 25 -> cl_tp 10 of cl_pred 15, all 10 true skeleton pixels hit: P 2/3, R 1, F1 0.8; strict 0
    truth = _line((12, 30), 5, (2, 11))
    pred = _line((12, 30), 7, (2, 11))
    pred[1:6, 25] = True
    c = counts(pred, truth)
    assert (c["cl_tp"], c["cl_pred"], c["cl_hit"], c["cl_truth"]) == (10, 15, 10, 10)
    s = scores(c)
    assert s["strict"]["f1"] == 0.0
    assert s["centreline"]["precision"] == pytest.approx(2 / 3) and s["centreline"]["recall"] == 1.0
    assert s["centreline"]["f1"] == pytest.approx(0.8)


def test_centreline_tolerance_is_2_px():
    truth = _line((12, 30), 5, (2, 11))
    assert _score(_line((12, 30), 8, (2, 11)), truth)["centreline"]["f1"] == 0.0  # 3 px away: nothing matches
    # half the crack found: P 5/5; true pixels within 2 px of cols 2-6 are cols 2-8: R 7/10, F1 2 * 0.7 / 1.7
    s = _score(_line((12, 30), 5, (2, 6)), truth)["centreline"]
    assert (s["precision"], s["recall"]) == (1.0, pytest.approx(0.7)) and s["f1"] == pytest.approx(14 / 17)


def test_centreline_empty_cases():
    empty, line = np.zeros((12, 30), bool), _line((12, 30), 5, (2, 11))
    assert _score(empty, empty)["centreline"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert _score(line, empty)["centreline"]["f1"] == 0.0
    assert _score(empty, line)["centreline"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_centreline_is_summed_over_images_with_its_interval():
    # image 1 as in test_centreline_counts_by_hand (10, 15, 10, 10); image 2 misses a 10 px crack (0, 0, 0, 10):
    # P 10/15, R 10/20, F1 2 * (2/3) * (1/2) / (7/6) = 4/7
    truth = _line((12, 30), 5, (2, 11))
    pred = _line((12, 30), 7, (2, 11))
    pred[1:6, 25] = True
    r = evaluate_arrays([pred.astype(np.float32), np.zeros((12, 30), np.float32)], [truth, truth])
    assert r["centreline"]["precision"] == pytest.approx(2 / 3) and r["centreline"]["recall"] == pytest.approx(0.5)
    assert r["centreline"]["f1"] == pytest.approx(4 / 7) and r["centreline"]["distance"] == 2
    assert r["interval"]["centreline_f1"] == pytest.approx([0.0, 0.8])  # resamples: image 2 twice / image 1 twice
    table = format_report(r)
    assert "cl(d=2)" in table and "centreline F1 0.0000-0.8000" in table


def test_rows_without_centreline_columns_still_resample():
    # rows saved before the centreline metric (7 columns) give strict / tolerant intervals only, also paired with
    # 11-column rows of the same images
    old = np.array([(3, 1, 2, 4, 0, 5, 5)] * 4)
    new = np.array([(3, 1, 2, 4, 0, 5, 5, 6, 8, 6, 6)] * 4)
    assert "centreline_f1" not in f1_interval(old)
    assert f1_interval(new)["centreline_f1"] == pytest.approx([12 / 14, 12 / 14])  # P 6/8, R 1: F1 6/7
    d = paired_f1_difference(old, new)
    assert "centreline_f1" not in d and d["strict_f1"]["interval"] == [0.0, 0.0]
    assert paired_f1_difference(new, new)["centreline_f1"]["interval"] == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------- empty cases
def test_empty_prediction_scores_zero():
    s = _score(np.zeros((5, 5), bool), _mask((5, 5), (2, 2)))
    for kind in ("strict", "tolerant"):
        assert s[kind] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}


def test_empty_truth_scores_zero():
    s = _score(_mask((5, 5), (2, 2)), np.zeros((5, 5), bool))
    for kind in ("strict", "tolerant"):
        assert s[kind] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}
    assert s["miou"] == pytest.approx((0 + 24 / 25) / 2)


def test_both_empty_scores_one():
    s = _score(np.zeros((5, 5), bool), np.zeros((5, 5), bool))
    for kind in ("strict", "tolerant"):
        assert s[kind] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "iou": 1.0}
    assert s["miou"] == 1.0
    r = evaluate_arrays([np.zeros((4, 4), np.float32)], [np.zeros((4, 4), bool)])
    assert r["strict"]["f1"] == r["ods_f1"] == r["ois_f1"] == 1.0


# ---------------------------------------------------------------------------------------------- dataset level
def test_counts_are_summed_over_images_micro():
    truth_a = np.zeros((4, 4), bool)
    truth_a[0, :4] = True  # 4 crack pixels, 1 found
    pred_a = _mask((4, 4), (0, 0))
    truth_b = _mask((4, 4), (3, 0), (3, 1), (3, 2))  # 3 crack pixels, all found, plus 3 false positives
    pred_b = truth_b.copy()
    pred_b[1, 1:4] = True
    r = evaluate_arrays([pred_a.astype(np.float32), pred_b.astype(np.float32)], [truth_a, truth_b], distance=0)
    # micro: tp 4, fp 3, fn 3 (the macro mean would be P = 0.75, R = 0.625)
    assert r["images"] == 2
    assert r["strict"]["precision"] == pytest.approx(4 / 7)
    assert r["strict"]["recall"] == pytest.approx(4 / 7)
    assert r["strict"]["f1"] == pytest.approx(4 / 7)
    assert r["strict"]["iou"] == pytest.approx(4 / 10)


def test_threshold_is_inclusive():
    truth = _mask((2, 2), (0, 0))
    prob = np.array([[0.5, 0.0], [0.0, 0.0]], np.float32)
    assert evaluate_arrays([prob], [truth], threshold=0.5)["strict"]["f1"] == 1.0
    assert evaluate_arrays([prob], [truth], threshold=0.51)["strict"]["f1"] == 0.0


def test_ods_and_ois_on_hand_made_probability_maps():
    truth1, prob1 = np.array([[1, 1, 0, 0]], bool), np.array([[0.9, 0.6, 0.4, 0.1]], np.float32)
    truth2, prob2 = np.array([[1, 0, 0, 0]], bool), np.array([[0.3, 0.8, 0.1, 0.1]], np.float32)
    r = evaluate_arrays([prob1, prob2], [truth1, truth2])
    # image 1 is perfect for t in (0.4, 0.6]; image 2 at best F1 2/3 for t in (0.1, 0.3]
    assert r["ois_f1"] == pytest.approx((1 + 2 / 3) / 2)
    # dataset: t in (0.1, 0.3] gives tp 3, fp 2, fn 0 -> F1 6/8, the best; first such threshold 0.11
    assert r["ods_f1"] == pytest.approx(0.75)
    assert r["ods_threshold"] == pytest.approx(0.11)
    # at the default 0.5: tp 2, fp 1, fn 1
    assert r["strict"]["f1"] == pytest.approx(4 / 6)


def test_bootstrap_interval_of_two_images_spans_their_three_resamples():
    # resampling two images: AA (1/4) F1 1, AB (1/2) F1 2*10/(20+10) = 2/3, BB (1/4) F1 0 -> the 95 % interval
    # runs from BB to AA; A is found perfectly, B (10 crack pixels) not at all
    found = np.zeros((4, 5), bool)
    found[:2] = True
    r = evaluate_arrays([found.astype(np.float32), np.zeros((4, 5), np.float32)], [found, found], distance=0)
    assert r["strict"]["f1"] == pytest.approx(2 / 3)
    assert r["interval"]["strict_f1"] == [0.0, 1.0]
    assert r["interval"]["tolerant_f1"] == [0.0, 1.0]
    assert "95% interval (images resampled 1000x): strict F1 0.0000-1.0000" in format_report(r)


def test_bootstrap_interval_collapses_on_identical_images_and_is_reproducible():
    # ten copies of one image (tp 3, fp 1, fn 2; tolerant tp 4, fp 0, hit 5 of 5): every resample gives its F1
    one = (3, 1, 2, 4, 0, 5, 5)
    r = f1_interval(np.array([one] * 10))
    assert r["strict_f1"] == pytest.approx([6 / 9, 6 / 9])
    assert r["tolerant_f1"] == pytest.approx([1.0, 1.0])
    mixed = np.array([one, (0, 4, 6, 0, 4, 0, 6), (5, 0, 0, 5, 0, 5, 5)] * 4)
    a, b = f1_interval(mixed), f1_interval(mixed)
    assert a == b and a["strict_f1"][0] < 16 / 29 < a["strict_f1"][1]  # pooled: tp 8, fp 5, fn 8 per three
    with pytest.raises(ValueError, match="no images"):
        f1_interval(np.zeros((0, 7)))


def test_accumulator_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        MetricAccumulator().update(np.zeros((3, 3)), np.zeros((3, 4), bool))


# ---------------------------------------------------------------------------------------------- Keras metrics
def _random_batch(seed, n=4, size=32):
    """Different images: random thin cracks and noisy predictions near them."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    for i in range(n):
        for _ in range(i + 1):  # a different number of cracks per image
            r = rng.integers(0, size)
            truth[i, r, rng.integers(0, size // 2):rng.integers(size // 2, size)] = True
    prob = rng.uniform(0, 0.45, truth.shape)
    shifted = np.roll(truth, rng.integers(-3, 4), axis=1)  # predictions offset by up to 3 px
    prob[shifted] = rng.uniform(0.4, 1.0, int(shifted.sum()))
    prob[rng.random(truth.shape) < 0.02] = 0.9  # scattered false positives
    return prob.astype(np.float32), truth


def test_keras_crack_metrics_agree_with_the_numpy_reference():
    from crackseg.keras_metrics import KINDS, CrackMetric

    batches = [_random_batch(1), _random_batch(2), _random_batch(3, n=3)]
    probs = np.concatenate([b[0] for b in batches])
    truths = np.concatenate([b[1] for b in batches])
    assert len({t.sum() for t in truths}) > 1  # the images differ
    ref = evaluate_arrays(list(probs), list(truths), threshold=0.5, distance=2)
    for tolerant in (False, True):
        for kind in KINDS:
            metric = CrackMetric(kind, tolerant=tolerant, threshold=0.5, distance=2)
            for prob, truth in batches:
                y_true = np.stack([1.0 - truth, truth], -1).astype(np.float32)
                y_pred = np.stack([1.0 - prob, prob], -1)
                metric.update_state(y_true, y_pred)
            expected = ref["tolerant" if tolerant else "strict"][kind]
            assert float(metric.result()) == pytest.approx(expected, abs=1e-5), (kind, tolerant)
            metric.reset_state()
            assert float(metric.result()) == 1.0  # nothing seen: the empty case


def test_keras_metric_per_image_tolerance_does_not_cross_images():
    from crackseg.keras_metrics import CrackMetric

    truth = np.zeros((2, 8, 8), bool)
    truth[0, 4, 4] = True  # crack only in image 0
    pred = np.zeros((2, 8, 8), np.float32)
    pred[1, 4, 4] = 1.0  # prediction at the same place in image 1
    metric = CrackMetric("f1", tolerant=True)
    metric.update_state(np.stack([1.0 - truth, truth], -1).astype(np.float32), np.stack([1 - pred, pred], -1))
    assert float(metric.result()) == 0.0
    assert evaluate_arrays(list(pred), list(truth))["tolerant"]["f1"] == 0.0


def test_keras_metric_names_and_bad_kind():
    from crackseg.keras_metrics import CrackMetric, crack_metrics

    assert [m.name for m in crack_metrics()] == ["precision", "recall", "f1", "iou", "tol_f1"]
    with pytest.raises(ValueError):
        CrackMetric("accuracy")


# ---------------------------------------------------------------------------------------------- balanced threshold
def test_balanced_threshold_is_not_dominated_by_the_dataset_with_most_pixels():
    """A big dataset whose best threshold is 0.3 and a small one whose best is 0.8: pooled pixel counts would pick
    the big one's; the rule maximises the mean of the two F1 curves instead."""
    from crackseg.metrics import THRESHOLDS, balanced_threshold, dataset_curves

    big_truth = np.zeros((100, 100), bool)
    big_truth[:, :50] = True
    big_prob = np.where(big_truth, 0.35, 0.25).astype(np.float32)  # perfect for any threshold in (0.25, 0.35]
    small_truth = np.zeros((10, 10), bool)
    small_truth[:, :5] = True
    small_prob = np.where(small_truth, 0.9, 0.75).astype(np.float32)  # perfect in (0.75, 0.9]
    curves = dataset_curves([big_prob, small_prob], [big_truth, small_truth], ["big", "small"])
    pooled = curves["big"] + curves["small"]
    f1 = lambda t: 2 * t[:, 0] / np.maximum(2 * t[:, 0] + t[:, 1] + t[:, 2], 1)  # noqa: E731
    assert THRESHOLDS[int(np.argmax(f1(pooled)))] <= 0.35  # pooled pixels: the big set decides
    choice = balanced_threshold(curves)
    # at t in (0.75, 0.9] the small set is perfect (F1 1) and the big one predicts nothing (F1 0): mean 0.5; at
    # t in (0.25, 0.35] the big one is perfect and the small one flags everything (P 0.5, R 1, F1 2/3): mean 0.83
    assert 0.25 < choice["threshold"] <= 0.35 and choice["mean_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert choice["by_dataset"]["big"]["f1"] == pytest.approx(1.0)
    assert choice["by_dataset"]["small"]["f1"] == pytest.approx(2 / 3)
    assert 0.75 < choice["by_dataset"]["small"]["best_threshold"] <= 0.9
    assert choice["by_dataset"]["small"]["best_f1"] == pytest.approx(1.0)
    assert choice["floors_met"] is True
    # a floor on the small set above its 2/3 there: only thresholds in (0.75, 0.9] keep it; the mean there is 0.5
    floored = balanced_threshold(curves, {"small": 0.9})
    assert 0.75 < floored["threshold"] <= 0.9 and floored["floors_met"] is True
    assert floored["mean_f1"] == pytest.approx(0.5) and floored["by_dataset"]["small"]["f1"] == pytest.approx(1.0)
    assert balanced_threshold(curves, {"small": 0.5})["threshold"] == choice["threshold"]  # kept anyway: no change
    unreachable = balanced_threshold(curves, {"big": 1.0, "small": 1.0})  # no threshold keeps both
    assert unreachable["floors_met"] is False and unreachable["threshold"] == choice["threshold"]
    with pytest.raises(ValueError, match="no such dataset"):
        balanced_threshold(curves, {"other": 0.5})
    one = balanced_threshold({"only": curves["small"]})  # one dataset: its own ODS threshold
    assert one["threshold"] == one["by_dataset"]["only"]["best_threshold"]
    with pytest.raises(ValueError):
        balanced_threshold({})


def _rows(found: list[int], truth: int = 10) -> np.ndarray:
    """Per-image count rows (tp, fp, fn, tol_tp, tol_fp, tol_hit, truth) of a model that finds ``found[i]`` of the
    ``truth`` crack pixels of image i and marks nothing else (tolerant counts equal to the strict ones)."""
    return np.array([(k, 0, truth - k, k, 0, k, truth) for k in found])


def test_paired_difference_of_two_images_by_hand():
    # A finds image 1 and misses image 2; B finds both. Resamples (2,0): 1 - 1 = 0 (1/4); (1,1): 1 - 2/3 (1/2);
    # (0,2): 1 - 0 = 1 (1/4). So the point difference is 1/3, the 95 % interval [0, 1], and B is better in 3/4.
    d = paired_f1_difference(_rows([10, 0]), _rows([10, 10]))
    assert d["images"] == 2 and d["strict_f1"]["difference"] == pytest.approx(1 / 3)
    assert d["strict_f1"]["interval"] == [0.0, 1.0] and d["tolerant_f1"]["interval"] == [0.0, 1.0]
    assert d["strict_f1"]["b_better"] == pytest.approx(0.75, abs=0.05)
    same = paired_f1_difference(_rows([3, 7, 10]), _rows([3, 7, 10]))
    assert same["strict_f1"]["difference"] == 0 and same["strict_f1"]["interval"] == [0.0, 0.0]
    assert same["strict_f1"]["b_better"] == 0
    with pytest.raises(ValueError, match="differ in length"):
        paired_f1_difference(_rows([1, 2]), _rows([1]))


def test_paired_interval_resolves_what_two_separate_intervals_cannot():
    # 20 images of very different difficulty; B finds one more pixel than A on every one of them
    a = [i // 2 for i in range(20)]
    b = [k + 1 for k in a]
    ia, ib = f1_interval(_rows(a))["strict_f1"], f1_interval(_rows(b))["strict_f1"]
    assert ib[0] < ia[1]  # the separate intervals overlap: they cannot tell A from B
    d = paired_f1_difference(_rows(a), _rows(b))["strict_f1"]
    assert d["interval"][0] > 0 and d["b_better"] == 1.0  # paired: B is better in every resample
    assert d["interval"][0] <= d["difference"] <= d["interval"][1]
