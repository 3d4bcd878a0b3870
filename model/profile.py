"""Model profile: parameters, FLOPs (TensorFlow's own profiler on the frozen graph) and memory."""
from __future__ import annotations

import keras


def can_count_flops() -> bool:
    """Whether TensorFlow (whose profiler counts FLOPs) is installed: not on a JAX or PyTorch training machine."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def count_flops(model: keras.Model, input_size: int = 448) -> int:
    """Floating-point operations of one forward pass on a ``input_size`` square image (batch 1).

    Uses ``tf.compat.v1.profiler`` float_operation on the frozen concrete function (model_profiler fails
    under Keras 3). A multiply-add counts as two operations.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf.get_logger().setLevel("ERROR")  # the v1 profiler prints deprecation warnings
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                             options=opts)
    return int(info.total_float_ops)


def profile(model: keras.Model, input_size: int = 448, flops: bool = True) -> dict:
    """Parameter counts, FLOPs and weight memory of ``model`` at ``input_size``."""
    params = int(model.count_params())
    trainable = int(sum(int(w.numpy().size) for w in model.trainable_weights))
    info = {"name": model.name, "params": params, "trainable_params": trainable,
            "weights_mib": round(sum(w.numpy().nbytes for w in model.weights) / 2**20, 2), "input_size": input_size}
    if flops:
        info["gflops"] = round(count_flops(model, input_size) / 1e9, 2)
        # Activations of one image: the sum of every layer output, fp32 (an upper bound on what is live at once).
        elems = 0
        for layer in model.layers:
            for out in (layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]):
                shape = [input_size if d is None else d for d in out.shape[1:]]
                n = 1
                for d in shape:
                    n *= d
                elems += n
        scale = (input_size / model.input_shape[1]) ** 2 if model.input_shape[1] else 1.0
        info["activations_mib"] = round(elems * 4 * scale / 2**20, 1)
    return info


def format_profile(info: dict) -> str:
    """One line for logs."""
    parts = [f"{info['name']}: {info['params']:,} params ({info['weights_mib']} MiB)"]
    if "gflops" in info:
        parts.append(f"{info['gflops']} GFLOP at {info['input_size']}^2, activations ~{info['activations_mib']} MiB")
    return ", ".join(parts)
