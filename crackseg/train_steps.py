"""The bodies of Train_1_Step and Train_3_Step: wiring of data, model, loss and the shared loop."""
from __future__ import annotations

from pathlib import Path

import keras

from model import HEADS, build_model, profile
from model.profile import format_profile

from .data import load_training_data, steps_per_epoch, train_dataset, eval_dataset
from .keras_metrics import crack_metrics
from .losses import make_loss
from .training import compile_model, fit


def resolve_preset_name(preset: str) -> str:
    """``auto``: the paper's teacher when a GPU is visible, the CPU teacher preset otherwise."""
    if preset != "auto":
        return preset
    import tensorflow as tf

    return "teacher" if tf.config.list_physical_devices("GPU") else "teacher_cpu"


def _lists(value):
    return None if value in (None, "", "none", "None") else value


def train_teacher(config: dict) -> dict:
    """Train_1: a preset with the loss on all four heads, best checkpoint by validation mix-head F1."""
    config = {**config, "preset": resolve_preset_name(config["preset"])}
    arrays = load_training_data(config["data"], _lists(config["lists"]), config["val_fraction"], config["seed"],
                                config["dilate"])
    overrides = {k: config[k] for k in ("width", "blocks", "block")}

    def build() -> keras.Model:
        model = build_model(config["preset"], input_size=None, **overrides)
        loss = make_loss(config["loss"], config["crack_weight"])
        return compile_model(model, {h: loss for h in HEADS}, config["lr"], config["optimizer"],
                             metrics={"mix": crack_metrics(config["threshold"], config["distance"])})

    print(format_profile(profile(build_model(config["preset"], config["profile_size"], **overrides),
                                 config["profile_size"])))
    heads = lambda x, y: (x, {h: y for h in HEADS})  # noqa: E731
    train = train_dataset(*arrays["train"], crop=config["crop"], batch_size=config["batch_size"],
                          seed=config["seed"]).map(heads)
    val = eval_dataset(*arrays["val"]).map(heads)
    preview = (arrays["val"][0][0], arrays["val"][1][0])
    state = fit(build, train, val, steps_per_epoch(len(arrays["train"][0]), config["batch_size"]), config["out"],
                config, epochs=config["epochs"], monitor="val_mix_f1", lr_patience=config["lr_patience"],
                stop_patience=config["stop_patience"], preview=preview, preview_output="mix")
    print(f"best val_mix_f1 {state['best']:.4f}; teacher: {Path(config['out']) / 'best.keras'}")
    return state
