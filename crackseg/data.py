"""Dataset readers, splits and the tf.data input pipeline.

Layouts read (auto-detected under a root; a root that holds several of them reads them all):

* CrackForest: ``image/*.jpg`` + ``groundTruth/*.mat`` (crack where ``Segmentation == 2``);
* DeepCrack-style: ``train_img/`` + ``train_lab/`` (and ``test_img/`` + ``test_lab/``), PNG masks 0/255 or 0/1;
* generic: ``images/`` + ``masks/`` with optional ``train.txt`` / ``val.txt`` / ``test.txt`` lists of stems.

A sample's id is its image path relative to the data root, e.g. ``DeepCrack/train_img/11111.jpg``; split list
files hold ids (or bare stems), one per line. TensorFlow is imported only by the tf.data functions.
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .preprocess import normalize

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff", ".mat")
LAYOUTS = (("image", "groundTruth"), ("train_img", "train_lab"), ("test_img", "test_lab"), ("images", "masks"))
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data; the message names the file."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path


# ---------------------------------------------------------------------------------------------- reading files
def decode_file(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED, what: str = "image") -> np.ndarray:
    """An image file decoded by OpenCV (any path, unicode included); DataError naming the file if it can't be."""
    path = Path(path)
    data = np.fromfile(path, np.uint8) if path.is_file() else None
    decoded = cv2.imdecode(data, flags) if data is not None and data.size else None
    if decoded is None:
        raise DataError(f"{path}: cannot read {what} (missing, empty or not an image)")
    return decoded


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 HxWx3."""
    return cv2.cvtColor(decode_file(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """Boolean HxW crack mask from a PNG (0/255 or 0/1) or a CrackForest ``.mat`` (``Segmentation == 2``)."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            seg = loadmat(str(path))["groundTruth"][0, 0]["Segmentation"]
        except Exception as exc:  # scipy raises several types for broken files
            raise DataError(f"{path}: cannot read CrackForest groundTruth/Segmentation ({exc})") from None
        seg = np.asarray(seg)
        # Region labels: 1 background, 2 crack; a few files carry extra regions (3, 4) that are not crack.
        if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
            raise DataError(f"{path}: Segmentation is not a 2-D integer label map (shape {seg.shape}, {seg.dtype})")
        return seg == 2
    mask = decode_file(path, cv2.IMREAD_UNCHANGED, "mask")
    if mask.ndim == 3:
        if not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise DataError(f"{path}: mask is a colour image; expected a single-channel 0/255 or 0/1 mask")
        mask = mask[..., 0]
    values = np.unique(mask)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        raise DataError(f"{path}: mask values {values[:6].tolist()} are not binary (0/255 or 0/1)")
    return mask > 0


def load_pair(sample: Sample, dilate: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image (uint8 HxWx3) and mask (bool HxW), checked to have the same size; optional k x k label dilation."""
    image, mask = read_image(sample.image), read_mask(sample.mask)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{sample.mask}: mask size {mask.shape[1]}x{mask.shape[0]} does not match image "
                        f"{sample.image.name} size {image.shape[1]}x{image.shape[0]}")
    if dilate > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (dilate, dilate))  # a real k x k square
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return image, mask


def load_arrays(samples: list[Sample], dilate: int = 0, workers: int = 4) -> tuple[list, list]:
    """Decode every sample in parallel (OpenCV releases the GIL); returns (images, masks)."""
    with ThreadPoolExecutor(workers) as pool:
        pairs = list(pool.map(lambda s: load_pair(s, dilate), samples))
    return [p[0] for p in pairs], [p[1] for p in pairs]


# ---------------------------------------------------------------------------------------------- finding samples
def _files(folder: Path, exts) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in exts and p.is_file()}


def _pair_folder(root: Path, img_dir: Path, mask_dir: Path) -> list[Sample]:
    images, masks = _files(img_dir, IMAGE_EXTS), _files(mask_dir, MASK_EXTS)
    if not images:
        raise DataError(f"{img_dir}: no images found ({', '.join(IMAGE_EXTS)})")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise DataError(f"{images[missing[0]]}: no mask with stem {missing[0]!r} in {mask_dir}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return [Sample(images[s].relative_to(root).as_posix(), images[s], masks[s]) for s in images]


def find_samples(root: str | Path) -> list[Sample]:
    """Every image/mask pair under ``root`` in any known layout (root itself or its direct subfolders)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    samples: list[Sample] = []
    for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        for img, msk in LAYOUTS:
            if (folder / img).is_dir() and (folder / msk).is_dir():
                samples += _pair_folder(root, folder / img, folder / msk)
    if not samples:
        raise DataError(f"{root}: no dataset found (expected one of "
                        + ", ".join(f"{a}/+{b}/" for a, b in LAYOUTS) + ", there or one level down)")
    return samples


# ---------------------------------------------------------------------------------------------- splits
def read_list(path: Path, samples: list[Sample]) -> list[Sample]:
    """Samples named in a list file (ids or bare stems), in file order."""
    by_id = {s.id: s for s in samples}
    by_stem: dict[str, list[Sample]] = {}
    for s in samples:
        by_stem.setdefault(s.image.stem, []).append(s)
    chosen = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in by_id:
            chosen.append(by_id[name])
        elif len(by_stem.get(name, [])) == 1:
            chosen.append(by_stem[name][0])
        else:
            why = "is ambiguous" if name in by_stem else "is not in the data"
            raise DataError(f"{path}:{n}: sample {name!r} {why}")
    return chosen


def split_samples(samples: list[Sample], lists: str | Path | None = None, val_fraction: float = 0.1,
                  seed: int = 0) -> dict[str, list[Sample]]:
    """``{"train", "val", "test"}`` samples: from ``train.txt``/``val.txt``/``test.txt`` in ``lists`` when that
    folder has them, else a deterministic seeded split (``val_fraction`` to val, no test)."""
    if lists is not None and Path(lists, "train.txt").is_file():
        out = {name: read_list(Path(lists, f"{name}.txt"), samples) if Path(lists, f"{name}.txt").is_file() else []
               for name in SPLITS}
        return out
    ordered = sorted(samples, key=lambda s: s.id)
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(len(ordered) * val_fraction)) if len(ordered) > 1 else 0
    return {"train": ordered[n_val:], "val": ordered[:n_val], "test": []}


def write_list(path: str | Path, samples: list[Sample]) -> None:
    """Write a split list (ids, one per line) atomically."""
    from .io import atomic_write_text

    atomic_write_text(path, "".join(f"{s.id}\n" for s in samples))


def load_split(data: str, lists: str | None = None, val_fraction: float = 0.1, seed: int = 0
               ) -> dict[str, list[Sample]]:
    """Samples of one or more comma-separated data roots, split. Ids are prefixed by the root's position when
    several roots are given, so list files stay unambiguous."""
    roots = [r for r in str(data).split(",") if r.strip()]
    samples: list[Sample] = []
    for root in roots:
        samples += find_samples(root.strip())
    lists = lists or (roots[0] if len(roots) == 1 else None)
    return split_samples(samples, lists, val_fraction, seed)


# ---------------------------------------------------------------------------------------------- tf.data
def one_hot(mask):
    """Boolean/0-1 mask (..., H, W) -> two-channel float labels (..., H, W, 2): [background, crack]."""
    import tensorflow as tf

    crack = tf.cast(mask, tf.float32)[..., None]
    return tf.concat([1.0 - crack, crack], axis=-1)


def _stack(image, mask, extra=None):
    """image (3) + mask (1) [+ extra channels] as one float tensor, so every geometric transform hits all alike."""
    import tensorflow as tf

    parts = [tf.cast(image, tf.float32), tf.cast(mask, tf.float32)[..., None]]
    if extra is not None:
        parts.append(tf.cast(extra, tf.float32))
    return tf.concat(parts, axis=-1)


def _augment(image, mask, crop: int, seed_pair, jitter: bool, extra=None):
    """Random crop (padding first when smaller), flips, 90-degree rotations, colour jitter; uint8 in.

    ``extra`` (H, W, C) float channels, e.g. teacher soft labels, get the same crop / flips / rotation as the mask
    (never the colour jitter) and are returned third.
    """
    import tensorflow as tf

    stacked = _stack(image, mask, extra)
    h, w = tf.shape(stacked)[0], tf.shape(stacked)[1]
    ph, pw = tf.maximum(crop - h, 0), tf.maximum(crop - w, 0)
    # Mirror at most the image's own size (MirrorPad's limit), then zeros for crops over twice the image.
    mh, mw = tf.minimum(ph, h), tf.minimum(pw, w)
    stacked = tf.pad(stacked, [[0, mh], [0, mw], [0, 0]], mode="SYMMETRIC")
    stacked = tf.pad(stacked, [[0, ph - mh], [0, pw - mw], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed_pair, 6)
    stacked = tf.image.stateless_random_crop(stacked, [crop, crop, int(stacked.shape[-1])], seed=seeds[0])
    stacked = tf.image.stateless_random_flip_left_right(stacked, seed=seeds[1])
    stacked = tf.image.stateless_random_flip_up_down(stacked, seed=seeds[2])
    k = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    stacked = tf.image.rot90(stacked, k)
    image, mask = stacked[..., :3] / 255.0, stacked[..., 3] > 0.5
    if jitter:
        s = tf.random.experimental.stateless_split(seeds[4], 4)
        image = tf.image.stateless_random_brightness(image, 0.15, seed=s[0])
        image = tf.image.stateless_random_contrast(image, 0.75, 1.25, seed=s[1])
        image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seed=s[2])
        image = tf.image.stateless_random_hue(image, 0.04, seed=s[3])
        image = tf.clip_by_value(image, 0.0, 1.0)
    if extra is not None:
        return normalize(image * 255.0), one_hot(mask), stacked[..., 4:]
    return normalize(image * 255.0), one_hot(mask)


def _generator(images, masks, extra=None):
    import tensorflow as tf

    sig = (tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((None, None), tf.bool))
    if extra is None:
        return tf.data.Dataset.from_generator(lambda: ((images[i], masks[i]) for i in range(len(images))),
                                              output_signature=sig)
    sig = sig + (tf.TensorSpec((None, None, extra[0].shape[-1]), tf.float32),)
    return tf.data.Dataset.from_generator(
        lambda: ((images[i], masks[i], extra[i]) for i in range(len(images))), output_signature=sig)


def train_dataset(images: list, masks: list, crop: int = 256, batch_size: int = 4, seed: int = 0,
                  augment: bool = True, jitter: bool = True, extra: list | None = None):
    """Endless shuffled, augmented batches of ``(image [-1,1] (B,crop,crop,3), one-hot (B,crop,crop,2))``;
    use ``steps_per_epoch(len(images), batch_size)`` steps per epoch.

    ``extra``: optional per-image float arrays (H, W, C) (teacher soft labels); they are cropped, flipped and
    rotated exactly like image and mask and come third: ``(image, one-hot, extra (B,crop,crop,C))``.

    The decoded arrays stay in memory (``cache``); crops and jitter run in parallel and are prefetched.
    Augmentation randomness is stateless, seeded by (seed, sample counter): runs are reproducible.
    """
    import tensorflow as tf

    if not images:
        raise DataError("training split is empty")
    n = len(images)
    _check_extra(images, extra)
    ds = _generator(images, masks, extra).cache().shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    counter = tf.data.Dataset.counter()

    def transform(item, i):
        soft = item[2] if extra is not None else None
        if augment:
            return _augment(item[0], item[1], crop, tf.stack([tf.cast(seed, tf.int64), i]), jitter, soft)
        return _center(item[0], item[1], crop, soft)

    ds = tf.data.Dataset.zip((ds, counter)).map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """One epoch = every training image seen once (as one random crop)."""
    return max(1, n_images // batch_size)


def _center(image, mask, crop: int, extra=None):
    import tensorflow as tf

    stacked = tf.image.resize_with_crop_or_pad(_stack(image, mask, extra), crop, crop)
    return (normalize(stacked[..., :3]), one_hot(stacked[..., 3] > 0.5)) + (
        (stacked[..., 4:],) if extra is not None else ())


def _check_extra(images: list, extra: list | None) -> None:
    if extra is None:
        return
    if len(extra) != len(images):
        raise DataError(f"{len(extra)} extra label arrays for {len(images)} images")
    for i, (image, more) in enumerate(zip(images, extra)):
        if more.ndim != 3 or more.shape[:2] != image.shape[:2]:
            raise DataError(f"extra labels of image #{i} have shape {more.shape}; image is {image.shape[:2]}")


def eval_dataset(images: list, masks: list, extra: list | None = None):
    """Full-size validation images one at a time (sizes differ between datasets): ``(image, one-hot)``, or
    ``(image, one-hot, extra)`` when ``extra`` per-image (H, W, C) float arrays are given."""
    import tensorflow as tf

    from .preprocess import MULTIPLE

    _check_extra(images, extra)

    def pad(image, mask, more=None):
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        image = tf.pad(tf.cast(image, tf.float32), [[0, ph], [0, pw], [0, 0]], mode="SYMMETRIC")
        mask = tf.pad(mask, [[0, ph], [0, pw]])
        if more is None:
            return normalize(image), one_hot(mask)
        return normalize(image), one_hot(mask), tf.pad(more, [[0, ph], [0, pw], [0, 0]], mode="SYMMETRIC")

    return _generator(images, masks, extra).cache().map(pad).batch(1).prefetch(2)


# ---------------------------------------------------------------------------------------------- for the scripts
def load_training_data(data: str, lists: str | None, val_fraction: float = 0.1, seed: int = 0, dilate: int = 0,
                       workers: int = 4) -> dict:
    """Split and decode everything a training script needs: ``{"splits", "train": (imgs, masks),
    "val": (imgs, masks)}``; train masks are dilated by ``dilate`` (k x k) when > 1, val masks never."""
    splits = load_split(data, lists, val_fraction, seed)
    if not splits["train"]:
        raise DataError(f"{data}: the training split is empty")
    if not splits["val"]:
        raise DataError(f"{data}: the validation split is empty (add val.txt or raise val_fraction)")
    print(f"data: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test from {data}")
    return {"splits": splits, "train": load_arrays(splits["train"], dilate, workers),
            "val": load_arrays(splits["val"], 0, workers)}


def write_splits(data: str, out: str | Path, val_fraction: float = 0.1, seed: int = 0) -> dict[str, int]:
    """Seeded train/val lists per dataset found under ``data`` (so each dataset is split in the same ratio)."""
    samples = find_samples(data)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.id.split("/")[0], []).append(s)
    train, val = [], []
    for name in sorted(groups):
        part = split_samples(groups[name], None, val_fraction, seed)
        train += part["train"]
        val += part["val"]
    write_list(Path(out) / "train.txt", sorted(train, key=lambda s: s.id))
    write_list(Path(out) / "val.txt", sorted(val, key=lambda s: s.id))
    return {"train": len(train), "val": len(val)}


if __name__ == "__main__":  # python -m crackseg.data DATA_ROOT OUT_DIR [VAL_FRACTION] [SEED]
    import sys

    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit("usage: python -m crackseg.data DATA_ROOT OUT_DIR [VAL_FRACTION] [SEED]")
    n = write_splits(args[0], args[1], float(args[2]) if len(args) > 2 else 0.1, int(args[3]) if len(args) > 3 else 0)
    print(f"wrote {args[1]}/train.txt ({n['train']}) and val.txt ({n['val']})")
