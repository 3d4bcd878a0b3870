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
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .preprocess import normalize

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff", ".mat")
LAYOUTS = (("image", "groundTruth"), ("train_img", "train_lab"), ("test_img", "test_lab"), ("images", "masks"))
SPLITS = ("train", "val", "test")
# Pixels an image file may declare before it is decoded (width x height from its header). 64 Mi = 67.1 MP: a 64 MP
# phone photo (9248 x 6936) passes; a 30000 x 30000 PNG of 875 KB, which OpenCV (limit 2^30) would expand to 2.7 GB
# (5.4 GB with the RGB copy), does not. Scripts that read folders expose it as --max_pixels.
MAX_PIXELS = 64 << 20


class DataError(ValueError):
    """Bad input data; the message names the file."""


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than the limit; nothing of it was decoded."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path


# ---------------------------------------------------------------------------------------------- reading files
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_FORMATS = "PNG, JPEG, BMP, TIFF, WebP or GIF"


def _jpeg_size(f) -> tuple[int, int] | None:
    """(width, height) from the first frame header (SOFn), walking the marker segments from byte 2 by their
    lengths (EXIF blocks and their embedded thumbnails are skipped whole)."""
    f.seek(2)
    for _ in range(4096):  # segments and stray bytes: real files have < 100
        byte = f.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue  # stray byte before a marker: libjpeg skips these too
        marker = 0xFF
        while marker == 0xFF:  # fill bytes
            byte = f.read(1)
            if not byte:
                return None
            marker = byte[0]
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length follows
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        (length,) = struct.unpack(">H", f.read(2))
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">xHH", f.read(5))
            return width, height
        f.seek(length - 2, 1)
    return None


def _tiff_size(f, head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first image file directory, the page OpenCV decodes (classic TIFF and BigTIFF)."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\0", b"\0+")
    (offset,) = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])
    f.seek(offset)
    (count,) = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))
    entry = 20 if big else 12
    table = f.read(entry * min(count, 4096))
    size: dict[int, int] = {}
    for start in range(0, len(table) - entry + 1, entry):
        tag, kind = struct.unpack(order + "HH", table[start:start + 4])
        if tag not in (256, 257):  # ImageWidth, ImageLength
            continue
        value = table[start + (12 if big else 8):start + entry]  # left-justified in the entry's value field
        fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)  # SHORT, LONG, LONG8
        if fmt is None:
            return None
        size[tag] = struct.unpack(order + fmt, value[:struct.calcsize(fmt)])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file from its header alone, no pixel decoded: PNG, JPEG, BMP, TIFF (BigTIFF
    too), WebP or GIF, told apart by their first bytes, as OpenCV tells them. DataError naming the file when it is
    missing or its header is none of these or cut short.

    Read here rather than by Pillow: the edge install (camera.py, report.py) has OpenCV and numpy only, and
    OpenCV's Python API has no header-only read."""
    path = Path(path)
    size = None
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                size = struct.unpack(">II", head[16:24])
            elif head[:2] == b"\xff\xd8":
                size = _jpeg_size(f)
            elif head[:2] == b"BM":
                if head[14:18] == b"\x0c\0\0\0":  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                    size = struct.unpack("<HH", head[18:22])
                else:  # a negative height is a top-down bitmap
                    size = tuple(abs(v) for v in struct.unpack("<ii", head[18:26]))
            elif head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
                size = _tiff_size(f, head)
            elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                size = _webp_size(head)
            elif head[:6] in (b"GIF87a", b"GIF89a"):
                size = struct.unpack("<HH", head[6:10])
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except (struct.error, IndexError, ValueError):  # a header cut short, or an offset past the end
        size = None
    if size is None:
        raise DataError(f"{path}: cannot read {what} (empty, not a {_FORMATS} file, or a damaged header)")
    return int(size[0]), int(size[1])


def check_pixels(path: str | Path, max_pixels: int | None = None, what: str = "image") -> tuple[int, int]:
    """The file's (width, height) from its header; ImageTooLargeError naming the file and its size when it holds
    more than ``max_pixels`` (None: ``MAX_PIXELS``; 0: no limit)."""
    width, height = image_size(path, what)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if limit and width * height > limit:
        raise ImageTooLargeError(f"{path}: {what} is {width}x{height} ({width * height / 1e6:.1f} MP), over the "
                                 f"{limit / 1e6:.1f} MP limit (max_pixels); not decoded")
    return width, height


def decode_file(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED, what: str = "image",
                max_pixels: int | None = None) -> np.ndarray:
    """An image file decoded by OpenCV (any path, unicode included) once its header says it holds at most
    ``max_pixels`` (None: ``MAX_PIXELS``; over it, ImageTooLargeError before any pixel is decoded); DataError
    naming the file if it can't be read. ``max_pixels=0`` skips the header check: any format OpenCV reads, up to
    OpenCV's own limit of 2^30 pixels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cannot read {what} (missing, empty or not an image)")
    if max_pixels != 0:
        check_pixels(path, max_pixels, what)
    data = np.fromfile(path, np.uint8)
    try:
        decoded = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as exc:  # OpenCV's own limits, or memory: one line, not its multi-line report
        raise DataError(f"{path}: cannot read {what} ({error_line(exc)})") from None
    if decoded is None:
        raise DataError(f"{path}: cannot read {what} (missing, empty or not an image)")
    return decoded


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """RGB uint8 HxWx3 (``max_pixels``: see ``check_pixels``)."""
    image = decode_file(path, cv2.IMREAD_COLOR, "image", max_pixels)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: no second full-size copy


def error_line(exc: BaseException) -> str:
    """One line for any exception: this package's typed errors by their message, others as ``Type: message``
    with the message's lines joined (OpenCV's errors run over several)."""
    text = " ".join(str(exc).split())[:300]
    if text and type(exc).__module__.split(".")[0] == __name__.split(".")[0]:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_mask(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Boolean HxW crack mask from a PNG (0/255 or 0/1) or a CrackForest ``.mat`` (``Segmentation == 2``);
    ``max_pixels``: see ``check_pixels`` (image files only)."""
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
    mask = decode_file(path, cv2.IMREAD_UNCHANGED, "mask", max_pixels)
    if mask.ndim == 3:
        if not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise DataError(f"{path}: mask is a colour image; expected a single-channel 0/255 or 0/1 mask")
        mask = mask[..., 0]
    values = np.unique(mask)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        raise DataError(f"{path}: mask values {values[:6].tolist()} are not binary (0/255 or 0/1)")
    return mask > 0


def load_pair(sample: Sample, dilate: int = 0, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image (uint8 HxWx3) and mask (bool HxW), checked to have the same size; optional k x k label dilation;
    ``max_pixels``: see ``decode_file``."""
    image, mask = read_image(sample.image, max_pixels), read_mask(sample.mask, max_pixels)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{sample.mask}: mask size {mask.shape[1]}x{mask.shape[0]} does not match image "
                        f"{sample.image.name} size {image.shape[1]}x{image.shape[0]}")
    if dilate > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (dilate, dilate))  # a real k x k square
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return image, mask


def load_arrays(samples: list[Sample], dilate: int = 0, workers: int = 4, max_pixels: int | None = None
                ) -> tuple[list, list]:
    """Decode every sample in parallel (OpenCV releases the GIL); returns (images, masks)."""
    with ThreadPoolExecutor(workers) as pool:
        pairs = list(pool.map(lambda s: load_pair(s, dilate, max_pixels), samples))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def drop_oversized(samples: list[Sample], max_pixels: int | None = None) -> list[Sample]:
    """``samples`` less those whose image or mask header declares more than ``max_pixels`` (None: ``MAX_PIXELS``;
    0: none dropped), one printed line each naming the file and its size, so a training run goes on without them
    instead of decoding gigabytes. Headers only: nothing is decoded here."""
    if max_pixels == 0:
        return list(samples)
    kept = []
    for sample in samples:
        try:
            check_pixels(sample.image, max_pixels, "image")
            if sample.mask.suffix.lower() != ".mat":  # scipy reads .mat masks; no image header to check
                check_pixels(sample.mask, max_pixels, "mask")
        except ImageTooLargeError as exc:
            print(f"skip: {exc}", flush=True)
            continue
        kept.append(sample)
    return kept


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
    folder has them, else a deterministic seeded split (``val_fraction`` to val) of all but a dataset's official test
    pairs (DeepCrack's ``test_img/``), which become the test split: a test set never leaks into training."""
    if lists is not None and Path(lists, "train.txt").is_file():
        out = {name: read_list(Path(lists, f"{name}.txt"), samples) if Path(lists, f"{name}.txt").is_file() else []
               for name in SPLITS}
        return out
    official_test = sorted((s for s in samples if s.image.parent.name == "test_img"), key=lambda s: s.id)
    ordered = sorted((s for s in samples if s.image.parent.name != "test_img"), key=lambda s: s.id)
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(len(ordered) * val_fraction)) if len(ordered) > 1 else 0
    return {"train": ordered[n_val:], "val": ordered[:n_val], "test": official_test}


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
    if lists is not None and Path(lists, "train.txt").is_file() and not names_any(Path(lists, "train.txt"), samples):
        # e.g. --data=DIR with the default --lists=datasets/splits, which name ../shared/datasets' samples
        own = roots[0].strip() if len(roots) == 1 and Path(roots[0].strip(), "train.txt").is_file() else None
        print(f"{Path(lists, 'train.txt')} names none of the samples in {data}: using "
              + (f"{own}'s own train.txt / val.txt" if own else
                 f"a seeded split (val_fraction={val_fraction}, seed={seed})"), flush=True)
        lists = own
    return split_samples(samples, lists, val_fraction, seed)


def names_any(list_file: Path, samples: list[Sample]) -> bool:
    """Whether a split list names at least one of ``samples`` (by id or stem)."""
    known = {s.id for s in samples} | {s.image.stem for s in samples}
    names = (line.strip() for line in list_file.read_text().splitlines())
    return any(name in known for name in names if name and not name.startswith("#"))


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


@dataclass(frozen=True)
class Augmentation:
    """Augmentation beyond crop / flips / 90-degree turns / colour jitter, for capture set-ups not in the training
    data. ``scale`` is a (low, high) range of the resize factor (log-uniform; survey images and phone crops differ
    several-fold in crack width per pixel); the others are per-sample probabilities."""

    scale: tuple[float, float] = (1.0, 1.0)
    blur: float = 0.0    # Gaussian blur, sigma 0.5-1.8 px (focus, motion)
    jpeg: float = 0.0    # re-encoded as JPEG at quality 20-90
    shadow: float = 0.0  # cast shadows: soft dark blobs over the image, never the label
    stripe: float = 0.0  # a painted-line-like bright stripe: a negative (no crack is visible under paint)
    grey: float = 0.0    # grey-scale

    @classmethod
    def parse(cls, spec: str) -> "Augmentation":
        """From ``"scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"`` (any subset), or ``"none"``."""
        spec = (spec or "").strip()
        if spec.lower() in ("", "none", "off"):
            return cls()
        fields: dict = {}
        for part in spec.split(","):
            key, eq, value = part.strip().partition("=")
            if not eq or key not in cls.__dataclass_fields__:
                raise DataError(f"augmentation {part.strip()!r}: expected name=value with name one of "
                                f"{', '.join(cls.__dataclass_fields__)}")
            try:
                if key == "scale":
                    low, _, high = value.partition(":")
                    fields[key] = (float(low), float(high or low))
                else:
                    fields[key] = float(value)
            except ValueError:
                raise DataError(f"augmentation {part.strip()!r}: not a number") from None
        aug = cls(**fields)
        low, high = aug.scale
        if not 0.1 <= low <= high <= 10:
            raise DataError(f"augmentation scale={low:g}:{high:g}: expected 0.1 <= low <= high <= 10")
        for key in ("blur", "jpeg", "shadow", "stripe", "grey"):
            if not 0.0 <= getattr(aug, key) <= 1.0:
                raise DataError(f"augmentation {key}={getattr(aug, key):g}: a probability must be in [0, 1]")
        return aug

    @property
    def active(self) -> bool:
        return self != Augmentation()

    @property
    def components(self) -> list[str]:
        """The names of the fields that differ from "none", in field order."""
        return [key for key in self.__dataclass_fields__ if getattr(self, key) != getattr(Augmentation(), key)]

    def without(self, component: str) -> "Augmentation":
        """The same augmentation with ``component`` off (a leave-one-out arm of scripts/aug_ablation.py)."""
        if component not in self.__dataclass_fields__:
            raise DataError(f"augmentation has no component {component!r}")
        return replace(self, **{component: getattr(Augmentation(), component)})

    def spec(self) -> str:
        """The ``--augment`` text that ``parse`` turns back into this augmentation ("none" when nothing is on)."""
        def text(x: float) -> str:
            short = f"{x:g}"
            return short if float(short) == x else repr(x)  # %g keeps 6 digits: exact where it can be

        parts = []
        for key in self.components:
            value = getattr(self, key)
            parts.append(f"scale={text(value[0])}:{text(value[1])}" if key == "scale" else f"{key}={text(value)}")
        return ",".join(parts) or "none"


def _resize(part: np.ndarray, size: int, kind: str) -> np.ndarray:
    """A square window resized to size x size: image (uint8, area/linear), mask (bool, area-averaged >= 0.5, so
    thin cracks keep their share of pixels) or float extra channels (linear)."""
    shrink = part.shape[0] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if kind == "mask":
        return cv2.resize(part.astype(np.float32), (size, size), interpolation=interpolation) >= 0.5
    out = cv2.resize(np.ascontiguousarray(part), (size, size), interpolation=interpolation)
    return out[..., None] if out.ndim == 2 and part.ndim == 3 else out


def _cast_shadows(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 soft dark blobs (tree or vehicle shadows) multiplied into the image."""
    size = rgb.shape[0]
    blob = np.zeros(rgb.shape[:2], np.float32)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.uniform(0.15, 0.6) * size), int(rng.uniform(0.1, 0.4) * size))
        cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    blob = cv2.GaussianBlur(blob, (0, 0), max(1.0, size * rng.uniform(0.03, 0.1)))
    return rgb * (1.0 - rng.uniform(0.3, 0.7) * np.clip(blob, 0, 1))[..., None]


def _paint_stripe(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A straight white or yellow band with soft edges (a lane marking); the label is cleared under it."""
    size = rgb.shape[0]
    band = np.zeros(rgb.shape[:2], np.float32)
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0, size, 2)
    dx, dy = np.cos(angle) * 2 * size, np.sin(angle) * 2 * size
    width = int(rng.integers(4, max(5, size // 8)))
    cv2.line(band, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1.0, width)
    band = cv2.GaussianBlur(band, (0, 0), 1.0) * rng.uniform(0.7, 1.0)
    colour = np.array([1.0, 1.0, 1.0] if rng.random() < 0.6 else [1.0, 0.85, 0.2], np.float32) * rng.uniform(0.8, 1.0)
    rgb = rgb * (1.0 - band[..., None]) + colour * band[..., None]
    return rgb, mask & (band < 0.5)


def _photometric(rgb: np.ndarray, mask: np.ndarray, aug: Augmentation, rng: np.random.Generator,
                 jitter: bool, stripes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shadows, stripes, colour jitter, grey-scale, blur and JPEG re-encoding of a float RGB tile in [0, 1]."""
    if rng.random() < aug.shadow:
        rgb = _cast_shadows(rgb, rng)
    if stripes and rng.random() < aug.stripe:
        rgb, mask = _paint_stripe(rgb, mask, rng)
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)
    if jitter:
        rgb = _jitter_colour(rgb, rng)
    if rng.random() < aug.grey:
        rgb = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    if rng.random() < aug.blur:
        rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < aug.jpeg:
        ok, buf = cv2.imencode(".jpg", (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)[..., ::-1],
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 91))])
        rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    return rgb, mask


def augment_sample(image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator, jitter: bool = True,
                   extra: np.ndarray | None = None, aug: Augmentation | None = None) -> tuple[np.ndarray, ...]:
    """One random crop (padding first when smaller), flips, 90-degree rotation and colour jitter of a uint8 image,
    plus ``aug`` (random scale, shadows, stripes, grey-scale, blur, JPEG) when given.

    Returns ``(image [-1, 1] (crop, crop, 3), one-hot (crop, crop, 2)[, extra (crop, crop, C)])``. ``extra`` float
    channels (teacher soft labels) get the same crop / scale / flips / rotation as the mask, never the photometric
    changes; stripes, which change the label, are not drawn when there are soft labels.
    """
    scaled = aug is not None and aug.scale != (1.0, 1.0)
    factor = float(np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1])))) if scaled else 1.0
    # The source window that becomes the crop after resizing; never much larger than the image's short side, or
    # mirrored padding would fill the crop with kaleidoscope patterns (small images are only zoomed in).
    window = max(4, min(int(round(crop / factor)), max(crop, min(image.shape[:2]))))
    parts = [image, mask] + ([extra] if extra is not None else [])
    parts = [_pad_to(p, window, window) for p in parts]
    h, w = parts[1].shape
    top, left = int(rng.integers(0, h - window + 1)), int(rng.integers(0, w - window + 1))
    flip_lr, flip_ud, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(0, 4))
    out = []
    for p, kind in zip(parts, ("image", "mask", "extra")):
        p = p[top:top + window, left:left + window]
        if window != crop:
            p = _resize(p, crop, kind)
        p = p[:, ::-1] if flip_lr else p
        p = p[::-1] if flip_ud else p
        out.append(np.rot90(p, turns))
    rgb, label = out[0].astype(np.float32) / 255.0, np.ascontiguousarray(out[1])
    if aug is not None and aug.active:
        rgb, label = _photometric(rgb, label, aug, rng, jitter, stripes=extra is None)
    elif jitter:
        rgb = _jitter_colour(rgb, rng)
    result = (normalize(rgb * 255.0).astype(np.float32), one_hot(label))
    return result + ((np.ascontiguousarray(out[2], np.float32),) if extra is not None else ())


def mosaic(pieces: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Four equal square samples (outputs of ``augment_sample``) packed 2 x 2 into one tile, so datasets of small
    images fill a training tile with image instead of padding."""
    if len(pieces) != 4:
        raise ValueError(f"a mosaic needs 4 pieces, got {len(pieces)}")
    return tuple(np.concatenate([np.concatenate(col[:2], axis=1), np.concatenate(col[2:], axis=1)], axis=0)
                 for col in zip(*pieces))


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


# ---------------------------------------------------------------------------------------------- mixed datasets
def dataset_of(sample: Sample) -> str:
    """The dataset a sample belongs to: the folder holding its image folder (``CRACK500`` for
    ``CRACK500/images/x.jpg``), as evaluation names it."""
    return sample.image.parent.parent.name or sample.id.split("/")[0]


def sampling_shares(datasets: list[str], rule: str) -> dict[str, float]:
    """Each dataset's share of the training draws (summing to 1). ``rule``: ``size`` (proportional to its image
    count: the big set dominates), ``sqrt`` (proportional to the square root of its count), ``equal``, or explicit
    weights ``"DeepCrack=2,CRACK500=1,..."`` naming every dataset present."""
    counts: dict[str, int] = {}
    for name in datasets:
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        raise DataError("no training samples to draw from")
    rule = rule.strip()
    if rule in ("size", "sqrt", "equal"):
        weight = {"size": float, "sqrt": np.sqrt, "equal": lambda n: 1.0}[rule]
        raw = {name: float(weight(n)) for name, n in counts.items()}
    else:
        raw = {}
        for part in rule.split(","):
            name, eq, value = part.strip().partition("=")
            try:
                raw[name] = float(value) if eq else float("nan")
            except ValueError:
                raw[name] = float("nan")
            if not raw[name] >= 0:
                raise DataError(f"sampling {part.strip()!r}: expected size | sqrt | equal | NAME=WEIGHT,...")
        missing = sorted(set(counts) - set(raw))
        if missing:
            raise DataError(f"sampling {rule!r}: no weight for dataset(s) {', '.join(missing)} "
                            f"(datasets: {', '.join(sorted(counts))})")
        raw = {name: raw[name] for name in counts}
    total = sum(raw.values())
    if total <= 0:
        raise DataError(f"sampling {rule!r}: the weights sum to 0")
    return {name: value / total for name, value in sorted(raw.items())}


def piece_size(images: list[np.ndarray], crop: int) -> int:
    """The square crop a dataset's images are cut into for a ``crop`` x ``crop`` training tile: the tile itself,
    or half of it (four pieces packed 2 x 2, see ``mosaic``) when the median short side is under 3/4 of the tile
    (CRACK500's ~213 x 121 and AigleRN's 240 x 141 crops would otherwise be mostly padding at 256)."""
    if crop % 2:
        raise DataError(f"crop {crop}: expected an even size (a multiple of 4)")
    short = float(np.median([min(im.shape[:2]) for im in images]))
    return crop if short >= 0.75 * crop or crop < 16 else crop // 2


def epoch_plan(datasets: list[str], shares: dict[str, float], pieces_per_tile: dict[str, int], tiles: int,
               seed: int, epoch: int) -> list[tuple[int, ...]]:
    """The sample indices of each training tile of one epoch: ``tiles`` draws of a dataset by ``shares``, each
    filled with 1 or 4 of its images. Within a dataset images go round in a shuffled order, so every image is
    used before any repeats. Depends on (seed, epoch) only."""
    rng = np.random.default_rng([seed, epoch])
    names = sorted(shares)
    members = {name: np.flatnonzero(np.asarray(datasets) == name) for name in names}
    queues = {name: rng.permutation(members[name]) for name in names}
    position = dict.fromkeys(names, 0)
    plan = []
    for pick in rng.choice(len(names), size=tiles, p=[shares[n] for n in names]):
        name = names[int(pick)]
        chosen = []
        for _ in range(pieces_per_tile[name]):
            if position[name] >= len(queues[name]):
                queues[name], position[name] = rng.permutation(members[name]), 0
            chosen.append(int(queues[name][position[name]]))
            position[name] += 1
        plan.append(tuple(chosen))
    return plan


# ---------------------------------------------------------------------------------------------- for the scripts
def load_training_data(data: str, lists: str | None, val_fraction: float = 0.1, seed: int = 0, dilate: int = 0,
                       workers: int = 4, max_pixels: int | None = None) -> dict:
    """Split and decode everything a training script needs: ``{"splits", "train": (imgs, masks),
    "val": (imgs, masks)}``; train masks are dilated by ``dilate`` (k x k) when > 1, val masks never. Samples over
    ``max_pixels`` (None: ``MAX_PIXELS``) are left out of every split with one line each (``drop_oversized``)."""
    splits = load_split(data, lists, val_fraction, seed)
    splits = {name: drop_oversized(part, max_pixels) for name, part in splits.items()}
    if not splits["train"]:
        raise DataError(f"{data}: the training split is empty")
    if not splits["val"]:
        raise DataError(f"{data}: the validation split is empty (add val.txt or raise val_fraction)")
    print(f"data: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test from {data}")
    return {"splits": splits, "train": load_arrays(splits["train"], dilate, workers, max_pixels),
            "val": load_arrays(splits["val"], 0, workers, max_pixels),
            "datasets": {name: [dataset_of(s) for s in splits[name]] for name in ("train", "val")}}


def write_splits(data: str, out: str | Path, val_fraction: float = 0.1, seed: int = 0) -> dict[str, int]:
    """Train/val/test lists of every dataset found under ``data``: a dataset that ships its own lists
    (``train.txt`` / ``val.txt`` / ``test.txt`` beside its image folder) keeps them; the others get a seeded split
    (``val_fraction`` to val, no test), so each dataset is split in the same ratio."""
    samples = find_samples(data)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.id.split("/")[0] if "/" in s.id else "", []).append(s)
    lists: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for name in sorted(groups):
        own = Path(data, name) if name else Path(data)
        part = split_samples(groups[name], own if (own / "train.txt").is_file() else None, val_fraction, seed)
        for split in SPLITS:
            lists[split] += part[split]
    for split in SPLITS:
        if lists[split] or split != "test":
            write_list(Path(out) / f"{split}.txt", sorted(lists[split], key=lambda s: s.id))
    return {split: len(v) for split, v in lists.items()}


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
    print(f"wrote {args[1]}: " + ", ".join(f"{k}.txt ({v})" for k, v in n.items() if v))
