"""Knowledge distillation: temperature softening, the soft-label store and the KD targets / losses per strategy.

Soft-label store (written by Train_2_Step, read by Train_3_Step)::

    LABELS/<split>/manifest.json         teachers (path + sha256 each), TTA, dtype, T, split, heads, image ids
    LABELS/<split>/<sample id>.npz       ``crack``: float32 | float16 (H, W, 4), crack probability of heads h, x, y, mix

Storage dtype (``dtype``): float32 is exactly what the teacher computed; float16 halves the disk (spacing 4.9e-4 in
[0.5, 1), so rounding error <= 2.4e-4; docs/distillation.md has the measured difference of the KD targets at T = 10
and the bytes per image). Both read back as float32. The seed stored 8-bit PNGs (error up to 2e-3). Only the crack
channel is stored because a two-class softmax's background channel is ``1 - crack`` (rebuilt to within 1e-7).

Teachers and test-time augmentation: the logits of every teacher (an ensemble) and, with ``tta="d4"``, of the eight
flips / 90-degree rotations of the image (each undone before averaging) are averaged per head, then softened at T.
The label identity is (teachers by hash, TTA, dtype, T): every file is written atomically, so a file that exists is
complete and a rerun with the same identity skips it (resume); labels of another identity are refused unless the
caller asks to rebuild them.

Strategies (the paper's; T0 softens the ground truth, T1 the teacher labels and the student's four soft heads, T2 the
student's ``real`` head = mix at T2, trained on the ground truth)::

    standard        T0 = 0 (hard)  T1 = 10  T2 = 1
    hyperthermal    T0 = 10        T1 = 10  T2 = 10
    non-isothermal  T0 = 0 (hard)  T1 = 10  T2 = 10
    none            T0 = 0 (hard)  T1 = 1   T2 = 1    no teacher: the four heads learn the ground truth instead

TensorFlow / Keras are imported only by the functions that build tensors or losses.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .io import atomic_path, atomic_write_json

HEADS = ("h", "x", "y", "mix")  # the order of the stored channels (model.HEADS, without importing Keras)
REAL = "real"  # the student's real-label head: mix at T2
STRATEGIES: dict[str, tuple[float, float, float]] = {
    "standard": (0.0, 10.0, 1.0),
    "hyperthermal": (10.0, 10.0, 10.0),
    "non-isothermal": (0.0, 10.0, 10.0),
    "none": (0.0, 1.0, 1.0),
}
LABEL_FORMAT = "crackseg-soft-labels/1"
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16")  # storage of the crack probabilities; both read back as float32
MAX_LABEL_PIXELS = 64 * 2**20  # H x W of one soft label at most (a 64 MP image: 1 GiB as float32 (H, W, 4));
                               # checked from the .npz member's header before anything is loaded
TTA_MODES = ("none", "d4")  # d4: the 8 flips / 90-degree rotations of the image (the dihedral group)


class LabelError(ValueError):
    """Soft labels that are missing, stale or unreadable; the message names the file."""


# ---------------------------------------------------------------------------------------------- temperature
def soften(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` over the last axis, in float32 (numerically stable)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def soften_ground_truth(one_hot: np.ndarray, t0: float) -> np.ndarray:
    """Ground truth at T0: T0 = 0 keeps the hard one-hot labels, T0 > 0 gives softmax(one_hot / T0)."""
    one_hot = np.asarray(one_hot, np.float32)
    return one_hot if t0 == 0 else soften(one_hot, t0)


def resolve_strategy(strategy: str, t0: float | None = None, t1: float | None = None,
                     t2: float | None = None) -> dict:
    """``{"strategy", "t0", "t1", "t2", "distill"}`` from the table, any temperature given explicitly winning."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
    base = STRATEGIES[strategy]
    temps = [float(b if v is None else v) for v, b in zip((t0, t1, t2), base)]
    if temps[0] < 0 or temps[1] <= 0 or temps[2] <= 0:
        raise ValueError(f"need T0 >= 0, T1 > 0, T2 > 0; got T0={temps[0]}, T1={temps[1]}, T2={temps[2]}")
    return {"strategy": strategy, "t0": temps[0], "t1": temps[1], "t2": temps[2], "distill": strategy != "none"}


# ---------------------------------------------------------------------------------------------- label files
def label_path(split_dir: str | Path, sample_id: str) -> Path:
    """``<split_dir>/<id>.npz``; the id keeps its extension (``11111.jpg.npz``) so ids never collide."""
    if Path(sample_id).is_absolute() or ".." in Path(sample_id).parts:
        raise LabelError(f"sample id {sample_id!r} would leave the label folder")
    return Path(split_dir) / f"{sample_id}.npz"


def write_soft_label(path: str | Path, crack: np.ndarray, dtype: str = "float32") -> None:
    """Store (H, W, 4) crack probabilities of heads h, x, y, mix as ``dtype`` (float32 | float16) in a compressed
    .npz, atomically."""
    crack = np.asarray(crack)
    if crack.ndim != 3 or crack.shape[-1] != len(HEADS):
        raise ValueError(f"soft label must be (H, W, {len(HEADS)}), got {crack.shape}")
    if dtype not in DTYPES:
        raise ValueError(f"soft-label dtype must be one of {DTYPES}, got {dtype!r}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # an open file, so numpy cannot append a second ".npz"
            np.savez_compressed(f, crack=crack.astype(dtype))


def soft_label_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the ``crack`` array of a soft-label .npz, read from the array's own .npy header inside
    the zip: nothing is decompressed or allocated, so a small file declaring a huge array costs nothing."""
    import zipfile

    with zipfile.ZipFile(path) as archive, archive.open("crack.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f".npy format version {version} is not one numpy writes for these arrays")
    return tuple(int(n) for n in shape), np.dtype(dtype)


def read_soft_label(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 4) float32 crack probabilities of heads h, x, y, mix (stored as float32 or float16; float32 in memory
    because the training crops resize them with OpenCV, which has no float16 resize). The shape and dtype are
    checked from the array header first: a label of another layout or above ``max_pixels`` (H x W; default
    ``MAX_LABEL_PIXELS``) is refused before it is loaded."""
    max_pixels = MAX_LABEL_PIXELS if max_pixels is None else int(max_pixels)
    try:
        shape, dtype = soft_label_header(path)
    except FileNotFoundError:
        raise LabelError(f"{path}: soft label missing (run Train_2_Step.py for this split)") from None
    except Exception as exc:  # not a zip, no crack.npy, a broken header: all the same here
        raise LabelError(f"{path}: unreadable soft label ({exc})") from None
    if len(shape) != 3 or shape[-1] != len(HEADS) or dtype.name not in DTYPES:
        raise LabelError(f"{path}: soft label declares shape {shape} {dtype}; expected (H, W, 4) float32 or float16")
    if shape[0] * shape[1] > max_pixels:
        raise LabelError(f"{path}: soft label declares {shape[1]}x{shape[0]} pixels, more than {max_pixels:,} "
                         f"(crackseg.distill.MAX_LABEL_PIXELS); not loaded")
    try:
        with np.load(path) as data:
            crack = data["crack"]
    except FileNotFoundError:
        raise LabelError(f"{path}: soft label missing (run Train_2_Step.py for this split)") from None
    except Exception as exc:  # zip / pickle / key errors all mean the same thing here
        raise LabelError(f"{path}: unreadable soft label ({exc})") from None
    if crack.ndim != 3 or crack.shape[-1] != len(HEADS) or crack.dtype.name not in DTYPES:
        raise LabelError(f"{path}: soft label has shape {crack.shape} {crack.dtype}; "
                         f"expected (H, W, 4) float32 or float16")
    return crack.astype(np.float32, copy=False)


def two_class(crack: np.ndarray) -> np.ndarray:
    """(..., 4) crack probabilities -> (..., 4, 2) [background, crack] per head."""
    crack = np.asarray(crack, np.float32)
    return np.stack([1.0 - crack, crack], axis=-1)


# ---------------------------------------------------------------------------------------------- manifest
def read_manifest(split_dir: str | Path) -> dict | None:
    path = Path(split_dir) / MANIFEST
    if not path.is_file():
        return None
    import json

    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabelError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise LabelError(f"{path}: a soft-label manifest is a JSON object, not a {type(manifest).__name__}")
    if manifest.get("format") != LABEL_FORMAT:
        raise LabelError(f"{path}: not a soft-label manifest of format {LABEL_FORMAT!r}")
    # the fields every reader relies on (the label identity, what training records): checked here, once
    temperature = manifest.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise LabelError(f"{path}: field 'temperature' must be a number > 0, got {temperature!r}"
                         + (" (missing)" if "temperature" not in manifest else ""))
    for key in ("teacher", "teacher_sha256"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise LabelError(f"{path}: field {key!r} must be a non-empty string, got {manifest.get(key)!r}")
    return manifest


def ensemble_sha256(shas: Iterable[str]) -> str:
    """The label identity of several teachers: one teacher's file hash, or for an ensemble the sha256 of the sorted
    file hashes (one per line; averaging does not depend on their order)."""
    import hashlib

    shas = sorted(shas)
    if len(shas) == 1:
        return shas[0]
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


def label_source(teachers: list[tuple[str | Path, str]], tta: str = "none") -> dict:
    """``{"teacher", "teacher_sha256", "teachers", "tta"}`` of labels made by ``teachers`` ((path, sha256) each):
    ``teacher`` the paths comma-joined, ``teacher_sha256`` their ``ensemble_sha256``."""
    if not teachers:
        raise ValueError("no teacher given")
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    return {"teacher": ",".join(str(p) for p, _ in teachers),
            "teacher_sha256": ensemble_sha256(s for _, s in teachers),
            "teachers": [{"path": str(p), "sha256": s} for p, s in teachers], "tta": tta}


def _identity(manifest: dict) -> tuple:
    # manifests written before TTA / float16 existed made float32 labels without TTA
    return (manifest["teacher_sha256"], float(manifest["temperature"]), manifest.get("tta", "none"),
            manifest.get("dtype", "float32"))


def _describe(identity: tuple, teacher: str | None) -> str:
    sha, t, tta, dtype = identity
    return (f"teacher {sha[:12]} ({teacher}) at T={t:g}" + (f" with TTA {tta}" if tta != "none" else "")
            + f", {dtype}")


def open_split(labels_dir: str | Path, split: str, teacher: str | Path, teacher_sha256: str, temperature: float,
               ids: list[str], rebuild: bool = False, *, tta: str = "none", dtype: str = "float32",
               teachers: list[dict] | None = None) -> Path:
    """Prepare ``labels_dir/split`` for writing and (re)write its manifest; return the folder.

    Labels already there with the same identity (teacher hash -- an ensemble's ``ensemble_sha256`` --, T, ``tta``
    and storage ``dtype``) are kept (resume). Labels of another identity raise ``LabelError`` unless ``rebuild``,
    which deletes them first. ``teachers``: each teacher's ``{"path", "sha256"}`` (default: the one ``teacher``).
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if dtype not in DTYPES:
        raise ValueError(f"soft-label dtype must be one of {DTYPES}, got {dtype!r}")
    split_dir = Path(labels_dir) / split
    old = read_manifest(split_dir)
    new = (teacher_sha256, float(temperature), tta, dtype)
    if old is not None and _identity(old) != new:
        if not rebuild:
            raise LabelError(
                f"{split_dir}: labels were made by {_describe(_identity(old), old.get('teacher'))}, not by "
                f"{_describe(new, str(teacher))}; pass --rebuild to replace them or choose another --out")
        for stale in split_dir.rglob("*.npz"):
            stale.unlink()
        old = None
    created = old["created"] if old else time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(split_dir / MANIFEST, {
        "format": LABEL_FORMAT, "teacher": str(teacher), "teacher_sha256": teacher_sha256,
        "teachers": teachers or [{"path": str(teacher), "sha256": teacher_sha256}], "tta": tta, "dtype": dtype,
        "temperature": float(temperature), "split": split, "heads": list(HEADS),
        "storage": f"npz, key 'crack', {dtype} (H, W, 4) crack probability per head; background = 1 - crack",
        "images": list(ids), "created": created, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return split_dir


def pending(split_dir: str | Path, ids: Iterable[str]) -> list[str]:
    """Ids whose label file is not written yet (writes are atomic, so an existing file is complete)."""
    return [i for i in ids if not label_path(split_dir, i).is_file()]


def head_probabilities(logits: dict[str, np.ndarray], temperature: float, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 4) crack probability of each head at T, from per-head (1, H', W', 2) or (H', W', 2) logits cropped
    back to ``size`` (undoing the pad to a multiple of 4)."""
    h, w = size
    planes = []
    for head in HEADS:
        z = np.asarray(logits[head])
        z = z[0] if z.ndim == 4 else z
        planes.append(soften(z[:h, :w], temperature)[..., 1])
    return np.stack(planes, axis=-1)


def dihedral(k: int) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(forward, inverse) of the k-th of the 8 flips / 90-degree rotations (k = 0 identity) of (H, W, ...) arrays:
    forward = k % 4 quarter turns after a left-right flip when k >= 4; ``inverse(forward(a)) == a``."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral transform index must be 0..7, got {k}")
    turns, flip = k % 4, k >= 4

    def forward(a: np.ndarray) -> np.ndarray:
        return np.rot90(a[:, ::-1] if flip else a, turns)

    def inverse(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, -turns)
        return a[:, ::-1] if flip else a

    return forward, inverse


def averaged_logits(predictors: Callable | list[Callable], image: np.ndarray, tta: str = "none"
                    ) -> dict[str, np.ndarray]:
    """Per-head (H, W, 2) float32 logits of ``image`` averaged over the teachers ``predictors`` and, with
    ``tta="d4"``, over the 8 flips / 90-degree rotations, each prediction cropped to its view and transformed back
    before the average. A predictor maps an (N, H, W, 3) uint8 batch (or one image) to ``{head: (N, H', W', 2)}``
    logits padded to a multiple of 4; the views of one shape go through it as one batch."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    predictors = [predictors] if callable(predictors) else list(predictors)
    if not predictors:
        raise ValueError("no teacher to predict with")
    transforms = [dihedral(k) for k in range(8 if tta == "d4" else 1)]
    views: dict[tuple, list] = {}  # view shape -> [(inverse, view)]: same-shape views share a batch
    for forward, inverse in transforms:
        view = np.ascontiguousarray(forward(image))
        views.setdefault(view.shape, []).append((inverse, view))
    total = {h: np.zeros((*image.shape[:2], 2), np.float64) for h in HEADS}
    for shape, group in views.items():
        batch = np.stack([v for _, v in group])
        for predict in predictors:
            logits = predict(batch)
            for head in HEADS:
                z = np.asarray(logits[head])
                z = z if z.ndim == 4 else z[None]
                for i, (inverse, _) in enumerate(group):
                    total[head] += inverse(z[i, :shape[0], :shape[1]])
    count = len(transforms) * len(predictors)
    return {h: (total[h] / count).astype(np.float32) for h in HEADS}


def write_split(predict_logits: Callable[[np.ndarray], dict[str, np.ndarray]] | list[Callable], samples: list,
                read_image: Callable, labels_dir: str | Path, split: str, teacher: str | Path,
                teacher_sha256: str, temperature: float, rebuild: bool = False, progress: bool = True, *,
                tta: str = "none", dtype: str = "float32", teachers: list[dict] | None = None) -> dict:
    """Write the soft labels of one split; returns ``{"split", "written", "skipped", "dir"}``.

    ``predict_logits(rgb_uint8) -> {head: logits}`` runs the teacher on one full-size image or a batch of them (the
    caller pads and the logits are cropped back here); a list of them is an ensemble, whose logits are averaged per
    head (``teacher_sha256`` then the ``ensemble_sha256`` and ``teachers`` each one's path and hash:
    ``label_source`` gives all three). ``tta="d4"`` averages the 8 flips / 90-degree rotations too. ``dtype``: the
    storage, float32 or float16. ``samples`` have ``.id`` and ``.image``.
    """
    from tqdm import tqdm

    ids = [s.id for s in samples]
    split_dir = open_split(labels_dir, split, teacher, teacher_sha256, temperature, ids, rebuild, tta=tta,
                           dtype=dtype, teachers=teachers)
    todo = set(pending(split_dir, ids))
    single = callable(predict_logits) and tta == "none"
    for sample in tqdm([s for s in samples if s.id in todo], desc=f"soft labels {split}", unit="img",
                       disable=not progress or None):
        image = read_image(sample.image)
        logits = predict_logits(image) if single else averaged_logits(predict_logits, image, tta)
        write_soft_label(label_path(split_dir, sample.id), head_probabilities(logits, temperature, image.shape[:2]),
                         dtype)
    return {"split": split, "written": len(todo), "skipped": len(ids) - len(todo), "dir": str(split_dir)}


def label_quality(split_dir: str | Path, samples: list, read_mask: Callable[[Path], np.ndarray],
                  datasets: list[str], floors: dict[str, float] | None = None) -> dict:
    """The labels of one split as a segmentation: their mix head against the ground truth by the model card's
    threshold rule (``crackseg.metrics.balanced_threshold``: the threshold maximising the mean of the datasets'
    strict F1). This is the teacher as the student sees it -- ensemble, TTA, temperature and storage included --
    on the same scale as a student's ``val_score``. Returns ``balanced_threshold``'s dict plus ``images``."""
    from .metrics import balanced_threshold, threshold_counts

    curves: dict[str, np.ndarray] = {}
    for sample, name in zip(samples, datasets, strict=True):
        path = label_path(split_dir, sample.id)
        mix = read_soft_label(path)[..., HEADS.index("mix")]
        truth = read_mask(sample.mask)
        if truth.shape != mix.shape:
            raise LabelError(f"{path}: label is {mix.shape[1]}x{mix.shape[0]} but its mask {sample.mask} is "
                             f"{truth.shape[1]}x{truth.shape[0]}")
        curves[name] = curves.get(name, 0) + threshold_counts(mix, truth)
    return {**balanced_threshold(curves, floors), "images": len(samples)}


def record_quality(split_dir: str | Path, quality: dict) -> None:
    """Keep ``label_quality``'s result in the split's manifest (``"quality"``), rewritten atomically."""
    manifest = read_manifest(split_dir)
    if manifest is None:
        raise LabelError(f"{Path(split_dir) / MANIFEST}: no manifest to record the label quality in")
    atomic_write_json(Path(split_dir) / MANIFEST, {**manifest, "quality": quality})


def load_split_labels(labels_dir: str | Path, split: str, samples: list, temperature: float,
                      teacher_sha256: str | None = None, shift: float = 0.0) -> tuple[list[np.ndarray], dict]:
    """Soft labels of ``samples`` (one (H, W, 4) array each, in order) at ``temperature`` (the student's T1), and
    the split's manifest.

    Labels made at another temperature, or asked for with a ``shift``, are re-softened by ``resoften`` (exact up
    to their storage precision). Refuses labels from a teacher other than ``teacher_sha256`` when given, and any
    missing image.
    """
    split_dir = Path(labels_dir) / split
    manifest = read_manifest(split_dir)
    if manifest is None:
        raise LabelError(f"{split_dir / MANIFEST}: no soft labels for split {split!r} (run Train_2_Step.py first)")
    if teacher_sha256 is not None and manifest["teacher_sha256"] != teacher_sha256:
        raise LabelError(f"{split_dir / MANIFEST}: labels of split {split!r} come from teacher "
                         f"{manifest['teacher_sha256'][:12]}, the other splits from {teacher_sha256[:12]}")
    missing = pending(split_dir, [s.id for s in samples])
    if missing:
        raise LabelError(f"{label_path(split_dir, missing[0])}: soft label missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + "; run Train_2_Step.py with the same data, lists and seed")
    made_at = float(manifest["temperature"])
    labels = [resoften(read_soft_label(label_path(split_dir, s.id)), made_at, temperature, shift) for s in samples]
    return labels, manifest


def resoften(crack: np.ndarray, made_at: float, temperature: float, shift: float = 0.0) -> np.ndarray:
    """Soft labels made at temperature ``made_at`` as they would be at ``temperature``, with ``shift`` added to the
    teacher's logit difference z (crack - background): p = sigmoid(z / made_at), so
    p' = sigmoid((made_at * logit(p) + shift) / temperature). Exact up to the stored precision, so one set of
    labels serves every T1; the shift moves their decision boundary by ``shift`` logits (e.g. onto the one of the
    student being fine-tuned, whose logits sit elsewhere) and keeps their order."""
    if temperature <= 0 or made_at <= 0:
        raise ValueError(f"temperatures must be > 0, got {made_at:g} and {temperature:g}")
    if shift == 0 and made_at == temperature:
        return crack
    from scipy.special import expit, logit

    p = np.clip(crack.astype(np.float64), 1e-7, 1 - 1e-7)
    return expit((float(made_at) * logit(p) + float(shift)) / float(temperature)).astype(np.float32)


def decision_logit(threshold: float, temperature: float = 1.0) -> float:
    """The logit difference (crack - background) at which a model's card threshold is crossed, for a model whose
    probability is softmax(logits / temperature): temperature * logit(threshold)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return float(temperature) * math.log(threshold / (1.0 - threshold))


# ---------------------------------------------------------------------------------------------- KD wiring
def student_heads(t1: float, t2: float) -> dict[str, tuple[str, float]]:
    """``model.with_heads`` spec of the student: the four heads at T1 and ``real`` = mix at T2."""
    return {**{h: (h, t1) for h in HEADS}, REAL: ("mix", t2)}


def kd_targets(one_hot: np.ndarray, soft: np.ndarray | None, t0: float) -> dict[str, np.ndarray]:
    """Targets of the five student outputs for one batch.

    ``one_hot`` (..., 2) ground truth; ``soft`` (..., 4) teacher crack probabilities (heads h, x, y, mix), or None
    for the no-teacher baseline, whose four heads then learn the ground truth at T0 too.
    """
    real = soften_ground_truth(one_hot, t0)
    if soft is None:
        return {**{h: real for h in HEADS}, REAL: real}
    soft = np.asarray(soft, np.float32)
    targets = {h: np.stack([1.0 - soft[..., i], soft[..., i]], axis=-1) for i, h in enumerate(HEADS)}
    return {**targets, REAL: real}


def kd_losses(loss: str, crack_weight: float, alpha: float, t1: float = 1.0,
              scale_by_t1_squared: bool = True, pos_weight: float = 10.0,
              soft_loss: str = "") -> tuple[dict, dict[str, float]]:
    """Per-output losses and ``loss_weights`` for ``compile``: total = alpha * s * soft + (1 - alpha) * hard, where
    soft is the mean of the loss over the four soft heads, hard the loss of the ``real`` head, and s = T1^2 (or 1).

    The mean (alpha / 4 per head) rather than the sum keeps alpha the soft share whatever the number of soft heads.
    s = T1^2 (Hinton et al. 2015): at temperature T the soft probabilities and their gradients both shrink by ~1/T,
    so without it a T1 = 10 soft term is ~100x weaker than alpha says (measured: ~1 % of the total at alpha 0.9).
    Each term is ``crackseg.losses.make_loss(loss)``, the loss the teacher was trained with; ``soft_loss`` (when
    given) replaces it on the four soft heads, e.g. ``bce``, whose minimum is the soft target itself.
    """
    from .losses import make_loss

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    scale = float(t1) ** 2 if scale_by_t1_squared else 1.0
    losses = {name: make_loss(soft_loss or loss, crack_weight, pos_weight) for name in HEADS}
    losses[REAL] = make_loss(loss, crack_weight, pos_weight)
    weights = {**{h: alpha * scale / len(HEADS) for h in HEADS}, REAL: 1.0 - alpha}
    return losses, weights
