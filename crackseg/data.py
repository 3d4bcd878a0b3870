"""Dataset readers, splits and the numpy/OpenCV augmentation of the training input (Keras wrappers: inputs.py).

Layouts read (auto-detected under a root; a root that holds several of them reads them all):

* CrackForest: ``image/*.jpg`` + ``groundTruth/*.mat`` (crack where ``Segmentation == 2``);
* DeepCrack-style: ``train_img/`` + ``train_lab/`` (and ``test_img/`` + ``test_lab/``), PNG masks 0/255 or 0/1;
* generic: ``images/`` + ``masks/`` with optional ``train.txt`` / ``val.txt`` / ``test.txt`` lists of stems.

A sample's id is its image path relative to the data root, e.g. ``DeepCrack/train_img/11111.jpg``; split list
files hold ids (or bare stems), one per line. No Keras or TensorFlow here.
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


# ---------------------------------------------------------------------------------------------- input pipeline
# numpy/OpenCV, so one implementation serves every Keras backend (TensorFlow on CPU; JAX or PyTorch on a GPU
# machine without TensorFlow). crackseg.inputs wraps it in Keras PyDataset objects.
def one_hot(mask: np.ndarray) -> np.ndarray:
    """Boolean/0-1 mask (..., H, W) -> two-channel float32 labels (..., H, W, 2): [background, crack]."""
    crack = np.asarray(mask, np.float32)[..., None]
    return np.concatenate([1.0 - crack, crack], axis=-1)


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad at the bottom/right up to (height, width): mirrored up to the array's own size, then zeros."""
    h, w = array.shape[:2]
    ph, pw = max(height - h, 0), max(width - w, 0)
    if not (ph or pw):
        return array
    rest = ((0, 0),) * (array.ndim - 2)
    mh, mw = min(ph, h), min(pw, w)
    array = np.pad(array, ((0, mh), (0, mw)) + rest, mode="symmetric")
    return np.pad(array, ((0, ph - mh), (0, pw - mw)) + rest)


def _jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness +-0.15, contrast x0.75-1.25, saturation x0.7-1.3, hue +-0.04 turns; float RGB in [0, 1]."""
    image = image + rng.uniform(-0.15, 0.15)
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = np.clip((image - mean) * rng.uniform(0.75, 1.25) + mean, 0.0, 1.0).astype(np.float32)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # float32: H in degrees, S and V in [0, 1]
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0.0, 1.0)
    hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-0.04, 0.04)) % 360.0
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)


def augment_sample(image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator, jitter: bool = True,
                   extra: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """One random crop (padding first when smaller), flips, 90-degree rotation and colour jitter of a uint8 image.

    Returns ``(image [-1, 1] (crop, crop, 3), one-hot (crop, crop, 2)[, extra (crop, crop, C)])``. ``extra`` float
    channels (teacher soft labels) get the same crop / flips / rotation as the mask, never the colour jitter.
    """
    parts = [image, mask] + ([extra] if extra is not None else [])
    parts = [_pad_to(p, crop, crop) for p in parts]
    h, w = parts[1].shape
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    flip_lr, flip_ud, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(0, 4))
    out = []
    for p in parts:
        p = p[top:top + crop, left:left + crop]
        p = p[:, ::-1] if flip_lr else p
        p = p[::-1] if flip_ud else p
        out.append(np.rot90(p, turns))
    rgb = out[0].astype(np.float32) / 255.0
    if jitter:
        rgb = _jitter_colour(rgb, rng)
    result = (normalize(rgb * 255.0).astype(np.float32), one_hot(out[1]))
    return result + ((np.ascontiguousarray(out[2], np.float32),) if extra is not None else ())


def center_sample(image: np.ndarray, mask: np.ndarray, crop: int, extra: np.ndarray | None = None
                  ) -> tuple[np.ndarray, ...]:
    """The central ``crop`` x ``crop`` window (zero-padded when smaller), no augmentation; same outputs as
    ``augment_sample``."""
    def center(p):
        h, w = p.shape[:2]
        top, left = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        p = p[top:top + crop, left:left + crop]
        ph, pw = crop - p.shape[0], crop - p.shape[1]
        before = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (p.ndim - 2)
        return np.pad(p, before)

    result = (normalize(center(image).astype(np.float32)).astype(np.float32), one_hot(center(mask)))
    return result + ((center(extra).astype(np.float32),) if extra is not None else ())


def check_extra(images: list, extra: list | None) -> None:
    if extra is None:
        return
    if len(extra) != len(images):
        raise DataError(f"{len(extra)} extra label arrays for {len(images)} images")
    for i, (image, more) in enumerate(zip(images, extra)):
        if more.ndim != 3 or more.shape[:2] != image.shape[:2]:
            raise DataError(f"extra labels of image #{i} have shape {more.shape}; image is {image.shape[:2]}")


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """One epoch = every training image seen once (as one random crop)."""
    return max(1, n_images // batch_size)


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


# ---------------------------------------------------------------------------------------------- sampling real images
def _spread(items: list, count: int) -> list:
    """Up to ``count`` items evenly spaced over ``items``."""
    if count <= 0 or not items:
        return []
    picks = np.unique(np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int))
    return [items[i] for i in picks]


def sample_images(data: str, count: int, split: str = "val", lists: str | None = None) -> list[np.ndarray]:
    """``count`` real RGB images from ``split`` of a dataset root (any layout ``crackseg.data`` reads), spread
    evenly over it and topped up from the other splits when it is smaller; or from a plain folder of images."""
    root = Path(data)
    try:
        splits = load_split(str(data), lists)
        primary = _spread([s.image for s in splits[split]], count)
        others = [s.image for name in splits if name != split for s in splits[name]]
        paths = primary + _spread(others, count - len(primary))
    except DataError:
        folder = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS) if root.is_dir() else []
        paths = _spread(folder, count)
    if not paths:
        raise DataError(f"{data}: no images found (a dataset root or a folder of images)")
    return [read_image(p) for p in paths]


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` centre crop at native scale (resized up when the image is smaller)."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        scale = size / min(h, w)
        image = cv2.resize(image, (max(size, round(w * scale)), max(size, round(h * scale))),
                           interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


if __name__ == "__main__":  # python -m crackseg.data DATA_ROOT OUT_DIR [VAL_FRACTION] [SEED]
    import sys

    args = sys.argv[1:]
    if len(args) < 2:
        raise SystemExit("usage: python -m crackseg.data DATA_ROOT OUT_DIR [VAL_FRACTION] [SEED]")
    n = write_splits(args[0], args[1], float(args[2]) if len(args) > 2 else 0.1, int(args[3]) if len(args) > 3 else 0)
    print(f"wrote {args[1]}/train.txt ({n['train']}) and val.txt ({n['val']})")
