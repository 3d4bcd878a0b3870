"""Small custom layers of the MCFF-L network (no tensorflow-addons: it is end-of-life)."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mcff")
class InstanceNorm(keras.layers.Layer):
    """Instance normalization over the spatial axes of an NHWC tensor.

    Written with ``keras.ops.moments`` rather than ``GroupNormalization(groups=-1)``: the latter exports
    through tf2onnx as ~10 nodes plus layout transposes per layer and runs slower in ONNX Runtime.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        mean, var = ops.moments(x, axes=(1, 2), keepdims=True)
        inv = ops.rsqrt(var + self.epsilon)
        return (x - mean) * inv * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="mcff")
class AttentionGate(keras.layers.Layer):
    """Channel 0 is a sigmoid gate multiplied into the remaining (content) channels: returns gated logits."""

    def call(self, x):
        return x[..., 1:] * ops.sigmoid(x[..., :1])


@keras.saving.register_keras_serializable(package="mcff")
class TemperatureSoftmax(keras.layers.Layer):
    """softmax(logits / T) over the class axis; T is stored in the config so saved models keep it."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def call(self, logits):
        return ops.softmax(logits / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="mcff")
class CrackProbability(keras.layers.Layer):
    """Crack-class probability of two-class logits at temperature T: sigmoid((l1 - l0) / T), shape (..., 1).

    Equal to channel 1 of softmax(logits / T) but exports as three ONNX nodes.
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, logits):
        return ops.sigmoid((logits[..., 1:2] - logits[..., 0:1]) / self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="mcff")
class PadToMultiple(keras.layers.Layer):
    """Zero-pad H and W at the bottom / right up to multiples of ``multiple`` (a stride-32 encoder needs 32): the
    model then takes any input the project's preprocessing gives it (multiples of 4) and ``CropLike`` undoes it."""

    def __init__(self, multiple: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        # (m - n % m) % m, not (-n) % m: exported, a modulo of a negative number follows C (fmod), not Python
        m = self.multiple
        pad_h, pad_w = (m - shape[1] % m) % m, (m - shape[2] % m) % m
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        up = lambda n: None if n is None else -(-n // self.multiple) * self.multiple  # noqa: E731
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="mcff")
class CropLike(keras.layers.Layer):
    """``x`` cropped at the bottom / right to the H and W of ``reference`` (undoes ``PadToMultiple``)."""

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return x[:, :shape[1], :shape[2], :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


@keras.saving.register_keras_serializable(package="mcff")
class BilinearUpsample(keras.layers.Layer):
    """Bilinear upsampling of NHWC by an integer ``factor``, half-pixel centres and edges clamped: the values of
    ``UpSampling2D(factor, interpolation="bilinear")``. Written with slices and weighted sums because Keras' resize
    cannot be traced with unknown H and W (export takes any size); each output row is a fixed blend of two input
    rows, so it exports to plain ONNX arithmetic."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def _along(self, x, axis: int):
        s = self.factor
        first, last = [slice(None)] * 4, [slice(None)] * 4
        first[axis], last[axis] = slice(0, 1), slice(-1, None)
        body_prev, body_next = [slice(None)] * 4, [slice(None)] * 4
        body_prev[axis], body_next[axis] = slice(0, -1), slice(1, None)
        prev = ops.concatenate([x[tuple(first)], x[tuple(body_prev)]], axis=axis)  # x[i - 1], edge repeated
        nxt = ops.concatenate([x[tuple(body_next)], x[tuple(last)]], axis=axis)    # x[i + 1], edge repeated
        parts = []
        for k in range(s):
            offset = (2 * k + 1 - s) / (2 * s)  # where output k of each input pixel samples, in input pixels
            parts.append(x * (1 + offset) - prev * offset if offset < 0 else x * (1 - offset) + nxt * offset)
        stacked = ops.stack(parts, axis=axis + 1)
        shape = ops.shape(x)
        new = [shape[0], shape[1], shape[2], shape[3]]
        new[axis] = shape[axis] * s
        return ops.reshape(stacked, new)

    def call(self, x):
        return self._along(self._along(x, 1), 2)

    def compute_output_shape(self, input_shape):
        up = lambda n: None if n is None else n * self.factor  # noqa: E731
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
