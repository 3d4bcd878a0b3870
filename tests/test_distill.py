"""crackseg.distill: temperature softening, the soft-label store (round trip, manifest, resume, refusal), KD targets
and losses per strategy, the soft-label-aware input pipeline, and model cards."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from crackseg import distill
from crackseg.card import CardError, card_path, read_card, write_card
from crackseg.distill import (HEADS, REAL, STRATEGIES, LabelError, head_probabilities, kd_losses, kd_targets,
                              label_path, label_quality, load_split_labels, read_manifest,
                              record_quality, read_soft_label, resolve_strategy, soften,
                              two_class, write_soft_label, write_split)
from crackseg.io import sha256


@dataclass(frozen=True)
class FakeSample:
    id: str
    image: Path
    mask: Path | None = None


# ---------------------------------------------------------------------------------------------- softening
def test_soften_is_monotone_keeps_argmax_and_flattens_with_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (500, 2)).astype(np.float32)
    previous_spread = None
    for t in (1.0, 5.0, 10.0, 15.0):
        p = soften(logits, t)
        assert np.allclose(p.sum(-1), 1.0, atol=1e-6)
        assert np.array_equal(np.argmax(p, -1), np.argmax(logits, -1))  # argmax kept
        order = np.argsort(logits[:, 1] - logits[:, 0])  # monotone in the logit margin
        assert np.all(np.diff(p[order, 1]) >= -1e-7)
        spread = np.abs(p[:, 1] - 0.5).mean()
        if previous_spread is not None:
            assert spread < previous_spread  # hotter = softer
        previous_spread = spread
    with pytest.raises(ValueError):
        soften(logits, 0)


def test_soften_matches_the_network_temperature_softmax():
    from model import TemperatureSoftmax

    logits = np.random.default_rng(1).normal(0, 8, (2, 6, 6, 2)).astype(np.float32)
    keras_out = np.asarray(TemperatureSoftmax(10.0)(logits))
    assert np.abs(soften(logits, 10.0) - keras_out).max() < 1e-6


# ---------------------------------------------------------------------------------------------- label store
@pytest.fixture(scope="module")
def tiny_logits_model():
    from model import build_logits_model

    return build_logits_model("student", None, width=2, blocks=0)


def _fake_images(tmp_path: Path, n: int = 3, size=(30, 42)) -> list[FakeSample]:
    import cv2

    rng = np.random.default_rng(2)
    samples = []
    for i in range(n):
        path = tmp_path / "imgs" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        samples.append(FakeSample(f"sub/{i:02d}.png", path))
    return samples


def _predictor(logits_model):
    from crackseg.preprocess import prepare

    def predict(image):
        x, _ = prepare(image)
        return {h: np.asarray(o) for h, o in zip(HEADS, logits_model(x, training=False))}

    return predict


def test_distill_heads_mirror_the_network():
    import model

    assert distill.HEADS == model.HEADS


def test_round_trip_equals_teacher_output(tmp_path, tiny_logits_model):
    """Written then read soft labels equal the teacher's softmax heads at T within 1e-4 (30x42: padded + cropped)."""
    from crackseg.data import read_image
    from crackseg.preprocess import prepare
    from model import with_heads

    samples = _fake_images(tmp_path)
    teacher_softmax = with_heads(tiny_logits_model, {h: (h, 10.0) for h in HEADS})
    report = write_split(_predictor(tiny_logits_model), samples, read_image, tmp_path / "labels", "train",
                         "teacher.keras", "abc123", 10.0, progress=False)
    assert report == {"split": "train", "written": 3, "skipped": 0, "dir": str(tmp_path / "labels" / "train")}
    for s in samples:
        image = read_image(s.image)
        x, (h, w) = prepare(image)
        expected = {k: np.asarray(v)[0, :h, :w] for k, v in teacher_softmax(x, training=False).items()}
        stored = two_class(read_soft_label(label_path(tmp_path / "labels" / "train", s.id)))
        assert stored.shape == (h, w, 4, 2)
        for i, head in enumerate(HEADS):
            assert np.abs(stored[..., i, :] - expected[head]).max() < 1e-4


def test_float32_store_is_exact_where_float16_is_not(tmp_path):
    crack = np.random.default_rng(3).uniform(0, 1, (17, 23, 4)).astype(np.float32)
    write_soft_label(tmp_path / "a.npz", crack)
    assert np.array_equal(read_soft_label(tmp_path / "a.npz"), crack)
    assert np.abs(crack.astype(np.float16).astype(np.float32) - crack).max() > 1e-4  # why not float16
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary left behind


def test_manifest_resume_refusal_and_rebuild(tmp_path):
    samples = [FakeSample(f"{i}.png", Path(f"{i}.png")) for i in range(3)]
    calls = []

    def read(path):
        calls.append(path)
        return np.zeros((8, 12, 3), np.uint8)

    def predict(image):
        return {h: np.full((1, 8, 12, 2), [0.0, float(k)], np.float32) for k, h in enumerate(HEADS)}

    labels = tmp_path / "labels"
    write_split(predict, samples[:2], read, labels, "val", "t.keras", "sha-one", 10.0, progress=False)
    manifest = read_manifest(labels / "val")
    assert manifest["teacher_sha256"] == "sha-one" and manifest["temperature"] == 10.0
    assert manifest["split"] == "val" and manifest["images"] == ["0.png", "1.png"] and manifest["created"]
    assert manifest["heads"] == list(HEADS)

    calls.clear()  # resume: only the new image is computed
    report = write_split(predict, samples, read, labels, "val", "t.keras", "sha-one", 10.0, progress=False)
    assert (report["written"], report["skipped"]) == (1, 2) and calls == [Path("2.png")]
    assert read_manifest(labels / "val")["images"] == ["0.png", "1.png", "2.png"]

    for sha, t in (("sha-two", 10.0), ("sha-one", 5.0)):  # another teacher or T: refused, one line
        with pytest.raises(LabelError, match="--rebuild") as err:
            write_split(predict, samples, read, labels, "val", "t.keras", sha, t, progress=False)
        assert "\n" not in str(err.value) and str(labels / "val") in str(err.value)

    report = write_split(predict, samples, read, labels, "val", "t.keras", "sha-two", 5.0, rebuild=True,
                         progress=False)
    assert report["written"] == 3 and read_manifest(labels / "val")["temperature"] == 5.0
    crack = read_soft_label(label_path(labels / "val", "0.png"))
    assert np.allclose(crack[0, 0], soften(np.array([[0.0, k] for k in range(4)]), 5.0)[:, 1])


def test_load_split_labels_resoftens_and_checks_teacher_and_completeness(tmp_path):
    samples = [FakeSample(f"{i}.png", Path(f"{i}.png")) for i in range(2)]

    def predict(image):
        return {h: np.zeros((1, 4, 4, 2), np.float32) for h in HEADS}

    read = lambda p: np.zeros((4, 4, 3), np.uint8)  # noqa: E731
    write_split(predict, samples[:1], read, tmp_path, "train", "t.keras", "sha", 10.0, progress=False)
    labels, manifest = load_split_labels(tmp_path, "train", samples[:1], 10.0)
    assert len(labels) == 1 and labels[0].shape == (4, 4, 4) and manifest["split"] == "train"
    # zero logits: 0.5 at any temperature; a shift of +5 logits at T1 = 5 gives sigmoid(1)
    at_five, _ = load_split_labels(tmp_path, "train", samples[:1], 5.0, shift=5.0)
    np.testing.assert_allclose(at_five[0], 1 / (1 + np.exp(-1.0)), atol=1e-6)
    with pytest.raises(LabelError, match="teacher"):
        load_split_labels(tmp_path, "train", samples[:1], 10.0, teacher_sha256="other")
    with pytest.raises(LabelError, match="1.png.npz: soft label missing"):
        load_split_labels(tmp_path, "train", samples, 10.0)
    with pytest.raises(LabelError, match="run Train_2_Step.py first"):
        load_split_labels(tmp_path, "val", samples, 10.0)


def test_label_quality_scores_the_mix_head_by_the_card_rule(tmp_path):
    # Two datasets of one 1x4 image each. "A": crack at pixels 0-1, mix 0.9 0.6 0.3 0.1; "B": crack at pixel 0,
    # mix 0.7 0.4 0.2 0.2. A scores F1 1 for thresholds in (0.3, 0.6], B in (0.4, 0.7] (prob >= t is a crack), so
    # the mean is 1 on (0.4, 0.6] and the rule takes the sweep's first such threshold, 0.41 (0.40 adds B's 0.4
    # pixel: B's F1 2/3).
    mixes = {"A": [0.9, 0.6, 0.3, 0.1], "B": [0.7, 0.4, 0.2, 0.2]}
    truths = {"A": [1, 1, 0, 0], "B": [1, 0, 0, 0]}
    samples = []
    for name in mixes:
        crack = np.zeros((1, 4, 4), np.float32)
        crack[..., HEADS.index("mix")] = mixes[name]
        crack[..., HEADS.index("h")] = 1.0 - np.array(mixes[name])  # another head: must not be scored
        write_soft_label(label_path(tmp_path, f"{name}.png"), crack)
        samples.append(FakeSample(f"{name}.png", Path(f"{name}.png"), Path(name)))
    read_mask = lambda path: np.array([truths[path.name]], bool)  # noqa: E731
    quality = label_quality(tmp_path, samples, read_mask, ["A", "B"])
    assert quality["images"] == 2 and quality["mean_f1"] == pytest.approx(1.0)
    assert quality["threshold"] == pytest.approx(0.41) and quality["floors_met"]
    assert quality["by_dataset"]["A"]["f1"] == pytest.approx(1.0)
    # with a floor that cannot be kept (F1 > 1), the rule says so
    assert not label_quality(tmp_path, samples, read_mask, ["A", "B"], {"A": 1.1})["floors_met"]

    write_split(lambda image: {h: np.zeros((1, 1, 4, 2), np.float32) for h in HEADS}, samples,
                lambda path: np.zeros((1, 4, 3), np.uint8), tmp_path / "labels", "val", "t.keras", "sha", 1.0,
                progress=False)
    record_quality(tmp_path / "labels" / "val", quality)
    assert read_manifest(tmp_path / "labels" / "val")["quality"]["mean_f1"] == pytest.approx(1.0)
    with pytest.raises(LabelError, match="A.png.npz: label is 4x1 but its mask A is 3x1"):
        label_quality(tmp_path, samples, lambda path: np.zeros((1, 3), bool), ["A", "B"])
    with pytest.raises(LabelError, match="no manifest"):
        record_quality(tmp_path / "nowhere", quality)


def test_unreadable_and_escaping_labels_are_refused(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LabelError, match="bad.npz: unreadable soft label"):
        read_soft_label(tmp_path / "bad.npz")
    with pytest.raises(LabelError):
        label_path(tmp_path, "../outside.png")


def test_head_probabilities_crop_the_padding():
    logits = {h: np.random.default_rng(4).normal(0, 3, (1, 12, 16, 2)) for h in HEADS}
    out = head_probabilities(logits, 10.0, (10, 13))
    assert out.shape == (10, 13, 4)
    assert np.allclose(out[..., 3], soften(logits["mix"][0, :10, :13], 10.0)[..., 1])


# ---------------------------------------------------------------------------------------------- strategies
def test_strategy_table_and_overrides():
    assert resolve_strategy("standard") == {"strategy": "standard", "t0": 0.0, "t1": 10.0, "t2": 1.0, "distill": True}
    for name, temps in (("hyperthermal", (10.0, 10.0, 10.0)), ("non-isothermal", (0.0, 10.0, 10.0))):
        kd = resolve_strategy(name)
        assert (kd["t0"], kd["t1"], kd["t2"]) == temps == STRATEGIES[name] and kd["distill"]
    assert resolve_strategy("none")["distill"] is False
    assert resolve_strategy("standard", t1=5)["t1"] == 5.0
    for bad in ({"strategy": "warm"}, {"strategy": "standard", "t2": 0}, {"strategy": "standard", "t0": -1}):
        with pytest.raises(ValueError):
            resolve_strategy(**bad)


@pytest.mark.parametrize("strategy", ["standard", "hyperthermal", "non-isothermal", "none"])
def test_targets_per_strategy(strategy):
    kd = resolve_strategy(strategy)
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1, :] = True
    one_hot = np.stack([~mask, mask], -1).astype(np.float32)
    soft = np.random.default_rng(5).uniform(0.4, 0.6, (1, 4, 4, 4)).astype(np.float32)
    targets = {k: np.asarray(v) for k, v in kd_targets(one_hot, soft if kd["distill"] else None, kd["t0"]).items()}
    assert set(targets) == {*HEADS, REAL}
    if kd["t0"] == 0:
        assert np.array_equal(targets[REAL], one_hot)  # hard ground truth
    else:  # softmax(one_hot / T0): crack 0.525 / background 0.475 at T0 = 10
        assert np.allclose(targets[REAL], soften(one_hot, kd["t0"]), atol=1e-6)
        assert np.allclose(targets[REAL][0, 1, 0], [1 / (1 + np.e ** 0.1), 1 / (1 + np.e ** -0.1)], atol=1e-6)
    for i, head in enumerate(HEADS):
        if kd["distill"]:
            assert np.allclose(targets[head][..., 1], soft[..., i]) and np.allclose(targets[head].sum(-1), 1)
        else:
            assert np.array_equal(targets[head], targets[REAL])


def test_kd_loss_weights_and_total():
    """total = alpha * T1^2 * mean(soft losses) + (1 - alpha) * real loss, each term the asymmetric loss."""
    from crackseg.losses import AsymmetricLoss

    losses, weights = kd_losses("asymmetric", 200.0, 0.9, t1=10.0)
    assert set(losses) == {*HEADS, REAL} and all(isinstance(v, AsymmetricLoss) for v in losses.values())
    assert weights[REAL] == pytest.approx(0.1)
    assert all(weights[h] == pytest.approx(0.9 * 100 / 4) for h in HEADS)
    assert kd_losses("asymmetric", 200.0, 0.9, 10.0, scale_by_t1_squared=False)[1]["h"] == pytest.approx(0.225)
    assert kd_losses("bce_dice", 1.0, 0.0)[1] == {**dict.fromkeys(HEADS, 0.0), REAL: 1.0}
    mixed = kd_losses("bce_dice", 200.0, 0.9, 10.0, pos_weight=3.0, soft_loss="bce")[0]  # soft heads: plain BCE
    assert all(mixed[h].name == "bce" and mixed[h].pos_weight == 1.0 for h in HEADS)
    assert mixed[REAL].name == "bce_dice" and mixed[REAL].pos_weight == 3.0
    with pytest.raises(ValueError):
        kd_losses("asymmetric", 200.0, 1.5)


def test_compiled_student_loss_is_the_weighted_sum():
    import keras

    from crackseg.training import compile_model
    from model import build_logits_model, with_heads

    kd = resolve_strategy("standard")
    student = with_heads(build_logits_model("student", None, width=2, blocks=0),
                         distill.student_heads(kd["t1"], kd["t2"]))
    assert {o: student.get_layer(o).temperature for o in (*HEADS, REAL)} == {**dict.fromkeys(HEADS, 10.0), REAL: 1.0}
    losses, weights = kd_losses("asymmetric", 200.0, 0.9, kd["t1"])
    compile_model(student, losses, 1e-3, loss_weights=weights)
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    mask = rng.uniform(size=(2, 16, 16)) > 0.9
    one_hot = np.stack([~mask, mask], -1).astype(np.float32)
    soft = rng.uniform(0.45, 0.55, (2, 16, 16, 4)).astype(np.float32)
    targets = {k: np.asarray(v) for k, v in kd_targets(one_hot, soft, kd["t0"]).items()}
    result = student.evaluate(x, targets, batch_size=2, return_dict=True, verbose=0)
    preds = student.predict(x, verbose=0)
    expected = sum(weights[k] * float(keras.ops.mean(losses[k](targets[k], preds[k]))) for k in targets)
    assert result["loss"] == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------------------------- input
def test_train_dataset_transforms_soft_labels_with_image_and_mask():
    """Extra channels built from the image and mask must still match them after crop / flip / rotation."""
    from crackseg.inputs import eval_dataset, train_dataset

    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(3)]
    masks = [rng.uniform(size=(40, 52)) > 0.7 for _ in range(3)]
    extra = [np.stack([im[..., 0] / 255.0, m], -1).astype(np.float32) for im, m in zip(images, masks)]
    ds = train_dataset(images, masks, crop=24, batch_size=3, seed=1, jitter=False, extra=extra)
    for x, y, more in [ds[i] for i in range(len(ds))]:
        assert more.shape == (3, 24, 24, 2)
        assert np.allclose((x[..., 0] + 1) * 127.5, more[..., 0] * 255.0, atol=1e-3)
        assert np.array_equal(y[..., 1], more[..., 1])
    ds.epoch += 1
    x, y, more = ds[0]
    assert np.allclose((x[..., 0] + 1) * 127.5, more[..., 0] * 255.0, atol=1e-3)
    x, y = train_dataset(images, masks, crop=24, batch_size=3, seed=1)[0]  # Train_1's form unchanged
    assert x.shape == (3, 24, 24, 3) and y.shape == (3, 24, 24, 2)
    x, y, more = next(iter(eval_dataset(images[:1], masks[:1], extra[:1])))
    assert x.shape == (1, 40, 52, 3) and np.allclose(np.asarray(more)[0], extra[0])


# ---------------------------------------------------------------------------------------------- model card
def test_model_card_round_trip(tmp_path):
    model_file = tmp_path / "weights" / "student.keras"
    model_file.parent.mkdir()
    model_file.write_bytes(b"pretend model")
    with pytest.raises(CardError, match="no model card"):
        read_card(model_file)
    path = write_card(model_file, {"threshold": 0.42, "strategy": "standard"})
    assert path == tmp_path / "weights" / "student.json" == card_path(model_file)
    card = read_card(model_file, verify=True)
    assert card["sha256"] == sha256(model_file) and card["threshold"] == 0.42 and card["created"]
    model_file.write_bytes(b"changed")
    with pytest.raises(CardError, match="sha256 does not match"):
        read_card(model_file, verify=True)
    path.write_text("[1, 2]")
    with pytest.raises(CardError, match="JSON object"):
        read_card(model_file)
    assert json.loads(path.read_text()) == [1, 2]


# ---------------------------------------------------------------------------------------------- TTA, ensembles, dtype
def test_dihedral_transforms_are_eight_distinct_and_undone():
    a = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    seen = set()
    for k in range(8):
        forward, inverse = distill.dihedral(k)
        b = forward(a)
        assert b.shape in ((5, 7, 2), (7, 5, 2))
        assert np.array_equal(inverse(b), a)
        seen.add(b.tobytes() + bytes(b.shape))
    assert len(seen) == 8
    assert np.array_equal(distill.dihedral(4)[0](a), a[:, ::-1])  # a flip is one of them
    with pytest.raises(ValueError):
        distill.dihedral(8)


def _position_predictor(offset: float = 0.0):
    """Logits that depend on the pixel's position (not flip-equivariant) and its value, padded to a multiple of 4."""
    def predict(batch):
        batch = np.asarray(batch, np.float64)
        batch = batch if batch.ndim == 4 else batch[None]
        n, h, w, _ = batch.shape
        rows = np.arange(h)[None, :, None] * np.ones((n, 1, w))
        crack = batch[..., 0] / 255.0 + 0.01 * rows + offset
        z = np.stack([np.zeros_like(crack), crack], -1)
        z = np.pad(z, ((0, 0), (0, (-h) % 4), (0, (-w) % 4), (0, 0)), constant_values=99.0)  # padding is cropped
        return {hd: z * (i + 1) for i, hd in enumerate(HEADS)}
    return predict


def test_tta_averages_each_view_transformed_back():
    image = np.random.default_rng(8).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    predict = _position_predictor()
    plain = distill.averaged_logits(predict, image)
    assert plain["mix"].shape == (6, 9, 2) and plain["mix"].dtype == np.float32
    assert np.allclose(plain["h"], predict(image)["h"][0, :6, :9])
    tta = distill.averaged_logits(predict, image, "d4")
    expected = np.mean([inv(predict(np.ascontiguousarray(fwd(image)))["x"][0][:fwd(image).shape[0],
                                                                              :fwd(image).shape[1]])
                        for fwd, inv in map(distill.dihedral, range(8))], axis=0)
    assert np.allclose(tta["x"], expected, atol=1e-5)
    # the pixel value part is equivariant and survives; the position part is averaged over the 8 views
    assert np.allclose(tta["h"][..., 1] - plain["h"][..., 1], np.mean(
        [inv((0.01 * np.arange(fwd(image).shape[0]))[:, None] * np.ones(fwd(image).shape[:2]))
         for fwd, inv in map(distill.dihedral, range(8))], axis=0) - 0.01 * np.arange(6)[:, None], atol=1e-5)
    with pytest.raises(ValueError):
        distill.averaged_logits(predict, image, "flips")


def test_tta_with_a_real_network_matches_view_by_view(tiny_logits_model):
    """Batched views (4 of each orientation), padding to 4 and cropping: equal to one view at a time."""
    predict = _predictor(tiny_logits_model)
    image = np.random.default_rng(9).integers(0, 256, (30, 42, 3), dtype=np.uint8)
    tta = distill.averaged_logits(predict, image, "d4")
    views = []
    for fwd, inv in map(distill.dihedral, range(8)):
        view = np.ascontiguousarray(fwd(image))
        views.append(inv(predict(view)["mix"][0, :view.shape[0], :view.shape[1]]))
    assert tta["mix"].shape == (30, 42, 2)
    assert np.abs(tta["mix"] - np.mean(views, axis=0)).max() < 1e-4


def test_ensemble_averages_logits_per_head_and_has_an_order_free_identity():
    image = np.random.default_rng(10).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a, b = _position_predictor(0.0), _position_predictor(1.0)
    both = distill.averaged_logits([a, b], image)
    for i, head in enumerate(HEADS):
        assert np.allclose(both[head], (a(image)[head][0] + b(image)[head][0]) / 2, atol=1e-5)
    assert distill.ensemble_sha256(["aa"]) == "aa"
    assert distill.ensemble_sha256(["aa", "bb"]) == distill.ensemble_sha256(["bb", "aa"]) != "aa"
    source = distill.label_source([("A.keras", "aa"), ("B.keras", "bb")], "d4")
    assert source["teacher"] == "A.keras,B.keras" and source["tta"] == "d4"
    assert source["teachers"] == [{"path": "A.keras", "sha256": "aa"}, {"path": "B.keras", "sha256": "bb"}]
    assert source["teacher_sha256"] == distill.ensemble_sha256(["aa", "bb"])


def test_label_identity_includes_ensemble_tta_and_dtype(tmp_path):
    samples = [FakeSample(f"{i}.png", Path(f"{i}.png")) for i in range(2)]
    read = lambda p: np.full((8, 12, 3), 100, np.uint8)  # noqa: E731
    one = distill.label_source([("A.keras", "aa")])
    ens = distill.label_source([("A.keras", "aa"), ("B.keras", "bb")], "d4")
    predictors = [_position_predictor(0.0), _position_predictor(1.0)]
    labels = tmp_path / "labels"
    report = write_split(predictors, samples, read, labels, "train", ens["teacher"], ens["teacher_sha256"], 10.0,
                         progress=False, tta="d4", dtype="float16", teachers=ens["teachers"])
    assert report["written"] == 2
    manifest = read_manifest(labels / "train")
    assert manifest["teachers"] == ens["teachers"] and manifest["tta"] == "d4" and manifest["dtype"] == "float16"
    assert np.load(label_path(labels / "train", "0.png"))["crack"].dtype == np.float16
    again = write_split(predictors, samples, read, labels, "train", ens["teacher"], ens["teacher_sha256"], 10.0,
                        progress=False, tta="d4", dtype="float16", teachers=ens["teachers"])
    assert (again["written"], again["skipped"]) == (0, 2)  # same identity: resume
    for change in ({"tta": "none"}, {"dtype": "float32"}, {"sha": one["teacher_sha256"]}):
        kwargs = {"tta": change.get("tta", "d4"), "dtype": change.get("dtype", "float16")}
        with pytest.raises(LabelError, match="--rebuild") as err:
            write_split(predictors, samples, read, labels, "train", "x", change.get("sha", ens["teacher_sha256"]),
                        10.0, progress=False, **kwargs)
        assert "\n" not in str(err.value) and "with TTA d4" in str(err.value)
    rebuilt = write_split(predictors[0], samples, read, labels, "train", one["teacher"], one["teacher_sha256"], 10.0,
                          rebuild=True, progress=False)
    assert rebuilt["written"] == 2 and read_manifest(labels / "train")["tta"] == "none"
    loaded, _ = load_split_labels(labels, "train", samples, 10.0, teacher_sha256="aa")
    assert loaded[0].dtype == np.float32


def test_manifest_without_tta_or_dtype_reads_as_float32_without_tta(tmp_path):
    """Label stores written before TTA / float16 existed resume with the default settings."""
    samples = [FakeSample("0.png", Path("0.png"))]
    read = lambda p: np.zeros((4, 4, 3), np.uint8)  # noqa: E731
    predict = _position_predictor()
    write_split(predict, samples, read, tmp_path, "train", "t.keras", "sha", 10.0, progress=False)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    for key in ("tta", "dtype", "teachers"):
        manifest.pop(key)
    (tmp_path / "train" / "manifest.json").write_text(json.dumps(manifest))
    report = write_split(predict, samples, read, tmp_path, "train", "t.keras", "sha", 10.0, progress=False)
    assert report["skipped"] == 1
    with pytest.raises(LabelError, match="float32, not by .* float16"):
        write_split(predict, samples, read, tmp_path, "train", "t.keras", "sha", 10.0, progress=False,
                    dtype="float16")


def test_float16_store_halves_the_bytes_within_its_rounding(tmp_path):
    rng = np.random.default_rng(11)
    crack = soften(rng.normal(0, 20, (64, 80, 4, 2)), 10.0)[..., 1]  # T = 10 probabilities, as Train_2 writes them
    write_soft_label(tmp_path / "a32.npz", crack)
    write_soft_label(tmp_path / "a16.npz", crack, "float16")
    back = read_soft_label(tmp_path / "a16.npz")
    assert back.dtype == np.float32 and np.abs(back - crack).max() <= 2.5e-4
    assert (tmp_path / "a16.npz").stat().st_size < 0.6 * (tmp_path / "a32.npz").stat().st_size
    with pytest.raises(ValueError):
        write_soft_label(tmp_path / "b.npz", crack, "float64")
    with open(tmp_path / "c.npz", "wb") as f:
        np.savez_compressed(f, crack=crack.astype(np.float64))
    with pytest.raises(LabelError, match="float32 or float16"):
        read_soft_label(tmp_path / "c.npz")


def test_resoftened_labels_match_labels_made_at_that_temperature_and_shift_the_boundary():
    from crackseg.distill import decision_logit, resoften

    z = np.linspace(-40, 40, 81)  # teacher logit differences (crack - background)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    at_ten = sigmoid(z / 10).astype(np.float16)  # stored as Train_2 stores them
    for t in (5.0, 15.0):
        np.testing.assert_allclose(resoften(at_ten, 10.0, t), sigmoid(z / t), atol=2e-3)
    crack = np.array([[[0.5, 0.25, 0.9, 0.02]]], np.float32)
    # shift T * log(3) at T = 10: logit(0.5) = 0 -> log 3 -> 0.75; logit(0.25) = -log 3 -> 0 -> 0.5
    moved = resoften(crack, 10.0, 10.0, 10 * np.log(3.0))
    assert moved[0, 0, 0] == pytest.approx(0.75, abs=1e-6) and moved[0, 0, 1] == pytest.approx(0.5, abs=1e-6)
    assert np.argsort(moved.ravel()).tolist() == np.argsort(crack.ravel()).tolist()
    np.testing.assert_allclose(resoften(moved, 10.0, 10.0, -10 * np.log(3.0)), crack, atol=1e-6)
    assert resoften(crack, 10.0, 10.0) is crack
    with pytest.raises(ValueError, match="> 0"):
        resoften(crack, 10.0, 0.0)
    # the shipped student's card (0.23 at T2 = 10) against teacher_four's (0.96 at T = 1)
    assert decision_logit(0.23, 10.0) == pytest.approx(10 * np.log(0.23 / 0.77))
    assert decision_logit(0.5) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        decision_logit(1.0)


def _npz_declaring(path: Path, shape: tuple[int, ...], dtype: str = "float16", data: bytes = b"\0" * 64) -> Path:
    """A soft-label .npz whose ``crack.npy`` header declares ``shape`` but holds only ``data`` (a small file that
    would ask numpy for the whole array)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("crack.npy", header.getvalue() + data)
    return path


def test_a_soft_label_declaring_a_huge_shape_is_refused_before_it_is_loaded(tmp_path, monkeypatch):
    path = _npz_declaring(tmp_path / "bomb.png.npz", (12000, 12000, 4))  # 1.1 GB as float16, a few bytes on disk
    assert path.stat().st_size < 4096

    def no_load(*args, **kwargs):
        raise AssertionError("np.load called on a label whose header is over the limit")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(LabelError, match=r"bomb\.png\.npz: soft label declares 12000x12000 pixels") as caught:
        read_soft_label(path)
    assert "\n" not in str(caught.value)
    for shape, dtype in (((64, 64, 3), "float32"), ((64, 64, 4), "int64"), ((4, 4), "float32")):
        with pytest.raises(LabelError, match="soft label declares shape"):
            read_soft_label(_npz_declaring(tmp_path / "odd.npz", shape, dtype))
    with pytest.raises(LabelError, match="unreadable soft label"):
        with open(tmp_path / "nokey.npz", "wb") as f:
            np.savez(f, other=np.zeros((2, 2, 4), np.float32))
        read_soft_label(tmp_path / "nokey.npz")


def test_a_soft_label_within_the_limit_still_reads(tmp_path, monkeypatch):
    crack = np.full((4, 4, 4), 0.25, np.float32)
    write_soft_label(tmp_path / "a.npz", crack, "float16")
    monkeypatch.setattr(distill, "MAX_LABEL_PIXELS", 16)  # exactly at the limit: read
    np.testing.assert_array_equal(read_soft_label(tmp_path / "a.npz"), crack)
    monkeypatch.setattr(distill, "MAX_LABEL_PIXELS", 15)
    with pytest.raises(LabelError, match="declares 4x4 pixels, more than 15"):
        read_soft_label(tmp_path / "a.npz")


@pytest.mark.parametrize("manifest, words", [
    ([1, 2, 3], "a soft-label manifest is a JSON object, not a list"),
    ("labels", "a soft-label manifest is a JSON object, not a str"),
    ({"format": distill.LABEL_FORMAT, "teacher": "t.keras", "teacher_sha256": "sha"},
     "field 'temperature' must be a number > 0, got None (missing)"),
    ({"format": distill.LABEL_FORMAT, "teacher": "t.keras", "teacher_sha256": "sha", "temperature": "10"},
     "field 'temperature' must be a number > 0, got '10'"),
    ({"format": distill.LABEL_FORMAT, "teacher": "t.keras", "teacher_sha256": "sha", "temperature": float("nan")},
     "field 'temperature' must be a number > 0"),
    ({"format": distill.LABEL_FORMAT, "teacher": "t.keras", "temperature": 10.0},
     "field 'teacher_sha256' must be a non-empty string"),
])
def test_a_malformed_manifest_is_one_line(tmp_path, manifest, words):
    """Train_3 turns a LabelError into one ``error:`` line (it catches LabelError and TrainingError)."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "manifest.json").write_text(json.dumps(manifest))
    samples = [FakeSample("0.png", Path("0.png"))]
    for call in (lambda: read_manifest(tmp_path / "train"),
                 lambda: load_split_labels(tmp_path, "train", samples, 10.0)):
        with pytest.raises(LabelError) as caught:
            call()
        assert words in str(caught.value) and "manifest.json" in str(caught.value)
        assert "\n" not in str(caught.value)
