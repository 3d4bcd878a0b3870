"""The bodies of Train_1_Step and Train_3_Step: wiring of data, model, loss and the shared loop."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import keras

from model import HEADS, build_model, is_teacher, load_encoder_weights, logits_model_of, pretrained_facts, profile
from model.pretrained import PretrainedError
from model.profile import format_profile

from .data import load_training_data
from .inputs import train_dataset
from .keras_io import load_keras_model  # the one Keras loader (also for tests and scripts)
from .keras_metrics import crack_metrics
from .losses import make_loss
from .training import BalancedValidation, TrainingError, compile_model, fit, parse_floors, predict_probabilities


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


def training_input(config: dict, arrays: dict, extra: list | None = None, targets=None):
    """The training batches every Train step uses: per-dataset sampling, tiles per epoch, crops and augmentation
    from the config (``sampling``, ``samples_per_epoch``, ``crop``, ``augment``)."""
    from .data import Augmentation

    return train_dataset(*arrays["train"], crop=config["crop"], batch_size=config["batch_size"], seed=config["seed"],
                         extra=extra, targets=targets, datasets=arrays["datasets"]["train"],
                         sampling=config["sampling"], samples_per_epoch=config["samples_per_epoch"],
                         augmentation=Augmentation.parse(config["augment"]))


def describe_input(batches) -> None:
    """One line: each dataset's share of the training tiles and the crop it is cut into."""
    if getattr(batches, "sampling", None):
        print(f"sampling {batches.sampling}: {len(batches)} steps of {batches.batch_size} tiles per epoch; "
              + ", ".join(f"{name} {share:.0%} ({batches.pieces[name]}px"
                          + (" x4)" if batches.pieces[name] != batches.crop else ")")
                          for name, share in batches.shares.items()))


def train_teacher(config: dict) -> dict:
    """Train_1: a preset with the loss on all four heads, best checkpoint by the mix head's ``val_score``."""
    config = with_initial_weights({**config, "preset": resolve_preset_name(config["preset"])})
    arrays = load_training_data(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"],
                                config["dilate"])
    overrides = {k: config[k] for k in ("width", "blocks", "block")}
    pretrained = is_teacher(config["preset"])
    if pretrained and any(v is not None for v in overrides.values()):
        raise TrainingError(f"--preset={config['preset']} is a pretrained teacher: --width / --blocks / --block "
                            "do not apply")
    print_profile(config["preset"], config["profile_size"], overrides)
    heads = lambda x, y: (x, {h: y for h in HEADS})  # noqa: E731
    train = training_input(config, arrays, targets=heads)
    describe_input(train)

    def build() -> keras.Model:
        model = build_model(config["preset"], input_size=None, **overrides)
        if config["init"]:
            warm_start(model, config["init"])
        elif pretrained:
            try:
                layers_set = load_encoder_weights(model)
            except PretrainedError as exc:
                raise TrainingError(str(exc)) from None
            print(f"pretrained encoder: {layers_set} layers from {pretrained_facts(config['preset'])['package']}")
        loss = make_loss(config["loss"], config["crack_weight"], config["pos_weight"])
        frozen_steps = int(config.get("encoder_warmup", 0) * len(train)) if pretrained else 0
        return compile_model(model, {h: loss for h in HEADS}, config["lr"], config["optimizer"],
                             metrics={"mix": crack_metrics(config["threshold"], config["distance"])},
                             encoder_lr_scale=config.get("encoder_lr_scale", 1.0) if pretrained else 1.0,
                             encoder_frozen_steps=frozen_steps)

    validator = BalancedValidation(*arrays["val"], arrays["datasets"]["val"], "mix",
                                   parse_floors(config.get("floor", "")))
    preview = (arrays["val"][0][0], arrays["val"][1][0])
    state = fit(build, train, None, config["out"], config, epochs=config["epochs"], monitor="val_score",
                lr_patience=config["lr_patience"], stop_patience=config["stop_patience"],
                max_minutes=config["max_minutes"], preview=preview, preview_output="mix", validator=validator)
    print(f"best val_score {state['best']:.4f}; teacher: {Path(config['out']) / 'best.keras'}")
    if config["deploy"]:
        deploy_teacher(config, arrays)
    return state


def deploy_teacher(config: dict, arrays: dict) -> Path:
    """Copy the run's best.keras to ``--deploy`` (atomically) with a model card: params, FLOPs, how it was trained,
    and the validation report of its mix head at the balanced threshold (``choose_threshold``)."""
    import shutil

    from model import deploy_model, infer_preset

    from .card import model_facts, write_card
    from .io import atomic_path
    from .metrics import format_report

    run = Path(config["out"])
    state = json.loads((run / "state.json").read_text())
    best = load_keras_model(run / "best.keras")
    report = choose_threshold(deploy_model(best, head="mix", temperature=1.0), *arrays["val"],
                              arrays["datasets"]["val"], distance=config["distance"],
                              floors=parse_floors(config.get("floor", "")))
    print(f"teacher (mix head) on validation at the balanced threshold {report['threshold']:.2f}:\n"
          + format_report(report))
    dest = Path(config["deploy"])
    with atomic_path(dest) as tmp:
        shutil.copyfile(run / "best.keras", tmp)
    pretrained = is_teacher(config["preset"])
    kind = (f"{config['preset']}: pretrained {infer_preset(best).encoder} encoder + U-Net decoder" if pretrained
            else "MCFF-L teacher")
    info = {"kind": f"{kind}, four heads (h, x, y, mix); engines and evaluate.py use the mix head",
            "output": "dict of crack probabilities h, x, y, mix (N, H, W, 2)",
            "input": "RGB, scaled to [-1, 1], H and W padded to multiples of 4 (crackseg.preprocess.prepare)"
                     + ("; the model pads to multiples of 32 inside and crops its outputs back" if pretrained else ""),
            "pad_multiple": infer_preset(best).pad_multiple if pretrained else 4,
            **({"pretrained": pretrained_facts(config["preset"]),
                "encoder_lr_scale": config.get("encoder_lr_scale"), "encoder_warmup": config.get("encoder_warmup")}
               if pretrained else {}),
            **model_facts(best, config["profile_size"]), "preset": config["preset"],
            "architecture": asdict(infer_preset(best)), "loss": config["loss"], **recipe_facts(config),
            **data_facts(config, arrays["splits"]),
            **validation_facts(report, parse_floors(config.get("floor", ""))),
            "run": str(run), "epochs": state["epoch"], "best_val_score": state["best"]}
    card = write_card(dest, info)
    print(f"teacher: {dest} (threshold {report['threshold']:.2f}), card {card}")
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
    keys = ("recipe", "optimizer", "lr", "batch_size", "crop", "dilate", "sampling", "samples_per_epoch", "augment",
            "crack_weight", "pos_weight")
    return {k: config.get(k) for k in keys} | {"initial_weights": start}


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


THRESHOLD_RULE = "maximises the mean over validation datasets of their strict F1 (crackseg.metrics.balanced_threshold)"
FLOOR_RULE = ", among the thresholds where {floors}"


def validation_facts(report: dict, floors: dict[str, float] | None = None) -> dict:
    """A model card's threshold (the balanced rule on validation, with its ``floors`` when given) and the validation
    metrics there, overall and per dataset, with each dataset's own best threshold."""
    keys = ("images", "strict", "tolerant", "ods_f1", "ods_threshold", "ois_f1", "miou")
    validation = {k: report[k] for k in keys}
    if "by_dataset" in report:
        validation["by_dataset"] = {name: {k: part[k] for k in keys} for name, part in report["by_dataset"].items()}
    rule = THRESHOLD_RULE
    if floors:
        kept = (report.get("balanced") or {}).get("floors_met", True)
        rule += FLOOR_RULE.format(floors=", ".join(f"{k} >= {v:g}" for k, v in floors.items()))
        rule += "" if kept else " (no threshold kept them: the unconstrained choice)"
    return {"threshold": report["threshold"], "threshold_rule": rule, "validation": validation,
            **({"floor": floors} if floors else {})}


# ---------------------------------------------------------------------------------------------- Train_2 and Train_3
import numpy as np  # noqa: E402


def init_temperature(path: str | Path) -> float | None:
    """The T2 that ``path`` was trained and deployed at: from the card beside a deployed student, or from the run's
    config.json for a run's checkpoint (``RUN/best.keras``); None when neither says."""
    from .card import CardError, read_card

    path = Path(path)
    try:
        t2 = read_card(path).get("t2")
    except CardError:
        try:
            t2 = json.loads((path.parent / "config.json").read_text()).get("t2")
        except (OSError, ValueError):
            t2 = None
    return float(t2) if isinstance(t2, (int, float)) else None


def describe_loss_weights(alpha: float, t1: float, t1_squared: bool = True) -> str:
    """The per-output loss weights of ``distill.kd_losses`` in words: alpha * s / 4 on each of the four soft heads
    (s = T1^2 with ``t1_squared``), 1 - alpha on the deployed ``real`` head."""
    soft = alpha * (float(t1) ** 2 if t1_squared else 1.0) / 4
    return f"loss weights: h, x, y, mix {soft:.4g} each, real {1.0 - alpha:.4g}"


def warn_auxiliary_fine_tune(init: str, distill: bool, alpha: float) -> None:
    """One warning line when a fine-tune without a teacher puts alpha of the loss on the four auxiliary heads (they
    then learn the ground truth): the deployed head gets only 1 - alpha (measured: DeepCrack's own best 0.804 ->
    0.780 at alpha 0.9 against 0.792 at alpha 0 after one 500-tile epoch, RESULTS.md)."""
    if init and not distill and alpha > 0:
        print(f"warning: fine-tuning {init} without a teacher at alpha={alpha:g}: the h, x, y, mix heads get "
              f"{alpha:g} of the loss and the deployed head {1 - alpha:g}; --alpha=0 trains the deployed head alone",
              flush=True)


def warn_temperature_change(init: str, t2: float) -> None:
    """One warning line when fine-tuning changes the deployed head's temperature: a student deployed at T2 = 10
    fine-tuned at T2 = 1 sees its probabilities saturate (logits 10x as large), and its first epochs re-learn the
    calibration instead of the data (measured: DeepCrack strict F1 0.80 -> 0.62 after one 500-tile epoch)."""
    before = init_temperature(init) if init else None
    if before is not None and abs(before - t2) > 1e-9:
        print(f"warning: --init={init} was trained at T2={before:g}, this run uses T2={t2:g}: its logits are "
              f"{before / t2:g}x too large at first; pass --t2={before:g} (and --t1) to keep its calibration",
              flush=True)


INTERPOLATION_SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)


def interpolation_alphas(text: str, init: str) -> list[float]:
    """``--interpolate``: "1" (the trained weights), a number in 0..1, a comma list of them (the sweep to choose
    from), or "auto" (0, 0.25, 0.5, 0.75, 1); anything but "1" needs --init."""
    text = str(text).strip().lower()
    if text == "auto":
        alphas = list(INTERPOLATION_SWEEP)
    else:
        alphas = []
        for part in text.split(","):
            try:
                alphas.append(float(part))
            except ValueError:
                alphas.append(float("nan"))
        if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
            raise TrainingError(f"--interpolate={text}: expected auto, a number in 0..1 (1: the trained weights) or "
                                f"a comma list of them")
    if alphas != [1.0] and not init:
        raise TrainingError(f"--interpolate={text}: interpolates from --init, and no --init was given")
    return alphas


def interpolation_sweep(start: keras.Model, trained: keras.Model, target: keras.Model, alphas: list[float],
                        images: list, masks: list, datasets: list[str], floors: dict[str, float] | None = None
                        ) -> list[dict]:
    """For each ``a`` of ``alphas``: ``target`` set to ``(1 - a) * start + a * trained`` (same-named layers), scored
    on the validation images by the card's threshold rule (``floors`` included: a score of mean - 1 when no
    threshold keeps them). One row per ``a``: score, threshold, floors_met, each dataset's F1 there and its own
    best, and with floors the choice without them (``without_floor``). ``target`` is left at the last ``a``."""
    from model import interpolate_weights

    from .metrics import balanced_threshold, dataset_curves, rule_score

    rows = []
    for alpha in alphas:
        interpolate_weights(start, trained, alpha, target)
        curves = dataset_curves(predict_probabilities(target, images), masks, datasets)
        choice = balanced_threshold(curves, floors)
        rows.append({"alpha": alpha, "score": rule_score(choice),
                     "mean_f1": choice["mean_f1"], "threshold": choice["threshold"],
                     "floors_met": choice["floors_met"],
                     "f1": {k: v["f1"] for k, v in choice["by_dataset"].items()},
                     "best_f1": {k: v["best_f1"] for k, v in choice["by_dataset"].items()}})
        if floors:  # the same curves without the floors: what the floors cost
            free = balanced_threshold(curves)
            rows[-1]["without_floor"] = {"threshold": free["threshold"], "mean_f1": free["mean_f1"],
                                         "f1": {k: v["f1"] for k, v in free["by_dataset"].items()}}
        print(f"interpolate a={alpha:.2f}: score {rows[-1]['score']:.4f} at t={choice['threshold']:.2f}; "
              + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1]["f1"].items()), flush=True)
    return rows


def interpolate_deployed(deployed: keras.Model, trained_copy: keras.Model, config: dict, alphas: list[float],
                         arrays: dict, floors: dict[str, float]) -> dict:
    """WiSE-FT for a fine-tune: set ``deployed`` (the trained student; ``trained_copy``: a second one, unchanged) to
    ``(1 - a) * init + a * trained`` for the ``a`` of ``alphas`` with the best validation score
    (``interpolation_sweep``; a tie goes to the larger ``a``). Interpolating towards the weights a fine-tune started
    from keeps much of what they knew (their datasets) while keeping much of the fine-tune's gain. Returns the
    card's ``interpolation`` record."""
    from model import interpolate_weights

    from .io import sha256

    init = Path(config["init"])
    if not init.is_file() or (config.get("init_sha256") and sha256(init) != config["init_sha256"]):
        raise TrainingError(f"--init={init}: not the file this run started from (its sha256 is in "
                            f"{Path(config['out']) / 'config.json'}); cannot interpolate towards it")
    start = load_keras_model(init)
    sweep = interpolation_sweep(start, trained_copy, deployed, alphas, *arrays["val"], arrays["datasets"]["val"],
                                floors)
    chosen = max(sweep, key=lambda row: (row["score"], row["alpha"]))
    interpolate_weights(start, trained_copy, chosen["alpha"], deployed)
    print(f"deploying (1 - a) * {init} + a * the trained weights, a = {chosen['alpha']:.2f}", flush=True)
    return {"alpha": chosen["alpha"], "start": str(init), "start_sha256": config.get("init_sha256"),
            "rule": "the a with the best validation score (the card's threshold rule); ties: the larger a",
            "sweep": sweep}


def warm_start(model: keras.Model, path: str) -> keras.Model:
    """Copy the weights of a saved MCFF-L model of the same architecture (a run's best.keras, a deployed student
    or teacher: the mix head holds all three paths) into ``model``, to fine-tune instead of starting at random."""
    from model import copy_weights

    source = load_keras_model(path)
    try:
        copied = copy_weights(source, model)
    except ValueError as exc:
        raise TrainingError(f"--init={path}: {exc}") from None
    print(f"initial weights: {copied} layers from {path}")
    return model


def make_soft_labels(config: dict) -> list[dict]:
    """Train_2: the teacher's four heads softened at T, written per split (resumable, refusing stale labels).
    ``teacher`` may name several files (comma-separated: an ensemble, logits averaged per head); ``tta`` averages
    the 8 flips / 90-degree rotations too; ``dtype`` is the storage (float32 | float16)."""
    from .data import dataset_of, load_split, read_image, read_mask
    from .distill import HEADS as STORED_HEADS, LabelError, label_quality, label_source, record_quality, write_split
    from .io import sha256
    from .preprocess import prepare

    teacher_paths = [Path(p.strip()) for p in str(config["teacher"]).split(",") if p.strip()]
    if not teacher_paths:
        raise TrainingError("--teacher: no model file given")
    networks = []
    for teacher_path in teacher_paths:
        try:
            networks.append(logits_model_of(load_keras_model(teacher_path)))  # outputs in model.HEADS order
        except ValueError as exc:  # not an MCFF-L network
            raise TrainingError(f"{teacher_path}: {exc}") from None
    source = label_source([(p, sha256(p)) for p in teacher_paths], "d4" if config.get("tta") else "none")
    dtype = config.get("dtype", "float32")
    splits = load_split(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"])

    def predictor(network):
        def predict_logits(image: np.ndarray) -> dict[str, np.ndarray]:
            x, _ = prepare(image)  # padded to a multiple of 4; write_split crops the logits back
            # a compiled predict step (one graph per image size; the datasets have a handful) runs ~3x faster
            # than calling the network eagerly on these small images
            outs = network.predict_on_batch(x)
            return {h: np.asarray(o) for h, o in zip(STORED_HEADS, outs)}
        return predict_logits

    predict_logits = [predictor(n) for n in networks] if len(networks) > 1 else predictor(networks[0])

    reports = []
    for split in config["splits"]:
        if split not in splits:
            raise TrainingError(f"--splits: unknown split {split!r}; choose from {tuple(splits)}")
        if not splits[split]:
            print(f"{split}: no images in this split, skipped")
            continue
        try:
            report = write_split(predict_logits, splits[split], read_image, config["out"], split, source["teacher"],
                                 source["teacher_sha256"], config["temperature"], config["rebuild"],
                                 tta=source["tta"], dtype=dtype, teachers=source["teachers"])
        except (LabelError, ValueError) as exc:
            raise TrainingError(str(exc)) from None
        print(f"{split}: {report['written']} written, {report['skipped']} already there -> {report['dir']}")
        if split == "val":  # the teacher as the student will see it, on the scale of Train_3's val_score
            try:
                report["quality"] = label_quality(report["dir"], splits[split], read_mask,
                                                  [dataset_of(s) for s in splits[split]])
                record_quality(report["dir"], report["quality"])
            except LabelError as exc:
                raise TrainingError(str(exc)) from None
            print(format_quality(report["quality"], source["tta"]))
        reports.append(report)
    return reports


def format_quality(quality: dict, tta: str = "none") -> str:
    """One line: the val labels' mean strict F1 over datasets at the balanced threshold, and each dataset's."""
    parts = ", ".join(f"{name} {part['f1']:.3f} (own best {part['best_f1']:.3f})"
                      for name, part in quality["by_dataset"].items())
    return (f"val labels (mix head{', TTA ' + tta if tta != 'none' else ''}) against the ground truth: mean strict "
            f"F1 {quality['mean_f1']:.4f} at t={quality['threshold']:.2f}; {parts}")


def choose_threshold(deployed: keras.Model, images: list, masks: list, datasets: list[str] | None = None,
                     distance: int = 2, floors: dict[str, float] | None = None) -> dict:
    """Validation report of ``deployed`` at the balanced threshold (the mean of the datasets' strict F1 is best,
    among the thresholds that keep ``floors``; with one dataset that is its ODS threshold), with ``by_dataset``
    reports at that threshold and ``balanced`` (each dataset's own best threshold and F1)."""
    from .evaluation import DatasetReports
    from .metrics import balanced_threshold, dataset_curves

    datasets = list(datasets) if datasets is not None else ["data"] * len(images)
    probs = predict_probabilities(deployed, images)
    choice = balanced_threshold(dataset_curves(probs, masks, datasets), floors)
    # evaluate.py's accumulator: the pooled report, and one per dataset when there are several
    reports = DatasetReports(choice["threshold"], distance, by_dataset=len(set(datasets)) > 1)
    for prob, mask, name in zip(probs, masks, datasets):
        reports.update(prob, mask, name)
    return {**reports.result(), "balanced": choice}


def train_student(config: dict) -> dict:
    """Train_3: the student on five outputs (h, x, y, mix at T1 + real = mix at T2), best by ``val_score`` of the real
    head (``BalancedValidation``), then the deployable student (mix head at T2 only) + its model card with the
    balanced threshold from validation."""
    from model import build_logits_model, deploy_model, infer_preset, with_heads

    from .card import model_facts, write_card
    from .distill import (LabelError, kd_losses, kd_targets, load_split_labels, resolve_strategy,
                          student_heads)
    from .io import atomic_path
    from .metrics import format_report

    try:
        kd = resolve_strategy(config["strategy"], config["t0"], config["t1"], config["t2"])
    except ValueError as exc:
        raise TrainingError(f"--strategy/--t0/--t1/--t2: {exc}") from None
    from .losses import LOSSES

    for key in ("loss", "soft_loss"):
        if config.get(key) and config[key] not in LOSSES:
            raise TrainingError(f"--{key}: unknown loss {config[key]!r}; choose from {', '.join(sorted(LOSSES))}")
    t0, t1, t2 = kd["t0"], kd["t1"], kd["t2"]
    # resolved, so resume checks compare real temperatures
    config = with_initial_weights({**config, "t0": t0, "t1": t1, "t2": t2})
    warn_temperature_change(config["init"], t2)
    interpolation_alphas(config.get("interpolate", "1"), config["init"])  # bad values fail now, not after training
    parse_floors(config.get("floor", ""))
    arrays = load_training_data(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"],
                                config["dilate"])
    splits = arrays["splits"]
    train_soft = None
    teacher = None
    if kd["distill"]:
        try:
            shift = float(config.get("label_shift") or 0.0)
            train_soft, manifest = load_split_labels(config["labels"], "train", splits["train"], t1, shift=shift)
        except LabelError as exc:
            raise TrainingError(str(exc)) from None
        teacher = {"path": manifest["teacher"], "sha256": manifest["teacher_sha256"], "labels": str(config["labels"]),
                   "teachers": manifest.get("teachers"), "tta": manifest.get("tta", "none"),
                   "label_dtype": manifest.get("dtype", "float32"), "label_shift": shift,
                   "label_temperature": float(manifest["temperature"])}
        made_at = float(manifest["temperature"])
        print(f"soft labels at T={t1:g} from teacher {manifest['teacher']} ({manifest['teacher_sha256'][:12]})"
              + (f", re-softened from the T={made_at:g} they were made at" if made_at != t1 else ""))
        if shift:
            print(f"soft labels shifted by {shift:+g} logits (their decision boundary moves with it)")
    print(f"strategy {kd['strategy']}: T0={t0:g} T1={t1:g} T2={t2:g}, alpha={config['alpha']}; "
          + describe_loss_weights(config["alpha"], t1, config["t1_squared"]))
    warn_auxiliary_fine_tune(config["init"], kd["distill"], config["alpha"])
    # Same seed, same initial weights: a KD run and its no-teacher baseline differ only in their targets.
    keras.utils.set_random_seed(config["seed"])
    overrides = {k: config[k] for k in ("width", "blocks", "block")}

    def build() -> keras.Model:
        student = with_heads(build_logits_model(config["preset"], input_size=None, **overrides),
                             student_heads(t1, t2))
        if config["init"]:
            warm_start(student, config["init"])
        losses, weights = kd_losses(config["loss"], config["crack_weight"], config["alpha"], t1,
                                    config["t1_squared"], config["pos_weight"], config.get("soft_loss", ""))
        return compile_model(student, losses, config["lr"], config["optimizer"], loss_weights=weights,
                             metrics={"real": crack_metrics(config["threshold"], config["distance"])})

    print_profile(config["preset"], config["profile_size"], overrides)
    if kd["distill"]:
        to_targets = lambda x, y, soft: (x, kd_targets(y, soft, t0))  # noqa: E731
    else:
        to_targets = lambda x, y: (x, kd_targets(y, None, t0))  # noqa: E731
    train = training_input(config, arrays, extra=train_soft, targets=to_targets)
    describe_input(train)
    # Validation scores the real head (the one deployed) against the ground truth by the card's threshold rule.
    validator = BalancedValidation(*arrays["val"], arrays["datasets"]["val"], "real",
                                   parse_floors(config.get("floor", "")))
    preview = (arrays["val"][0][0], arrays["val"][1][0])
    state = fit(build, train, None, config["out"], config, epochs=config["epochs"], monitor="val_score",
                lr_patience=config["lr_patience"], stop_patience=config["stop_patience"],
                max_minutes=config["max_minutes"], preview=preview, preview_output="real", validator=validator)
    run = Path(config["out"])
    print(f"best val_score {state['best']:.4f}; student run: {run / 'best.keras'}")

    best = load_keras_model(run / "best.keras")
    deployed = deploy_model(best, head="mix", temperature=t2)
    floors = parse_floors(config.get("floor", ""))
    alphas = interpolation_alphas(config.get("interpolate", "1"), config["init"])
    interpolation = None
    if alphas != [1.0]:
        interpolation = interpolate_deployed(deployed, deploy_model(best, head="mix", temperature=t2), config, alphas,
                                             arrays, floors)
    deploy_path = Path(config["deploy"])
    with atomic_path(deploy_path) as tmp:
        deployed.save(tmp)
    report = choose_threshold(deployed, *arrays["val"], arrays["datasets"]["val"], distance=config["distance"],
                              floors=floors)
    print(f"validation at the balanced threshold {report['threshold']:.2f}:\n" + format_report(report))
    info = {
        "kind": "MCFF-L student, mix head only", "output": "crack probability (N, H, W, 1)",
        "input": "RGB, scaled to [-1, 1], H and W padded to multiples of 4 (crackseg.preprocess.prepare)",
        **model_facts(deployed, config["profile_size"]),
        "preset": config["preset"], "architecture": asdict(infer_preset(best)),
        "strategy": kd["strategy"], "t0": t0, "t1": t1, "t2": t2, "alpha": config["alpha"],
        "soft_loss_scale": t1 ** 2 if config["t1_squared"] else 1.0, "loss": config["loss"], **recipe_facts(config),
        "teacher": teacher, **data_facts(config, splits), **validation_facts(report, floors),
        **({"interpolation": interpolation} if interpolation else {}),
        "run": str(run), "epochs": state["epoch"], "best_val_score": state["best"],
    }
    card = write_card(deploy_path, info)
    print(f"deployable student: {deploy_path} (threshold {report['threshold']:.2f}), card {card}")
    return {**state, "deploy": str(deploy_path), "card": str(card), "validation": report}
