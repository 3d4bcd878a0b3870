"""Teachers on pretrained encoders: an ImageNet EfficientNet-Lite encoder with a U-Net decoder back to full resolution.

Cracks are 1-5 px wide, so the decoder takes a skip at every stride (16, 8, 4, 2) and ends in a full-resolution
refinement that also sees a light branch on the input image itself. The four outputs are those every Train step
expects: ``h`` (full resolution), ``x`` (stride 2, upsampled), ``y`` (stride 4, upsampled) are deep-supervision side
heads, ``mix`` fuses the full-resolution features with the three side logits (as HED / DeepCrack fuse theirs); the
engines and evaluate.py use ``mix``.

Input contract as for MCFF-L: RGB in [-1, 1], H and W multiples of 4. EfficientNet-Lite was trained on
(x - 127) / 128, which is this scaling; the model pads its input to a multiple of 32 inside and crops the outputs
back, so no caller needs to know the encoder's stride.

The encoder's BatchNorm stays frozen (inference statistics of ImageNet; batches of 8 tiles are too small to
re-estimate them), and its convolutions learn at ``encoder_lr_scale`` of the decoder's rate
(``crackseg.training.EncoderScaledAdam``).
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from .layers import BilinearUpsample, CropLike, PadToMultiple
from .pretrained import PRETRAINED, PretrainedError, load_pretrained

HEADS = ("h", "x", "y", "mix")
NUM_CLASSES = 2
ENCODER_PREFIX = "enc_"  # every encoder layer's name starts with it (the optimizer finds them by it)
BN_EPSILON = 1e-3        # EfficientNet's


@dataclass(frozen=True)
class TeacherPreset:
    """A pretrained encoder and the decoder on it; see ``TEACHERS``."""

    encoder: str                                   # a key of model.pretrained.PRETRAINED
    stages: tuple[tuple[int, int, int, int, int], ...]  # (repeats, kernel, stride, expand ratio, out channels)
    decoder: tuple[int, ...] = (96, 64, 48, 32, 16)     # widths at strides 16, 8, 4, 2, 1
    full_res: int = 16                             # channels of the branch on the input image
    pad_multiple: int = 32                         # the encoder's total stride


LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Lite2: width x1.1 and depth x1.2 of Lite0, stem and first / last stages kept (as Google's Lite variants do).
LITE2_STAGES = ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88), (4, 5, 1, 6, 120),
                (5, 5, 2, 6, 208), (1, 3, 1, 6, 352))

TEACHERS: dict[str, TeacherPreset] = {
    # 3.0 M parameters: the default pretrained teacher (fast on a CPU).
    "lite0_unet": TeacherPreset("efficientnet-lite0", LITE0_STAGES),
    # 1.6x Lite0's encoder cost, ImageNet top-1 77.6 % against 75.1 %: when the budget allows more encoder.
    "lite2_unet": TeacherPreset("efficientnet-lite2", LITE2_STAGES, decoder=(112, 72, 48, 32, 16)),
}
NAME_PREFIX = "pretrained_"  # model names: pretrained_<preset>[_logits|_deploy]; infer_teacher reads the preset back


def is_teacher(preset) -> bool:
    """Whether ``preset`` (a name or instance) is a pretrained-encoder teacher of ``TEACHERS``."""
    return isinstance(preset, TeacherPreset) or (isinstance(preset, str) and preset in TEACHERS)


def teacher_name(preset: str | TeacherPreset) -> str:
    if isinstance(preset, str):
        return preset
    return next((name for name, p in TEACHERS.items() if p == preset), "custom")  # custom: tests, experiments


def _bn(x, name: str, frozen: bool):
    bn = layers.BatchNormalization(epsilon=BN_EPSILON, name=name)
    bn.trainable = not frozen  # a non-trainable BatchNormalization runs in inference mode in Keras 3
    return bn(x)


def _encoder(x, cfg: TeacherPreset) -> list:
    """EfficientNet-Lite (MBConv without squeeze-excite, ReLU6); returns the last feature map at strides 2..32."""
    p = ENCODER_PREFIX
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name=f"{p}stem_conv")(x)
    x = layers.ReLU(6.0, name=f"{p}stem_relu")(_bn(x, f"{p}stem_bn", True))
    features, stride, block = {}, 2, 0
    channels = 32
    for repeats, kernel, first_stride, expand, out in cfg.stages:
        for r in range(repeats):
            s = first_stride if r == 0 else 1
            n = f"{p}b{block}"
            inp = x
            if expand != 1:
                x = layers.Conv2D(channels * expand, 1, use_bias=False, name=f"{n}_expand")(x)
                x = layers.ReLU(6.0, name=f"{n}_expand_relu")(_bn(x, f"{n}_expand_bn", True))
            x = layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False, name=f"{n}_dw")(x)
            x = layers.ReLU(6.0, name=f"{n}_dw_relu")(_bn(x, f"{n}_dw_bn", True))
            x = layers.Conv2D(out, 1, use_bias=False, name=f"{n}_project")(x)
            x = _bn(x, f"{n}_project_bn", True)
            if s == 1 and channels == out:
                x = layers.Add(name=f"{n}_add")([inp, x])
            stride *= s
            channels = out
            block += 1
        features[stride] = x
    return [features[s] for s in (2, 4, 8, 16, 32)]


def _conv_bn_relu(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    return layers.ReLU(name=f"{name}_relu")(_bn(x, f"{name}_bn", False))


def build_teacher_logits(preset: str | TeacherPreset = "lite0_unet", input_size: int | None = None) -> keras.Model:
    """The teacher with its four logit outputs ``{h, x, y, mix}_logits`` (N, H, W, 2), random weights everywhere;
    ``load_encoder_weights`` puts the pretrained encoder in. ``input_size``: square size or None (any H x W)."""
    if isinstance(preset, str):
        if preset not in TEACHERS:
            raise ValueError(f"unknown teacher preset {preset!r}; choose one of {sorted(TEACHERS)}")
        name, cfg = preset, TEACHERS[preset]
    else:
        name, cfg = teacher_name(preset), preset
    shape = (input_size, input_size, 3) if input_size else (None, None, 3)
    inputs = keras.Input(shape=shape, name="image")
    padded = PadToMultiple(cfg.pad_multiple, name="pad_to_multiple")(inputs)
    skips = _encoder(padded, cfg)
    full = _conv_bn_relu(padded, cfg.full_res, "full_res1")
    full = _conv_bn_relu(full, cfg.full_res, "full_res2")
    x = skips[-1]
    decoded = {}
    for level, (skip, width) in enumerate(zip([*reversed(skips[:-1]), full], cfg.decoder)):
        stride = 16 >> level
        x = BilinearUpsample(2, name=f"dec{stride}_up")(x)
        x = layers.Concatenate(name=f"dec{stride}_concat")([x, skip])
        x = _conv_bn_relu(x, width, f"dec{stride}_conv1")
        x = _conv_bn_relu(x, width, f"dec{stride}_conv2")
        decoded[stride] = x
    side = {"h": layers.Conv2D(NUM_CLASSES, 1, name="h_side")(decoded[1])}
    for head, stride in (("x", 2), ("y", 4)):
        logits = layers.Conv2D(NUM_CLASSES, 1, name=f"{head}_side")(decoded[stride])
        side[head] = BilinearUpsample(stride, name=f"{head}_side_up")(logits)
    fused = layers.Concatenate(name="mix_concat")([decoded[1], side["h"], side["x"], side["y"]])
    side["mix"] = layers.Conv2D(NUM_CLASSES, 3, padding="same", name="mix_fuse")(fused)
    outputs = [CropLike(name=f"{h}_logits")([side[h], inputs]) for h in HEADS]
    model = keras.Model(inputs, outputs, name=f"{NAME_PREFIX}{name}_logits")
    model.preset = cfg
    return model


def infer_teacher(model: keras.Model) -> TeacherPreset | None:
    """The ``TEACHERS`` preset a built or loaded teacher was made from (by its model name), or None."""
    name = model.name
    if not name.startswith(NAME_PREFIX):
        return None
    name = name[len(NAME_PREFIX):].removesuffix("_logits").removesuffix("_deploy")
    return TEACHERS.get(name)


def pretrained_facts(preset: str | TeacherPreset) -> dict:
    """What a card records about the weights a teacher's encoder started from."""
    cfg = TEACHERS[preset] if isinstance(preset, str) else preset
    return PRETRAINED[cfg.encoder].facts()


def load_encoder_weights(model: keras.Model, state: dict[str, np.ndarray] | None = None) -> int:
    """Copy an EfficientNet-Lite state dict (PyTorch layout, ``model.pretrained.load_pretrained``) into the
    encoder: conv kernels OIHW -> HWIO, depthwise (C, 1, k, k) -> (k, k, C, 1), BatchNorm weight / bias / running
    mean / var. Returns the number of layers set; PretrainedError names a missing or misfitting tensor."""
    cfg = infer_teacher(model) or getattr(model, "preset", None)
    if not isinstance(cfg, TeacherPreset):
        raise ValueError(f"model {model.name!r} is not a pretrained-encoder teacher")
    if state is None:
        state = load_pretrained(cfg.encoder)

    def tensor(key: str) -> np.ndarray:
        if key not in state:
            raise PretrainedError(f"{cfg.encoder}: the checkpoint has no tensor {key!r}")
        return state[key]

    def set_layer(layer_name: str, weights: list[np.ndarray]) -> None:
        layer = model.get_layer(layer_name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [w.shape for w in weights]:
            raise PretrainedError(f"{cfg.encoder}: {layer_name} wants {shapes}, the checkpoint gives "
                                  f"{[w.shape for w in weights]}")
        layer.set_weights(weights)

    def bn(torch_name: str) -> list[np.ndarray]:
        return [tensor(f"{torch_name}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]

    p = ENCODER_PREFIX
    set_layer(f"{p}stem_conv", [tensor("_conv_stem.weight").transpose(2, 3, 1, 0)])
    set_layer(f"{p}stem_bn", bn("_bn0"))
    count, block = 2, 0
    names = {layer.name for layer in model.layers}
    for repeats, *_ in cfg.stages:
        for _ in range(repeats):
            t, n = f"_blocks.{block}", f"{p}b{block}"
            if f"{n}_expand" in names:
                set_layer(f"{n}_expand", [tensor(f"{t}._expand_conv.weight").transpose(2, 3, 1, 0)])
                set_layer(f"{n}_expand_bn", bn(f"{t}._bn0"))
                count += 2
            set_layer(f"{n}_dw", [tensor(f"{t}._depthwise_conv.weight").transpose(2, 3, 0, 1)])
            set_layer(f"{n}_dw_bn", bn(f"{t}._bn1"))
            set_layer(f"{n}_project", [tensor(f"{t}._project_conv.weight").transpose(2, 3, 1, 0)])
            set_layer(f"{n}_project_bn", bn(f"{t}._bn2"))
            count += 4
            block += 1
    return count
