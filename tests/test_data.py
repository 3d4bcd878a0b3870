"""crackseg.data readers, splits, errors and the input pipeline (crackseg.inputs); crackseg.preprocess; crackseg.io."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, SYNTHETIC_COUNT, SYNTHETIC_SIZE, needs_shared

from crackseg.data import (DataError, Sample, augment_sample, find_samples, load_arrays, load_pair, load_split,
                           read_image, read_mask, split_samples, steps_per_epoch)
from crackseg.inputs import eval_dataset, train_dataset
from crackseg.preprocess import crop_back, prepare


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _tiny_set(root: Path, n: int = 3, h: int = 8, w: int = 12) -> Path:
    """A generic-layout set of ``n`` small pairs (fast to write and corrupt)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / "images" / f"{i:02d}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        mask[h // 2, : w // 2 + i] = 255
        _png(root / "masks" / f"{i:02d}.png", mask)
    return root


# ---------------------------------------------------------------------------------------------- real data
@needs_shared
def test_crackforest_reader(shared_datasets):
    samples = find_samples(shared_datasets / "CrackForest")
    assert len(samples) == 118
    assert all(s.image.suffix == ".jpg" and s.mask.suffix == ".mat" for s in samples)
    image, mask = load_pair(samples[0])
    assert image.shape == (320, 480, 3) and image.dtype == np.uint8
    assert mask.shape == (320, 480) and mask.dtype == bool and 0 < mask.mean() < 0.2


@needs_shared
def test_crackforest_extra_region_labels_are_not_crack(shared_datasets):
    from scipy.io import loadmat

    path = shared_datasets / "CrackForest" / "groundTruth" / "084.mat"
    seg = loadmat(str(path))["groundTruth"][0, 0]["Segmentation"]
    assert {3, 4} <= set(np.unique(seg).tolist())  # the file this test is about
    mask = read_mask(path)
    np.testing.assert_array_equal(mask, seg == 2)
    assert not mask[seg >= 3].any()


@needs_shared
def test_deepcrack_reader(shared_datasets):
    samples = find_samples(shared_datasets / "DeepCrack")
    assert len(samples) == 300 + 237  # the training pairs and the official test pairs
    assert samples[0].id.startswith("train_img/") and samples[-1].id.startswith("test_img/")
    image, mask = load_pair(samples[0])
    assert image.shape == (384, 544, 3)
    assert mask.shape == (384, 544) and mask.any() and mask.mean() < 0.2


@needs_shared
def test_a_seeded_split_keeps_deepcracks_official_test_pairs_out_of_training(shared_datasets):
    """--lists=none: the 237 test_img pairs are the test split, and the 300 training pairs split 270 / 30 exactly as
    the repository's seeded DeepCrack lists (made before the test pairs arrived)."""
    splits = load_split(str(shared_datasets / "DeepCrack"), "none", 0.1, 0)
    assert len(splits["test"]) == 237 and all(s.id.startswith("test_img/") for s in splits["test"])
    assert not {s.id for s in splits["train"] + splits["val"]} & {s.id for s in splits["test"]}
    listed = {line.split("/", 1)[1] for line in (REPO / "datasets" / "splits" / "val.txt").read_text().split()
              if line.startswith("DeepCrack/")}
    assert {s.id for s in splits["val"]} == listed


@needs_shared
def test_repository_split_lists_resolve_against_shared_data(shared_datasets):
    """All four sets; DeepCrack and CrackForest keep the earlier 376 / 42 lists, CRACK500 and AigleRN their own."""
    splits = load_split(str(shared_datasets), str(REPO / "datasets" / "splits"))
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (5798, 980, 78 + 237)
    old = lambda part: [s for s in splits[part] if s.id.split("/")[0] in ("DeepCrack", "CrackForest")]  # noqa: E731
    assert len(old("train")) == 376 and len(old("val")) == 42
    assert len(old("test")) == 237 and all(s.id.startswith("DeepCrack/test_img/") for s in old("test"))
    train, val, test = ({s.id for s in splits[k]} for k in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == 118 + 300 + 237 + 6169 + 269
    assert all(s.id.startswith(("AigleRN/", "DeepCrack/test_img/")) for s in splits["test"])
    photo = lambda ids: {Path(i).stem.rsplit("-", 1)[0] for i in ids if i.startswith("CRACK500/")}  # noqa: E731
    assert not photo(train) & photo(val)  # CRACK500 is split by photo, never by crop
    assert all(s.image.is_file() and s.mask.is_file() for s in splits["train"] + splits["val"])


# ---------------------------------------------------------------------------------------------- synthetic data
def test_generic_reader_on_synthetic_data(synthetic_data):
    samples = find_samples(synthetic_data)
    assert len(samples) == SYNTHETIC_COUNT
    assert samples[0].id == "images/0000.png"
    images, masks = load_arrays(samples, workers=2)
    for image, mask in zip(images, masks):
        assert image.shape == (*SYNTHETIC_SIZE, 3) and image.dtype == np.uint8
        assert mask.shape == SYNTHETIC_SIZE and mask.dtype == bool
    assert all(m.any() for m in masks)


def test_deepcrack_style_folder_with_0_1_masks(tmp_path):
    _png(tmp_path / "Deep" / "train_img" / "a.jpg", np.full((8, 8, 3), 100, np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:6] = 1
    _png(tmp_path / "Deep" / "train_lab" / "a.png", mask)
    samples = find_samples(tmp_path)  # one level down
    assert [s.id for s in samples] == ["Deep/train_img/a.jpg"]
    assert load_pair(samples[0])[1].sum() == 8


def test_generic_layout_with_list_files(tmp_path, synthetic_data):
    root = tmp_path / "data"
    shutil.copytree(synthetic_data, root)
    (root / "train.txt").write_text("0000\n# a comment\n\nimages/0001.png\n0002\n")
    (root / "val.txt").write_text("0005\n0006\n")
    splits = load_split(str(root))
    assert [s.image.name for s in splits["train"]] == ["0000.png", "0001.png", "0002.png"]
    assert [s.image.name for s in splits["val"]] == ["0005.png", "0006.png"]
    assert splits["test"] == []
    other = load_split(str(root), lists="none_such_folder")  # no lists there: seeded split of all 12
    assert len(other["train"]) + len(other["val"]) == SYNTHETIC_COUNT


def test_seeded_split_is_deterministic_and_disjoint(synthetic_data):
    samples = find_samples(synthetic_data)
    a = split_samples(samples, None, val_fraction=0.25, seed=3)
    b = split_samples(list(reversed(samples)), None, val_fraction=0.25, seed=3)
    assert a == b
    assert len(a["val"]) == 3 and len(a["train"]) == 9 and a["test"] == []
    ids = [s.id for s in a["train"] + a["val"]]
    assert len(set(ids)) == len(ids) == SYNTHETIC_COUNT
    c = split_samples(samples, None, val_fraction=0.25, seed=4)
    assert {s.id for s in c["val"]} != {s.id for s in a["val"]}


# ---------------------------------------------------------------------------------------------- bad input
def test_unreadable_image_names_the_file(tmp_path):
    root = _tiny_set(tmp_path)
    (root / "images" / "01.png").write_bytes(b"not a png")
    samples = find_samples(root)
    with pytest.raises(DataError, match="01.png"):
        load_arrays(samples, workers=1)
    (root / "images" / "01.png").write_bytes(b"")
    with pytest.raises(DataError, match="01.png"):
        read_image(root / "images" / "01.png")


def test_missing_mask_names_the_file(tmp_path):
    root = _tiny_set(tmp_path)
    (root / "masks" / "02.png").unlink()
    with pytest.raises(DataError, match=r"images/02\.png.*no mask"):
        find_samples(root)


def test_unreadable_mask_names_the_file(tmp_path):
    root = _tiny_set(tmp_path)
    (root / "masks" / "00.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"masks/00\.png"):
        load_pair(find_samples(root)[0])


def test_broken_mat_names_the_file(tmp_path):
    path = tmp_path / "x.mat"
    path.write_bytes(b"not matlab")
    with pytest.raises(DataError, match="x.mat"):
        read_mask(path)


def test_size_mismatch_names_the_file(tmp_path):
    root = _tiny_set(tmp_path)
    _png(root / "masks" / "01.png", np.zeros((9, 12), np.uint8))
    with pytest.raises(DataError, match=r"masks/01\.png.*does not match"):
        load_pair(find_samples(root)[1])


def test_empty_folder_names_the_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"images: no images"):
        find_samples(tmp_path)
    with pytest.raises(DataError, match="no dataset found"):
        find_samples(tmp_path / "images")
    with pytest.raises(DataError, match="not found"):
        find_samples(tmp_path / "missing")


def test_non_binary_mask_names_the_file(tmp_path):
    root = _tiny_set(tmp_path)
    mask = np.zeros((8, 12), np.uint8)
    mask[0, :3] = (0, 128, 255)
    _png(root / "masks" / "01.png", mask)
    with pytest.raises(DataError, match=r"masks/01\.png.*not binary"):
        load_pair(find_samples(root)[1])
    _png(root / "masks" / "01.png", np.dstack([mask, mask * 0, mask]))
    with pytest.raises(DataError, match=r"masks/01\.png.*colour"):
        read_mask(root / "masks" / "01.png")


def test_bad_list_entry_names_the_file_and_line(tmp_path):
    root = _tiny_set(tmp_path)
    (root / "train.txt").write_text("00\nnope\n")
    with pytest.raises(DataError, match=r"train\.txt:2.*'nope'"):
        load_split(str(root))


def test_ambiguous_list_entry_is_refused(tmp_path):
    _tiny_set(tmp_path / "a")
    _tiny_set(tmp_path / "b")
    (tmp_path / "train.txt").write_text("00\n")
    with pytest.raises(DataError, match="ambiguous"):
        load_split(str(tmp_path))
    (tmp_path / "train.txt").write_text("a/images/00.png\n")
    assert [s.id for s in load_split(str(tmp_path))["train"]] == ["a/images/00.png"]


# ---------------------------------------------------------------------------------------------- label dilation
@pytest.mark.parametrize("k, expected", [(0, 1), (1, 1), (3, 9), (5, 25)])
def test_label_dilation_uses_a_k_by_k_square(tmp_path, k, expected):
    _png(tmp_path / "img.png", np.zeros((9, 9, 3), np.uint8))
    mask = np.zeros((9, 9), np.uint8)
    mask[4, 4] = 255
    _png(tmp_path / "mask.png", mask)
    _, dilated = load_pair(Sample("img.png", tmp_path / "img.png", tmp_path / "mask.png"), dilate=k)
    assert dilated.sum() == expected
    r = k // 2 if k > 1 else 0
    assert dilated[4 - r: 5 + r, 4 - r: 5 + r].all()


# ---------------------------------------------------------------------------------------------- input pipeline
@pytest.fixture(scope="module")
def arrays(synthetic_data):
    return load_arrays(find_samples(synthetic_data), workers=2)


def _check_batch(x, y, batch, crop):
    assert x.shape == (batch, crop, crop, 3) and x.dtype == np.float32
    assert y.shape == (batch, crop, crop, 2) and y.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert set(np.unique(y).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(-1), 1.0)


def test_train_dataset_shapes_types_and_ranges(arrays):
    images, masks = arrays
    ds = train_dataset(images, masks, crop=64, batch_size=3, seed=1)
    assert len(ds) == steps_per_epoch(len(images), 3) == 4 and steps_per_epoch(2, 4) == 1
    seen_crack = 0.0
    for epoch in range(2):
        for i in range(len(ds)):
            x, y = ds[i]
            _check_batch(x, y, 3, 64)
            seen_crack += float(y[..., 1].sum())
        ds.epoch += 1
    assert seen_crack > 0
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_train_dataset_is_reproducible_and_reshuffles_each_epoch(arrays):
    images, masks = arrays
    a = train_dataset(images, masks, crop=32, batch_size=2, seed=5)
    b = train_dataset(images, masks, crop=32, batch_size=2, seed=5)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    np.testing.assert_array_equal(a[0][0], a[0][0])  # a batch does not depend on what was asked before
    first = a.order(0)
    a.epoch += 1
    assert sorted(a.order(1)) == list(range(len(images))) and not np.array_equal(a.order(1), first)
    assert not np.array_equal(a[0][0], b[0][0])
    other_seed = train_dataset(images, masks, crop=32, batch_size=2, seed=6)
    assert not np.array_equal(other_seed[0][0], b[0][0])


@pytest.mark.parametrize("crop", [160, 256])  # larger than the 96 x 128 images; 256 is more than twice the height
def test_train_dataset_pads_crops_larger_than_the_image(arrays, crop):
    images, masks = arrays
    x, y = train_dataset(images[:2], masks[:2], crop=crop, batch_size=2)[0]
    _check_batch(x, y, 2, crop)
    x, y = train_dataset(images[:2], masks[:2], crop=crop, batch_size=2, augment=False)[0]
    _check_batch(x, y, 2, crop)


def test_train_dataset_without_augmentation_keeps_the_labels(arrays):
    images, masks = arrays
    x, y = train_dataset(images[:1], masks[:1], crop=96, batch_size=1, augment=False)[0]
    # centre crop 96 x 96 of a 96 x 128 image: columns 16..111
    np.testing.assert_array_equal(y[0, ..., 1] > 0.5, masks[0][:, 16:112])
    np.testing.assert_allclose(x[0], images[0][:, 16:112] / 127.5 - 1.0, atol=1e-5)


def test_augmentation_moves_image_and_mask_together():
    """A mask drawn from the image itself must still match it after crop / flip / rotation / padding."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    mask = image[..., 1] > 128
    for seed in range(12):
        x, y = augment_sample(image, mask, 48, np.random.default_rng(seed), jitter=False)
        assert x.shape == (48, 48, 3) and y.shape == (48, 48, 2)
        pixel = np.rint((x[..., 1] + 1.0) * 127.5)
        np.testing.assert_array_equal(y[..., 1] > 0.5, pixel > 128)


def test_colour_jitter_keeps_range_and_geometry():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = rng.uniform(size=(32, 32)) > 0.8
    plain = augment_sample(image, mask, 32, np.random.default_rng(9), jitter=False)
    jittered = augment_sample(image, mask, 32, np.random.default_rng(9), jitter=True)
    np.testing.assert_array_equal(plain[1], jittered[1])  # same crop, flips, rotation
    assert jittered[0].min() >= -1.0 and jittered[0].max() <= 1.0
    assert not np.allclose(plain[0], jittered[0])


def test_train_dataset_refuses_an_empty_split():
    with pytest.raises(DataError):
        train_dataset([], [])


def test_eval_dataset_shapes(arrays):
    images, masks = arrays
    odd_image, odd_mask = images[0][:50, :70], masks[0][:50, :70]
    items = [tuple(np.asarray(t) for t in item) for item in eval_dataset([images[1], odd_image], [masks[1], odd_mask])]
    assert len(items) == 2
    (x1, y1), (x2, y2) = items
    assert x1.shape == (1, 96, 128, 3) and y1.shape == (1, 96, 128, 2)
    assert x2.shape == (1, 52, 72, 3) and y2.shape == (1, 52, 72, 2)  # padded to a multiple of 4
    np.testing.assert_array_equal(y1[0, ..., 1] > 0.5, masks[1])
    np.testing.assert_allclose(x1[0], images[1] / 127.5 - 1.0, atol=1e-5)
    np.testing.assert_array_equal(y2[0, :50, :70, 1] > 0.5, odd_mask)
    assert not y2[0, 50:, :, 1].any() and not y2[0, :, 70:, 1].any()
    np.testing.assert_array_equal(x2, prepare(odd_image)[0])  # the padding the deployed models see
    for x, y in items:
        assert x.min() >= -1 and x.max() <= 1
        np.testing.assert_array_equal(y.sum(-1), 1.0)


# ---------------------------------------------------------------------------------------------- preprocess
@pytest.mark.parametrize("h, w", [(50, 70), (13, 7), (64, 96)])
def test_prepare_and_crop_back_round_trip(h, w):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, size = prepare(image)
    assert size == (h, w)
    assert x.dtype == np.float32 and x.shape == (1, -(-h // 4) * 4, -(-w // 4) * 4, 3)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(x[0, :h, :w], image / 127.5 - 1.0, atol=1e-6)
    crack = x[..., :1] * 0.5 + 0.5  # any map of the padded size
    np.testing.assert_array_equal(crop_back(crack, size), crack[:, :h, :w, 0])
    two = np.concatenate([1 - crack, crack], -1)
    np.testing.assert_array_equal(crop_back(two, size), crack[:, :h, :w, 0])
    batch, size2 = prepare(np.stack([image, image]))
    assert batch.shape[0] == 2 and size2 == (h, w)


def test_prepare_rejects_non_rgb():
    with pytest.raises(ValueError):
        prepare(np.zeros((8, 8), np.uint8))


# ---------------------------------------------------------------------------------------------- atomic writes
def test_atomic_path_leaves_the_old_file_intact_on_error(tmp_path):
    from crackseg.io import atomic_path, atomic_write_text

    target = tmp_path / "model.keras"
    atomic_write_text(target, "good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".keras" and tmp != target
            tmp.write_text("half-writ")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no temporary left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


# ---------------------------------------------------------------------------------------------- mixed datasets
def test_sampling_shares_by_rule():
    from crackseg.data import sampling_shares

    names = ["big"] * 400 + ["small"] * 100
    assert sampling_shares(names, "size") == pytest.approx({"big": 0.8, "small": 0.2})
    assert sampling_shares(names, "sqrt") == pytest.approx({"big": 20 / 30, "small": 10 / 30})  # sqrt 400 : sqrt 100
    assert sampling_shares(names, "equal") == pytest.approx({"big": 0.5, "small": 0.5})
    assert sampling_shares(names, "big=1,small=3") == pytest.approx({"big": 0.25, "small": 0.75})
    with pytest.raises(DataError, match="no weight for dataset.*small"):
        sampling_shares(names, "big=1")
    with pytest.raises(DataError, match="expected size \\| sqrt"):
        sampling_shares(names, "bigger")
    with pytest.raises(DataError, match="sum to 0"):
        sampling_shares(names, "big=0,small=0")


def test_epoch_plan_follows_the_shares_and_uses_every_image_before_repeating():
    from crackseg.data import epoch_plan

    names = ["a"] * 10 + ["b"] * 90
    plan = epoch_plan(names, {"a": 0.5, "b": 0.5}, {"a": 1, "b": 4}, tiles=2000, seed=3, epoch=0)
    assert len(plan) == 2000
    a_tiles = [t for t in plan if len(t) == 1]
    assert all(names[i] == "a" for t in a_tiles for i in t)
    assert all(len(t) == 4 and all(names[i] == "b" for i in t) for t in plan if len(t) != 1)
    assert abs(len(a_tiles) - 1000) < 100  # half the tiles, within sampling noise (sd ~22)
    first = [t[0] for t in a_tiles[:10]]
    assert sorted(first) == list(range(10))  # the small set goes round once before any image repeats
    assert plan == epoch_plan(names, {"a": 0.5, "b": 0.5}, {"a": 1, "b": 4}, 2000, 3, 0)  # reproducible
    assert plan != epoch_plan(names, {"a": 0.5, "b": 0.5}, {"a": 1, "b": 4}, 2000, 3, 1)  # new each epoch


def test_small_images_are_packed_four_to_a_tile():
    from crackseg.data import piece_size

    rng = np.random.default_rng(0)
    big = [rng.integers(0, 256, (200, 300, 3), dtype=np.uint8) for _ in range(3)]
    small = [rng.integers(0, 256, (60, 100, 3), dtype=np.uint8) for _ in range(5)]
    assert piece_size(big, 128) == 128 and piece_size(small, 128) == 64
    masks = [np.zeros(im.shape[:2], bool) for im in big] + [np.ones(im.shape[:2], bool) for im in small]
    names = ["big"] * 3 + ["small"] * 5
    ds = train_dataset(big + small, masks, crop=128, batch_size=4, seed=1, datasets=names, sampling="equal",
                       samples_per_epoch=40)
    assert len(ds) == 10 and ds.pieces == {"big": 128, "small": 64}
    seen_small = 0
    for i in range(len(ds)):
        x, y = ds[i]
        _check_batch(x, y, 4, 128)
        for tile, label in zip(ds.plan(0)[i * 4:(i + 1) * 4], y[..., 1]):
            if len(tile) == 4:  # a mosaic of four all-crack crops (no padding, no stripes: default augmentation)
                seen_small += 1
                assert label.all()
            else:
                assert not label.any()
    assert seen_small > 0


def test_mosaic_places_the_four_pieces_in_quadrants():
    from crackseg.data import mosaic

    pieces = [(np.full((4, 4, 3), k, np.float32), np.full((4, 4, 2), k, np.float32)) for k in range(4)]
    image, label = mosaic(pieces)
    assert image.shape == (8, 8, 3) and label.shape == (8, 8, 2)
    assert image[0, 0, 0] == 0 and image[0, 7, 0] == 1 and image[7, 0, 0] == 2 and image[7, 7, 0] == 3


def test_augmentation_spec_parsing_and_refusals():
    from crackseg.data import Augmentation

    aug = Augmentation.parse("scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.1")
    assert aug.scale == (0.5, 2.0) and aug.blur == 0.2 and aug.grey == 0.1 and aug.active
    assert Augmentation.parse("none") == Augmentation() and not Augmentation().active
    for bad, why in (("blur", "name=value"), ("fog=0.2", "name=value"), ("blur=x", "not a number"),
                     ("blur=1.5", "probability"), ("scale=2:0.5", "low <= high")):
        with pytest.raises(DataError, match=why):
            Augmentation.parse(bad)


def test_augmentation_spec_round_trip_and_leave_one_out():
    from crackseg.data import Augmentation

    aug = Augmentation.parse("grey=0.1,scale=0.5:2,stripe=0.2")
    assert aug.components == ["scale", "stripe", "grey"]  # field order, not the order written
    assert aug.spec() == "scale=0.5:2,stripe=0.2,grey=0.1" and Augmentation.parse(aug.spec()) == aug
    assert aug.without("scale") == Augmentation(stripe=0.2, grey=0.1)
    assert aug.without("scale").without("stripe").without("grey").spec() == "none" == Augmentation().spec()
    assert aug.without("blur") == aug  # already off
    odd = Augmentation(scale=(0.5, 1.2345678), blur=0.1234567)  # more digits than %g keeps
    assert Augmentation.parse(odd.spec()) == odd
    with pytest.raises(DataError, match="no component 'fog'"):
        aug.without("fog")


def test_scale_augmentation_resizes_image_and_mask_together():
    """A mask drawn from the image itself still matches it after a random resize (and crop / flip / turn)."""
    from crackseg.data import Augmentation

    aug = Augmentation(scale=(0.5, 2.0))
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, 70:90] = 255  # one vertical band 20 px wide
    mask = image[..., 0] > 0
    widths = set()
    for seed in range(16):
        x, y = augment_sample(image, mask, 64, np.random.default_rng(seed), jitter=False, aug=aug)
        bright = (x[..., 0] > 0.0)
        label = y[..., 1] > 0.5
        assert (bright != label).mean() < 0.03  # only interpolated edge pixels may differ
        if label.any():
            widths.add(int(min(label.sum(0).max(), label.sum(1).max())))
    assert max(widths) > 1.5 * min(widths)  # the band was really resized


def test_photometric_augmentation_keeps_labels_except_under_stripes():
    from crackseg.data import Augmentation

    rng = np.random.default_rng(5)
    image = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[:, 30:34] = True
    shadows = Augmentation(shadow=1.0, blur=1.0, jpeg=1.0, grey=1.0)
    for seed in range(6):
        plain = augment_sample(image, mask, 64, np.random.default_rng(seed), jitter=False)
        x, y = augment_sample(image, mask, 64, np.random.default_rng(seed), jitter=False, aug=shadows)
        np.testing.assert_array_equal(y, plain[1])  # shadows, blur, JPEG, grey-scale never touch the label
        assert x.min() >= -1 and x.max() <= 1 and not np.allclose(x, plain[0])
        np.testing.assert_allclose(x[..., 0], x[..., 1], atol=0.02)  # grey-scale (up to JPEG chroma noise)
    striped = Augmentation(stripe=1.0)
    cleared = 0
    for seed in range(6):
        x, y = augment_sample(image, mask, 64, np.random.default_rng(seed), jitter=False, aug=striped)
        cleared += int(mask.sum() - y[..., 1].sum())
        assert y[..., 1].sum() <= mask.sum()  # a stripe only ever removes crack pixels (paint hides them)
    assert cleared > 0
    extra = np.zeros((64, 64, 2), np.float32)
    for seed in range(4):  # with soft labels no stripe is drawn: the teacher's targets could not follow it
        out = augment_sample(image, mask, 64, np.random.default_rng(seed), jitter=False, extra=extra, aug=striped)
        assert out[1][..., 1].sum() == mask.sum()


def test_write_splits_keeps_a_dataset_s_own_lists(tmp_path, synthetic_data):
    from crackseg.data import write_splits

    root = tmp_path / "data"
    shutil.copytree(synthetic_data, root / "Own")
    shutil.copytree(synthetic_data, root / "Plain")
    stems = sorted(p.stem for p in (root / "Own" / "images").iterdir())
    (root / "Own" / "train.txt").write_text("\n".join(stems[:8]) + "\n")
    (root / "Own" / "val.txt").write_text("\n".join(stems[8:10]) + "\n")
    (root / "Own" / "test.txt").write_text("\n".join(stems[10:]) + "\n")
    for name in ("train.txt", "val.txt", "test.txt"):  # the generic layout's lists are not data
        (root / "Plain" / name).unlink(missing_ok=True)
    counts = write_splits(str(root), tmp_path / "splits", 0.25, 0)
    lines = {s: (tmp_path / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert counts == {"train": 8 + 9, "val": 2 + 3, "test": 2}
    assert sorted(Path(i).stem for i in lines["test"]) == stems[10:]
    assert all(i.startswith("Own/") for i in lines["test"])
    assert {Path(i).stem for i in lines["val"] if i.startswith("Own/")} == set(stems[8:10])


def test_lists_that_name_none_of_the_data_fall_back_with_one_line(tmp_path, synthetic_data, capsys):
    from crackseg.data import load_split

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("DeepCrack/train_img/11111.jpg\n")
    (lists / "val.txt").write_text("DeepCrack/train_img/11112.jpg\n")
    data = tmp_path / "plain"
    shutil.copytree(synthetic_data, data)
    for name in ("train.txt", "val.txt", "test.txt"):
        (data / name).unlink(missing_ok=True)
    split = load_split(str(data), str(lists), 0.25, 0)
    out = capsys.readouterr().out
    assert "names none of the samples" in out and "seeded split" in out and len(out.strip().splitlines()) == 1
    assert len(split["val"]) == 3 and len(split["train"]) == 9
    (lists / "train.txt").write_text("DeepCrack/train_img/11111.jpg\n" + split["train"][0].id + "\n")
    with pytest.raises(DataError, match="11111.jpg' is not in the data"):  # a partly wrong list is still an error
        load_split(str(data), str(lists), 0.25, 0)
