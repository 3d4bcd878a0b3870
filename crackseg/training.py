"""The training loop Train_1 and Train_3 share: run folder, callbacks, atomic checkpoints, resume, plots.

A run folder holds ``config.json``, ``last.keras`` (model + optimizer, every epoch), ``best.keras`` (best
validation score), ``state.json`` (finished epochs, history, callback state), ``log.csv``, ``curves.png``,
``previews/epoch_NNN.png`` and ``tensorboard/``. Re-running the same command resumes after the last finished epoch.
"""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import sys
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from .errors import TrainingError  # raised here; defined without dependencies
from .io import atomic_path, atomic_write_json, atomic_write_text
from .keras_io import predict_probabilities  # the one Keras predict path
from .metrics import balanced_threshold, dataset_curves, rule_score
from .preprocess import prepare
from .viz import plot_curves, save_image, side_by_side

# Temporary files of crackseg.io.atomic_path ('.last.k3j9x.keras') that a kill during a save leaves behind.
RUN_OUTPUTS = ("last", "best", "state", "config", "log", "curves")

# Config keys that define the network; resuming with different values would load the wrong model.
MODEL_KEYS = ("preset", "width", "blocks", "block", "loss", "strategy", "t0", "t1", "t2")


def distribution_strategy():
    """TensorFlow: MirroredStrategy over all GPUs when there is more than one, else the default (single device).
    Other backends (JAX, PyTorch): None, one device."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def save_without_optimizer(model: keras.Model, path: str | Path) -> None:
    """Save ``model``'s architecture and weights only, atomically: best.keras is a deliverable, never resumed from,
    and the optimizer's slots would triple its size (44 MB instead of 15 MB for teacher_cpu)."""
    # A new functional model over the same layers: nothing copied, and not compiled, so no optimizer is saved
    # (keras.models.clone_model would copy the compile state too).
    weights_only = keras.Model(model.input, model.output, name=model.name)
    with atomic_path(path) as tmp:
        weights_only.save(tmp)


def sweep_temporary_files(run: Path) -> list[Path]:
    """Delete the partial temporary files (``.last.<random>.keras`` ...) that a kill during an atomic save left in
    a run folder; only this process writes there, so any such file is stale when a run starts or resumes."""
    stale = [p for stem in RUN_OUTPUTS for p in run.glob(f".{stem}.*") if p.is_file() or p.is_dir()]
    for path in stale:
        if path.is_dir():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def prepare_run(run_dir: str | Path, config: dict) -> tuple[Path, dict | None]:
    """Create the run folder and write config.json; return the saved state of an earlier run (else None).

    Refuses (one line) to resume a run whose network-defining settings differ from ``config``.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    state_file, config_file = run / "state.json", run / "config.json"
    state = None
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        old = json.loads(config_file.read_text()) if config_file.is_file() else {}
        clash = [k for k in MODEL_KEYS if k in old and k in config and old[k] != config[k]]
        if clash:
            raise TrainingError(f"{run} holds a run with different {', '.join(clash)} "
                                f"({', '.join(f'{k}={old[k]!r}' for k in clash)}); pass another --out")
    swept = sweep_temporary_files(run)
    if swept:
        print(f"{run}: removed {len(swept)} partial file(s) left by an interrupted save: "
              + ", ".join(p.name for p in swept[:4]) + (" ..." if len(swept) > 4 else ""))
    atomic_write_json(config_file, config)
    return run, state


class RunLogger(keras.callbacks.Callback):
    """After every epoch, in this order: last.keras, best.keras (if improved), log.csv, curves, preview, and
    state.json last: it marks the epoch finished only once all its files are there. Each file is written
    atomically, so a kill at any moment leaves a resumable run."""

    def __init__(self, run: Path, monitor: str, state: dict | None, callbacks_to_save: list,
                 preview: tuple[np.ndarray, np.ndarray] | None = None, preview_output: str = "mix"):
        super().__init__()
        self.run, self.monitor, self.preview, self.preview_output = run, monitor, preview, preview_output
        self.history: list[dict] = list(state["history"]) if state else []
        self.best = state["best"] if state else -np.inf
        self.saved_callbacks = callbacks_to_save
        self._start = time.time()
        self._saved_state = list(state.get("callbacks", [])) if state else []

    def on_train_begin(self, logs=None):
        # Restore plateau / early-stopping counters here, not in __init__: their own on_train_begin resets them,
        # and this logger comes after them in the callback list.
        for cb, saved in zip(self.saved_callbacks, self._saved_state):
            for k, v in saved.items():
                setattr(cb, k, v)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        row = {"epoch": epoch + 1, **logs, "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
               "seconds": round(time.time() - self._start, 1)}
        self.history.append(row)
        with atomic_path(self.run / "last.keras") as tmp:
            self.model.save(tmp)
        score = logs.get(self.monitor, -np.inf)
        if score > self.best:
            self.best = score
            save_without_optimizer(self.model, self.run / "best.keras")
            print(f"\nepoch {epoch + 1}: {self.monitor} improved to {score:.4f}, saved best.keras")
        self._write_csv()
        plot_curves(self.history, self.run / "curves.png")
        if self.preview is not None:
            image, truth = self.preview
            x, size = prepare(image)
            prob = self.model(x, training=False)[self.preview_output]
            prob = keras.ops.convert_to_numpy(prob)[0, : size[0], : size[1], 1]
            save_image(self.run / "previews" / f"epoch_{epoch + 1:03d}.png", side_by_side(image, truth, prob))
        cb_state = [{k: _plain(getattr(cb, k)) for k in ("wait", "best", "cooldown_counter", "stopped_epoch")
                     if hasattr(cb, k)} for cb in self.saved_callbacks]
        atomic_write_json(self.run / "state.json", {"epoch": epoch + 1, "best": self.best, "monitor": self.monitor,
                                                    "history": self.history, "callbacks": cb_state})

    def _write_csv(self):
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.run / "log.csv", buf.getvalue())


def _plain(v):
    v = keras.ops.convert_to_numpy(v) if hasattr(v, "numpy") or hasattr(v, "shape") else v
    return float(v) if isinstance(v, (np.floating, np.ndarray, float)) else v


def parse_floors(text: str) -> dict[str, float]:
    """``"DeepCrack=0.80,AigleRN=0.5"`` -> ``{"DeepCrack": 0.8, "AigleRN": 0.5}`` ("" -> no floors)."""
    floors: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, eq, value = part.partition("=")
        try:
            floors[name.strip()] = float(value)
        except ValueError:
            floors[name.strip()] = float("nan")
        if not eq or not name.strip() or not 0 <= floors[name.strip()] <= 1:
            raise TrainingError(f"--floor {part!r}: expected DATASET=F1 with F1 in 0..1, e.g. DeepCrack=0.80")
    return floors


class BalancedValidation(keras.callbacks.Callback):
    """Validation by the model card's threshold rule, so checkpoints are chosen the way the card's threshold is:
    after each epoch, the ``output`` head's strict F1 per dataset over the threshold sweep, then the threshold that
    maximises their mean (``crackseg.metrics.balanced_threshold``). Logs ``val_score`` (that mean),
    ``val_threshold`` and ``val_f1_<dataset>`` (each dataset's F1 there). A fixed log threshold misjudges
    checkpoints when the loss moves the calibration (BCE with a crack weight moves the best threshold up).

    ``floors`` ({dataset: F1}, ``--floor``) take part in the rule: only thresholds where each named dataset keeps its
    floor compete, and an epoch where no threshold does logs ``val_score`` = mean - 1, so any epoch that keeps every
    floor ranks above it (a fine-tune on new data must not buy its mean by losing a set it had learnt).
    ``val_mean_f1`` is always the plain mean there."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], datasets: list[str], output: str,
                 floors: dict[str, float] | None = None):
        super().__init__()
        self.images, self.masks, self.datasets, self.output = images, masks, datasets, output
        self.floors = dict(floors or {})
        unknown = sorted(set(self.floors) - set(datasets))
        if unknown:
            raise TrainingError(f"--floor: no validation images of {', '.join(unknown)} "
                                f"(validation datasets: {', '.join(sorted(set(datasets)))})")

    def on_epoch_end(self, epoch, logs=None):
        start = time.time()
        probs = predict_probabilities(self.model, self.images, self.output)
        choice = balanced_threshold(dataset_curves(probs, self.masks, self.datasets), self.floors)
        score = rule_score(choice)
        if logs is not None:  # Keras hands the same dict to the callbacks after this one (plateau, stop, logger)
            logs["val_score"] = score
            logs["val_mean_f1"] = choice["mean_f1"]
            logs["val_threshold"] = choice["threshold"]
            for name, part in choice["by_dataset"].items():
                logs[f"val_f1_{name}"] = part["f1"]
                logs[f"val_best_f1_{name}"] = part["best_f1"]
        missed = [f"{name} best {choice['by_dataset'][name]['best_f1']:.3f}" for name in self.floors]
        print(f"\nvalidation ({len(self.images)} images, {time.time() - start:.0f} s): score {score:.4f} "
              f"at t={choice['threshold']:.2f}; " + ", ".join(f"{k} {v['f1']:.3f}" for k, v in
                                                            choice["by_dataset"].items())
              + ("" if choice["floors_met"] else f" (no threshold keeps the floor: {'; '.join(missed)})"),
              flush=True)


class TimeLimit(keras.callbacks.Callback):
    """Stop after the first epoch that ends more than ``minutes`` after training began (0: no limit). The run
    stays resumable: the same command goes on from there."""

    def __init__(self, minutes: float):
        super().__init__()
        self.minutes, self._start = minutes, time.time()

    def on_train_begin(self, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.minutes > 0 and time.time() - self._start > 60 * self.minutes:
            print(f"\ntime limit: {self.minutes:g} min reached after epoch {epoch + 1}; run the same command to go on")
            self.model.stop_training = True


def fit(build: Callable[[], keras.Model], train_ds, val_ds, run_dir: str | Path, config: dict, *, epochs: int,
        monitor: str = "val_mix_f1", lr_patience: int = 5, stop_patience: int = 15, max_minutes: float = 0,
        preview: tuple[np.ndarray, np.ndarray] | None = None, preview_output: str = "mix",
        verbose: int | None = None, validator: keras.callbacks.Callback | None = None) -> dict:
    """Train (or resume) a compiled model from ``build()`` on ``crackseg.inputs`` data; returns the final state.

    Callbacks: ``validator`` first when given (e.g. ``BalancedValidation``, which logs ``val_score``; ``val_ds`` may
    then be None), ReduceLROnPlateau, EarlyStopping and best checkpoint on ``monitor`` (maximised), an optional time
    limit, TensorBoard (when TensorFlow is installed), a CSV log, curves and per-epoch previews through ``RunLogger``.
    """
    run, state = prepare_run(run_dir, config)
    initial_epoch = state["epoch"] if state else 0
    if initial_epoch >= epochs:
        print(f"{run}: already trained {initial_epoch} of {epochs} epochs")
        return state
    if state and state.get("callbacks") and state["callbacks"][1].get("stopped_epoch"):
        print(f"{run}: early stopping had already ended this run")
        return state
    if state and not (run / "last.keras").is_file():
        raise TrainingError(f"{run / 'last.keras'}: missing, cannot resume after epoch {initial_epoch}; "
                         "pass another --out to start afresh")
    strategy = distribution_strategy()
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if state:
            model = keras.models.load_model(run / "last.keras")
            print(f"resuming {run} after epoch {state['epoch']} (best {monitor} {state['best']:.4f})")
        else:
            model = build()
    plateau = keras.callbacks.ReduceLROnPlateau(monitor, mode="max", factor=0.5, patience=lr_patience, min_lr=1e-7,
                                                verbose=1)
    stop = keras.callbacks.EarlyStopping(monitor, mode="max", patience=stop_patience, verbose=1)
    logger = RunLogger(run, monitor, state, [plateau, stop], preview, preview_output)
    callbacks = ([validator] if validator is not None else []) + [plateau, stop, TimeLimit(max_minutes)]
    if hasattr(train_ds, "epoch"):
        # crackseg.inputs.TrainBatches draws its shuffle and crops from the epoch number: tell it which epoch runs, so
        # a resumed run goes on with the stream an uninterrupted one would have seen.
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: setattr(train_ds, "epoch", epoch)))
    if importlib.util.find_spec("tensorflow") is not None:  # Keras writes TensorBoard logs with tf.summary
        callbacks.append(keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False))
    callbacks.append(logger)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
              verbose=verbose)
    return json.loads((run / "state.json").read_text())


@keras.saving.register_keras_serializable(package="crackseg")
class EncoderScaledAdam(keras.optimizers.Adam):
    """Adam whose variables named ``prefix...`` (a pretrained encoder) learn at ``scale`` of the rate, and not at
    all for the first ``frozen_steps`` steps (a warm-up of the new decoder on a fixed encoder). Scaling the gradient
    instead would do nothing: Adam divides it back out. Saved with the run, so a resumed run keeps its schedule."""

    def __init__(self, learning_rate=1e-3, prefix: str = "enc_", scale: float = 0.1, frozen_steps: int = 0,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.prefix, self.scale, self.frozen_steps = prefix, float(scale), int(frozen_steps)
        self._scaled: set[int] = set()

    def build(self, var_list):
        super().build(var_list)
        self._scaled = {self._get_variable_index(v) for v in var_list if v.path.startswith(self.prefix)}

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled:
            factor = keras.ops.where(self.iterations < self.frozen_steps, 0.0, self.scale)
            learning_rate = learning_rate * keras.ops.cast(factor, learning_rate.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "prefix": self.prefix, "scale": self.scale,
                "frozen_steps": self.frozen_steps}


def compile_model(model: keras.Model, loss, lr: float, optimizer: str = "rmsprop", metrics=None,
                  loss_weights=None, encoder_lr_scale: float = 1.0, encoder_frozen_steps: int = 0) -> keras.Model:
    """Compile with RMSprop (the paper's) or Adam; returns the model. A pretrained encoder (layers ``enc_*``) may
    learn at ``encoder_lr_scale`` of ``lr`` after ``encoder_frozen_steps`` steps (Adam only)."""
    opt = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}
    if optimizer not in opt:
        raise ValueError(f"optimizer must be one of {sorted(opt)}, got {optimizer!r}")
    if encoder_lr_scale != 1.0 or encoder_frozen_steps:
        if optimizer != "adam":
            raise ValueError("an encoder learning-rate scale or warm-up needs --optimizer=adam")
        chosen = EncoderScaledAdam(lr, scale=encoder_lr_scale, frozen_steps=encoder_frozen_steps)
    else:
        chosen = opt[optimizer](lr)
    model.compile(optimizer=chosen, loss=loss, metrics=metrics, loss_weights=loss_weights)
    return model
