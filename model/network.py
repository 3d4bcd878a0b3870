"""MCFF-L Net: multi-path convolution feature fusion, lightweight.

Three encoder-decoder paths read the input image:

* ``x`` -- dilated path: 3x3 convolutions with dilation 3 then 2 widen the receptive field cheaply;
* ``y`` -- rectangular path: 7x3 / 3x7 then 3x1 / 1x3 branches, summed, follow long thin cracks;
* ``h`` -- standard path: square 7x7 / 3x3 convolutions.

Each path downsamples twice (width w -> 2w -> 4w), runs ``blocks`` residual blocks at 4w, upsamples twice with
transposed convolutions and ends in a head of three channels: channel 0 is a sigmoid attention gate multiplied
into the two content channels (background, crack). The ``mix`` head is the sum of the three gated logits.
Outputs are ``softmax(logits / T)`` named ``h``, ``x``, ``y`` and ``mix``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import keras
from keras import layers

from .layers import AttentionGate, CrackProbability, InstanceNorm, TemperatureSoftmax
from .teachers import TEACHERS, TeacherPreset, build_teacher_logits, infer_teacher, is_teacher

HEADS = ("h", "x", "y", "mix")
NUM_CLASSES = 2  # channel 0 background, channel 1 crack


@dataclass(frozen=True)
class Preset:
    """Size of the network; see ``PRESETS``."""

    width: int
    blocks: int
    block: str = "MCL"  # "MCL": two 3x3 convs + instance norm; "MCLD": depthwise-separable variant
    dropout: float = 0.0  # applied in the decoder (teacher only)


PRESETS: dict[str, Preset] = {
    # The paper's networks.
    "teacher": Preset(width=64, blocks=8, dropout=0.5),
    "student": Preset(width=16, blocks=4),
    # A teacher that trains on 2 CPU cores: 1.5x the student's width, 6 blocks, lighter dropout
    # (see README for its cost).
    "teacher_cpu": Preset(width=24, blocks=6, dropout=0.2),
}


def resolve_preset(preset: str | Preset | TeacherPreset, **overrides) -> Preset | TeacherPreset:
    """A ``Preset`` (or a pretrained teacher's ``TeacherPreset``) from a name or instance, with any non-None field
    overridden (MCFF-L only: a pretrained teacher's shape is fixed by its encoder)."""
    if is_teacher(preset):
        if any(v is not None for v in overrides.values()):
            raise ValueError(f"preset {preset!r} is a pretrained teacher: width / blocks / block do not apply")
        return TEACHERS[preset] if isinstance(preset, str) else preset
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS) + sorted(TEACHERS)}")
        preset = PRESETS[preset]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    resolved = replace(preset, **overrides)
    if resolved.block not in ("MCL", "MCLD"):
        raise ValueError(f"block must be 'MCL' or 'MCLD', got {resolved.block!r}")
    if resolved.width < 1 or resolved.blocks < 0:
        raise ValueError(f"width must be >= 1 and blocks >= 0, got {resolved}")
    return resolved


# ---------------------------------------------------------------------------------------------- building blocks
def _conv(x, filters: int, kernel, name: str, strides: int = 1, dilation: int = 1):
    return layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding="same", name=name)(x)


def _norm_relu(x, name: str):
    x = InstanceNorm(name=f"{name}_in")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, filters: int, block: str, name: str):
    """MCL: conv3x3-IN-ReLU-conv3x3-IN + skip. MCLD: the same with depthwise-separable convolutions."""
    skip = x
    for i in (1, 2):
        if block == "MCL":
            x = _conv(x, filters, 3, f"{name}_conv{i}")
        else:
            x = layers.SeparableConv2D(filters, 3, padding="same", name=f"{name}_sepconv{i}")(x)
        x = InstanceNorm(name=f"{name}_in{i}")(x)
        if i == 1:
            x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Add(name=f"{name}_add")([skip, x])


def _rect(x, filters: int, long: int, short: int, name: str, strides: int = 1):
    """Sum of a (long x short) and a (short x long) convolution: the rectangular branches."""
    a = _conv(x, filters, (long, short), f"{name}_v", strides=strides)
    b = _conv(x, filters, (short, long), f"{name}_h", strides=strides)
    return layers.Add(name=f"{name}_sum")([a, b])


def _encoder(x, path: str, w: int):
    """Stem and two stride-2 downsamplings; the kernels are what makes each path different."""
    p = f"{path}_"
    if path == "x":  # dilated
        x = _norm_relu(_conv(x, w, 3, p + "stem_d3", dilation=3), p + "stem_d3")
        x = _norm_relu(_conv(x, w, 3, p + "stem_d2", dilation=2), p + "stem_d2")
        x = _norm_relu(_conv(x, 2 * w, 3, p + "down1", strides=2), p + "down1")
        x = _norm_relu(_conv(x, 2 * w, 3, p + "ctx_d3", dilation=3), p + "ctx_d3")
        x = _norm_relu(_conv(x, 4 * w, 3, p + "down2", strides=2), p + "down2")
        x = _norm_relu(_conv(x, 4 * w, 3, p + "ctx_d2", dilation=2), p + "ctx_d2")
    elif path == "y":  # rectangular
        x = _norm_relu(_rect(x, w, 7, 3, p + "stem_7x3"), p + "stem")
        x = _norm_relu(_rect(x, 2 * w, 3, 1, p + "down1_3x1", strides=2), p + "down1")
        x = _norm_relu(_rect(x, 2 * w, 7, 3, p + "ctx_7x3"), p + "ctx1")
        x = _norm_relu(_rect(x, 4 * w, 3, 1, p + "down2_3x1", strides=2), p + "down2")
    elif path == "h":  # standard
        x = _norm_relu(_conv(x, w, 7, p + "stem"), p + "stem")
        x = _norm_relu(_conv(x, 2 * w, 3, p + "down1", strides=2), p + "down1")
        x = _norm_relu(_conv(x, 2 * w, 3, p + "ctx1"), p + "ctx1")
        x = _norm_relu(_conv(x, 4 * w, 3, p + "down2", strides=2), p + "down2")
        x = _norm_relu(_conv(x, 4 * w, 3, p + "ctx2"), p + "ctx2")
    else:
        raise ValueError(path)
    return x


def _path(inputs, path: str, cfg: Preset):
    w = cfg.width
    x = _encoder(inputs, path, w)
    for i in range(cfg.blocks):
        x = _residual_block(x, 4 * w, cfg.block, f"{path}_res{i + 1}")
    for i, filters in enumerate((2 * w, w), start=1):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"{path}_up{i}")(x)
        x = _norm_relu(x, f"{path}_up{i}")
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"{path}_up{i}_dropout")(x)
    # A full-resolution refinement before the head: thin (1-3 px) cracks live at this scale.
    x = _norm_relu(_conv(x, w, 3, f"{path}_refine"), f"{path}_refine")
    x = _conv(x, 1 + NUM_CLASSES, 7, f"{path}_head")
    return AttentionGate(name=f"{path}_logits")(x)


# ---------------------------------------------------------------------------------------------- public builders
def build_logits_model(preset: str | Preset | TeacherPreset = "student", input_size: int | None = 448,
                       **overrides) -> keras.Model:
    """The network with its four gated-logit outputs ``{h, x, y, mix}_logits``.

    ``input_size`` is the square training size (a multiple of 4) or None for any H x W that is a multiple of 4.
    A pretrained-teacher preset (``model.teachers.TEACHERS``) builds that network instead, encoder weights random.
    """
    cfg = resolve_preset(preset, **overrides)
    if isinstance(cfg, TeacherPreset):
        if input_size is not None and (input_size <= 0 or input_size % 4):
            raise ValueError(f"input_size must be a positive multiple of 4, got {input_size}")
        return build_teacher_logits(preset, input_size)
    if input_size is not None and (input_size <= 0 or input_size % 4):
        raise ValueError(f"input_size must be a positive multiple of 4, got {input_size}")
    shape = (input_size, input_size, 3) if input_size else (None, None, 3)
    inputs = keras.Input(shape=shape, name="image")
    logits = {p: _path(inputs, p, cfg) for p in ("h", "x", "y")}
    logits["mix"] = layers.Add(name="mix_logits")([logits["h"], logits["x"], logits["y"]])
    name = preset if isinstance(preset, str) else "mcff"
    model = keras.Model(inputs, [logits[h] for h in HEADS], name=f"mcff_{name}_logits")
    model.preset = cfg
    return model


def with_heads(logits_model: keras.Model, temperatures: dict[str, tuple[str, float]]) -> keras.Model:
    """Put named softmax heads on a logits model: ``{output_name: (head, T)}``; weights are shared."""
    outs = dict(zip(HEADS, logits_model.outputs))
    outputs = {name: TemperatureSoftmax(t, name=name)(outs[head]) for name, (head, t) in temperatures.items()}
    return keras.Model(logits_model.input, outputs, name=logits_model.name.replace("_logits", ""))


def build_model(preset: str | Preset = "student", input_size: int | None = 448, temperature: float = 1.0,
                **overrides) -> keras.Model:
    """MCFF-L network with outputs ``h``, ``x``, ``y``, ``mix``: ``softmax(logits / temperature)``, NHWC, 2 classes.

    ``overrides`` may set ``width``, ``blocks``, ``block`` ("MCL" / "MCLD") and ``dropout``.
    """
    base = build_logits_model(preset, input_size, **overrides)
    model = with_heads(base, {h: (h, temperature) for h in HEADS})
    model.preset = base.preset
    return model


def infer_preset(model: keras.Model) -> Preset | TeacherPreset:
    """Read width, blocks, block type and dropout back from a built (or loaded) MCFF-L model's layers; a pretrained
    teacher's preset from its name."""
    teacher = infer_teacher(model)
    if teacher is not None:
        return teacher
    names = [layer.name for layer in model.layers]
    try:
        width = model.get_layer("h_stem").filters
    except ValueError:
        raise ValueError(f"model {model.name!r} is not an MCFF-L network (no 'h_stem' layer)") from None
    blocks = sum(1 for n in names if re.fullmatch(r"h_res\d+_add", n))
    block = "MCLD" if any("_sepconv" in n for n in names) else "MCL"
    dropout = next((layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)), 0.0)
    return Preset(width=width, blocks=blocks, block=block, dropout=dropout)


def copy_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy weights layer by layer, matched by name, from ``source`` into every ``target`` layer that has weights.

    Works between any two models of one architecture, MCFF-L or a pretrained teacher (training heads, logits-only,
    deployed mix head: MCFF-L's mix head needs all three paths). Returns the number of layers copied; ValueError names a
    mismatch.
    """
    layers_by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in target.layers:
        if not layer.weights:
            continue
        if layer.name not in layers_by_name:
            raise ValueError(f"layer {layer.name!r} is missing from model {source.name!r}")
        theirs = layers_by_name[layer.name].get_weights()
        ours = layer.get_weights()
        if [w.shape for w in theirs] != [w.shape for w in ours]:
            raise ValueError(f"layer {layer.name!r}: weight shapes {[w.shape for w in theirs]} in model "
                             f"{source.name!r} do not fit {[w.shape for w in ours]}")
        layer.set_weights(theirs)
        copied += 1
    return copied


def logits_model_of(model: keras.Model) -> keras.Model:
    """The size-agnostic logits network of any model built here (any heads, saved or built), weights copied by name."""
    fresh = build_logits_model(infer_preset(model), input_size=None)
    copy_weights(model, fresh)
    return fresh


def interpolate_weights(start: keras.Model, end: keras.Model, alpha: float, target: keras.Model) -> int:
    """Set every ``target`` layer with weights to ``(1 - alpha) * start + alpha * end`` of the same-named layers
    (WiSE-FT weight interpolation between a model and its fine-tuned self: alpha 0 = ``start``, 1 = ``end``).
    Returns the number of layers set; ValueError names a mismatch."""
    starts = {layer.name: layer for layer in start.layers}
    ends = {layer.name: layer for layer in end.layers}
    count = 0
    for layer in target.layers:
        if not layer.weights:
            continue
        for source, name in ((starts, start.name), (ends, end.name)):
            if layer.name not in source:
                raise ValueError(f"layer {layer.name!r} is missing from model {name!r}")
        a, b = starts[layer.name].get_weights(), ends[layer.name].get_weights()
        if [w.shape for w in a] != [w.shape for w in b] or [w.shape for w in b] != [w.shape for w in layer.weights]:
            raise ValueError(f"layer {layer.name!r}: weight shapes differ between {start.name!r} and {end.name!r}")
        layer.set_weights([(1.0 - alpha) * x + alpha * y for x, y in zip(a, b)])
        count += 1
    return count


def deploy_model(model: keras.Model, head: str = "mix", temperature: float = 1.0) -> keras.Model:
    """The deployable network: one output ``crack`` = crack probability of ``head`` at ``temperature``, (N,H,W,1).

    Takes any model built here (softmax or logits heads) and returns a size-agnostic copy (H, W multiples of 4)
    that holds only the layers ``head`` needs; the weights are copied by layer name.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    fresh = logits_model_of(model)
    logits = fresh.get_layer(f"{head}_logits").output
    crack = CrackProbability(temperature, name="crack")(logits)
    # a teacher keeps its preset in the name (infer_preset reads it back); MCFF-L models are read from their layers
    name = fresh.name.replace("_logits", "_deploy") if infer_teacher(fresh) else "mcff_deploy"
    deployed = keras.Model(fresh.input, crack, name=name)
    return keras.Model(deployed.input, deployed.output, name=name)
