"""The bodies of Train_1_Step and Train_3_Step: wiring of data, model, loss and the shared loop."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import keras

from model import HEADS, build_model, logits_model_of, profile
from model.profile import format_profile

from .data import load_training_data
from .inputs import eval_dataset, train_dataset
from .keras_metrics import crack_metrics
from .losses import make_loss
from .training import compile_model, fit


def resolve_preset_name(preset: str) -> str:
    """``auto``: the paper's teacher when Keras' backend sees a GPU, the CPU teacher preset otherwise."""
    if preset != "auto":
        return preset
    return "teacher" if gpu_visible() else "teacher_cpu"


def gpu_visible() -> bool:
    """Whether the Keras backend (TensorFlow, JAX or PyTorch) has a GPU to run on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def print_profile(preset: str, size: int, overrides: dict) -> None:
    """Parameters, activations and (with TensorFlow's profiler installed) FLOPs of a preset at ``size``^2."""
    from model.profile import can_count_flops

    print(format_profile(profile(build_model(preset, size, **overrides), size, flops=can_count_flops())))


def _lists(value):
    return None if value in (None, "", "none", "None") else value


def train_teacher(config: dict) -> dict:
    """Train_1: a preset with the loss on all four heads, best checkpoint by validation mix-head F1."""
    config = with_initial_weights({**config, "preset": resolve_preset_name(config["preset"])})
    arrays = load_training_data(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"],
                                config["dilate"])
    overrides = {k: config[k] for k in ("width", "blocks", "block")}

    def build() -> keras.Model:
        model = build_model(config["preset"], input_size=None, **overrides)
        if config["init"]:
            warm_start(model, config["init"])
        loss = make_loss(config["loss"], config["crack_weight"])
        return compile_model(model, {h: loss for h in HEADS}, config["lr"], config["optimizer"],
                             metrics={"mix": crack_metrics(config["threshold"], config["distance"])})

    print_profile(config["preset"], config["profile_size"], overrides)
    heads = lambda x, y: (x, {h: y for h in HEADS})  # noqa: E731
    train = train_dataset(*arrays["train"], crop=config["crop"], batch_size=config["batch_size"],
                          seed=config["seed"], targets=heads)
    val = eval_dataset(*arrays["val"], targets=heads)
    preview = (arrays["val"][0][0], arrays["val"][1][0])
    state = fit(build, train, val, config["out"], config, epochs=config["epochs"], monitor="val_mix_f1",
                lr_patience=config["lr_patience"], stop_patience=config["stop_patience"],
                max_minutes=config["max_minutes"], preview=preview, preview_output="mix")
    print(f"best val_mix_f1 {state['best']:.4f}; teacher: {Path(config['out']) / 'best.keras'}")
    if config["deploy"]:
        deploy_teacher(config, arrays)
    return state


def deploy_teacher(config: dict, arrays: dict) -> Path:
    """Copy the run's best.keras to ``--deploy`` (atomically) with a model card: params, FLOPs, how it was trained,
    and the validation report of its mix head at the ODS threshold."""
    import shutil

    from model import deploy_model, infer_preset

    from .card import model_facts, write_card
    from .io import atomic_path
    from .metrics import format_report

    run = Path(config["out"])
    state = json.loads((run / "state.json").read_text())
    best = load_keras_model(run / "best.keras")
    report = choose_threshold(deploy_model(best, head="mix", temperature=1.0), *arrays["val"],
                              distance=config["distance"])
    print("teacher (mix head) on validation at the ODS threshold:\n" + format_report(report))
    dest = Path(config["deploy"])
    with atomic_path(dest) as tmp:
        shutil.copyfile(run / "best.keras", tmp)
    info = {"kind": "MCFF-L teacher, four heads (h, x, y, mix); engines and evaluate.py use the mix head",
            "output": "dict of crack probabilities h, x, y, mix (N, H, W, 2)",
            "input": "RGB, scaled to [-1, 1], H and W padded to multiples of 4 (crackseg.preprocess.prepare)",
            **model_facts(best, config["profile_size"]), "preset": config["preset"],
            "architecture": asdict(infer_preset(best)), "loss": config["loss"], **recipe_facts(config),
            **data_facts(config, arrays["splits"]), **validation_facts(report),
            "run": str(run), "epochs": state["epoch"], "best_val_mix_f1": state["best"]}
    card = write_card(dest, info)
    print(f"teacher: {dest} (threshold {report['ods_threshold']:.2f}), card {card}")
    return dest


def data_facts(config: dict, splits: dict) -> dict:
    """What a model card says about the training data: roots, split lists (or seeded split) and image counts."""
    lists = _lists(config["lists"])
    return {"data": config["data"],
            "splits": ({s: str(Path(lists, f"{s}.txt")) for s in ("train", "val")} if lists
                       else f"seeded split: val_fraction={config['val_fraction']}, seed={config['seed']}"),
            "images": {s: len(v) for s, v in splits.items()}}


def recipe_facts(config: dict) -> dict:
    """What a model card says about the optimisation, including the weights it started from (fine-tuning)."""
    start = None
    if config["init"]:
        start = {"path": config["init"], "sha256": config.get("init_sha256")}
    return {k: config[k] for k in ("optimizer", "lr", "batch_size", "crop", "dilate")} | {"initial_weights": start}


def with_initial_weights(config: dict) -> dict:
    """``config`` with ``init`` / ``init_sha256`` as at the run's first launch. The hash is taken when the run
    starts, because ``--deploy`` may later overwrite that same file; a resumed run keeps what its config.json says
    (its weights come from last.keras, not from today's ``--init``)."""
    from .io import sha256

    run = Path(config["out"])
    if (run / "state.json").is_file() and (run / "config.json").is_file():
        saved = json.loads((run / "config.json").read_text())
        return {**config, "init": saved.get("init", ""), "init_sha256": saved.get("init_sha256")}
    init = Path(config["init"]) if config["init"] else None
    return {**config, "init_sha256": sha256(init) if init and init.is_file() else None}


def validation_facts(report: dict) -> dict:
    """A model card's threshold (ODS on validation) and the validation metrics there."""
    return {"threshold": report["ods_threshold"],
            "validation": {k: report[k] for k in ("images", "strict", "tolerant", "ods_f1", "ois_f1", "miou")}}


# ---------------------------------------------------------------------------------------------- Train_2 and Train_3
import numpy as np  # noqa: E402


def load_keras_model(path: str | Path) -> keras.Model:
    """A saved .keras model (custom layers, losses and metrics registered by importing the package); one line if
    the file is missing or not a Keras model."""
    import model  # noqa: F401  (registers the network's custom layers)

    from . import keras_metrics, losses  # noqa: F401  (register the training objects saved with checkpoints)

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: {path}: model file not found")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
        raise SystemExit(f"error: {path}: cannot load Keras model ({type(exc).__name__}: {exc})") from None


def warm_start(model: keras.Model, path: str) -> keras.Model:
    """Copy the weights of a saved MCFF-L model of the same architecture (a run's best.keras, a deployed student
    or teacher: the mix head holds all three paths) into ``model``, to fine-tune instead of starting at random."""
    from model import copy_weights

    source = load_keras_model(path)
    try:
        copied = copy_weights(source, model)
    except ValueError as exc:
        raise SystemExit(f"error: --init={path}: {exc}") from None
    print(f"initial weights: {copied} layers from {path}")
    return model


def make_soft_labels(config: dict) -> list[dict]:
    """Train_2: the teacher's four heads softened at T, written per split (resumable, refusing stale labels)."""
    from .data import load_split, read_image
    from .distill import HEADS as STORED_HEADS, LabelError, write_split
    from .io import sha256
    from .preprocess import prepare

    teacher_path = Path(config["teacher"])
    try:
        teacher_logits = logits_model_of(load_keras_model(teacher_path))  # outputs in model.HEADS order
    except ValueError as exc:  # not an MCFF-L network
        raise SystemExit(f"error: {teacher_path}: {exc}") from None
    teacher_sha = sha256(teacher_path)
    splits = load_split(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"])

    def predict_logits(image: np.ndarray) -> dict[str, np.ndarray]:
        x, _ = prepare(image)  # padded to a multiple of 4; write_split crops the logits back
        outs = teacher_logits(x, training=False)
        return {h: keras.ops.convert_to_numpy(o) for h, o in zip(STORED_HEADS, outs)}

    reports = []
    for split in config["splits"]:
        if split not in splits:
            raise SystemExit(f"error: --splits: unknown split {split!r}; choose from {tuple(splits)}")
        if not splits[split]:
            print(f"{split}: no images in this split, skipped")
            continue
        try:
            report = write_split(predict_logits, splits[split], read_image, config["out"], split, teacher_path,
                                 teacher_sha, config["temperature"], config["rebuild"])
        except LabelError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"{split}: {report['written']} written, {report['skipped']} already there -> {report['dir']}")
        reports.append(report)
    return reports


def predict_crack(deployed: keras.Model, image: np.ndarray) -> np.ndarray:
    """Crack probability (H, W) float32 of one RGB uint8 image through a one-output deployable Keras model."""
    from .preprocess import crop_back, prepare

    x, size = prepare(image)
    return crop_back(keras.ops.convert_to_numpy(deployed(x, training=False)), size)[0].astype(np.float32)


def choose_threshold(deployed: keras.Model, images: list, masks: list, distance: int = 2) -> dict:
    """Validation report of ``deployed`` at the threshold with the best dataset F1 (ODS)."""
    from .metrics import evaluate_arrays

    probs = [predict_crack(deployed, image) for image in images]
    ods = evaluate_arrays(probs, masks, 0.5, distance)["ods_threshold"]  # the sweep does not depend on 0.5
    return evaluate_arrays(probs, masks, ods, distance)


def train_student(config: dict) -> dict:
    """Train_3: the student on five outputs (h, x, y, mix at T1 + real = mix at T2), best by val_real_f1, then the
    deployable student (mix head at T2 only) + its model card with the ODS threshold from validation."""
    from model import build_logits_model, deploy_model, infer_preset, with_heads

    from .card import model_facts, write_card
    from .distill import LabelError, kd_losses, kd_targets, load_split_labels, resolve_strategy, student_heads
    from .io import atomic_path
    from .metrics import format_report

    try:
        kd = resolve_strategy(config["strategy"], config["t0"], config["t1"], config["t2"])
    except ValueError as exc:
        raise SystemExit(f"error: --strategy/--t0/--t1/--t2: {exc}") from None
    t0, t1, t2 = kd["t0"], kd["t1"], kd["t2"]
    # resolved, so resume checks compare real temperatures
    config = with_initial_weights({**config, "t0": t0, "t1": t1, "t2": t2})
    arrays = load_training_data(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"],
                                config["dilate"])
    splits = arrays["splits"]
    train_soft = val_soft = None
    teacher = None
    if kd["distill"]:
        try:
            train_soft, manifest = load_split_labels(config["labels"], "train", splits["train"], t1)
            val_soft, _ = load_split_labels(config["labels"], "val", splits["val"], t1, manifest["teacher_sha256"])
        except LabelError as exc:
            raise SystemExit(f"error: {exc}") from None
        teacher = {"path": manifest["teacher"], "sha256": manifest["teacher_sha256"], "labels": str(config["labels"])}
        print(f"soft labels at T={t1:g} from teacher {manifest['teacher']} ({manifest['teacher_sha256'][:12]})")
    print(f"strategy {kd['strategy']}: T0={t0:g} T1={t1:g} T2={t2:g}, alpha={config['alpha']}")
    # Same seed, same initial weights: a KD run and its no-teacher baseline differ only in their targets.
    keras.utils.set_random_seed(config["seed"])
    overrides = {k: config[k] for k in ("width", "blocks", "block")}

    def build() -> keras.Model:
        student = with_heads(build_logits_model(config["preset"], input_size=None, **overrides),
                             student_heads(t1, t2))
        if config["init"]:
            warm_start(student, config["init"])
        losses, weights = kd_losses(config["loss"], config["crack_weight"], config["alpha"], t1,
                                    config["t1_squared"])
        return compile_model(student, losses, config["lr"], config["optimizer"], loss_weights=weights,
                             metrics={"real": crack_metrics(config["threshold"], config["distance"])})

    print_profile(config["preset"], config["profile_size"], overrides)
    if kd["distill"]:
        to_targets = lambda x, y, soft: (x, kd_targets(y, soft, t0))  # noqa: E731
    else:
        to_targets = lambda x, y: (x, kd_targets(y, None, t0))  # noqa: E731
    train = train_dataset(*arrays["train"], crop=config["crop"], batch_size=config["batch_size"],
                          seed=config["seed"], extra=train_soft, targets=to_targets)
    val = eval_dataset(*arrays["val"], extra=val_soft, targets=to_targets)
    preview = (arrays["val"][0][0], arrays["val"][1][0])
    state = fit(build, train, val, config["out"], config, epochs=config["epochs"], monitor="val_real_f1",
                lr_patience=config["lr_patience"], stop_patience=config["stop_patience"],
                max_minutes=config["max_minutes"], preview=preview, preview_output="real")
    run = Path(config["out"])
    print(f"best val_real_f1 {state['best']:.4f}; student run: {run / 'best.keras'}")

    best = load_keras_model(run / "best.keras")
    deployed = deploy_model(best, head="mix", temperature=t2)
    deploy_path = Path(config["deploy"])
    with atomic_path(deploy_path) as tmp:
        deployed.save(tmp)
    report = choose_threshold(deployed, *arrays["val"], distance=config["distance"])
    print("validation at the ODS threshold:\n" + format_report(report))
    info = {
        "kind": "MCFF-L student, mix head only", "output": "crack probability (N, H, W, 1)",
        "input": "RGB, scaled to [-1, 1], H and W padded to multiples of 4 (crackseg.preprocess.prepare)",
        **model_facts(deployed, config["profile_size"]),
        "preset": config["preset"], "architecture": asdict(infer_preset(best)),
        "strategy": kd["strategy"], "t0": t0, "t1": t1, "t2": t2, "alpha": config["alpha"],
        "soft_loss_scale": t1 ** 2 if config["t1_squared"] else 1.0, "loss": config["loss"], **recipe_facts(config),
        "teacher": teacher, **data_facts(config, splits), **validation_facts(report),
        "run": str(run), "epochs": state["epoch"], "best_val_real_f1": state["best"],
    }
    card = write_card(deploy_path, info)
    print(f"deployable student: {deploy_path} (threshold {report['ods_threshold']:.2f}), card {card}")
    return {**state, "deploy": str(deploy_path), "card": str(card), "validation": report}
