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
