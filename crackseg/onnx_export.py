"""Keras -> ONNX (tf2onnx): the plain and the clean (fast-CPU) export, the tf2onnx rewriter that fuses instance
norms, the output repair, and the check that an exported graph gives Keras's output in the runtimes that read it.

TensorFlow, tf2onnx, ONNX Runtime and OpenVINO are imported inside the functions that need them.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import ExportError
from .io import atomic_write_bytes
from .parity import PARITY_TOLERANCE
from .precision import openvino_cpu_config

if TYPE_CHECKING:  # annotations only: onnx and tf2onnx are imported by the functions that use them
    import onnx
    import tf2onnx

OPSET = 17
INPUT_NAME = "image"
DYNAMIC_DIMS = ("batch", "height", "width")  # names of the free NHWC dims in the exported graph
# Export check input: batch 2 and H != W, so every (N, H, W) axis of the output is told apart from a unit axis.
PROBE_SHAPE = (2, 64, 96, 3)


def export_onnx(net, out_path: str | Path, opset: int = OPSET, clean: bool = False) -> Path:
    """Export a deployable Keras model to ONNX (dynamic batch, height and width), checked, written atomically.

    ``clean``: the fast-CPU graph -- dilated convolutions as native dilated ``Conv`` (no SpaceToDepth/DepthToSpace
    wrapping and its layout transposes) and every instance norm as one native ``InstanceNormalization`` node
    (see ``instance_norm_fuser``). Same function, fewer and faster nodes.

    Before anything is written the model must give Keras's output, shape (N, H, W, 1) included, on a small
    non-square batch (``PROBE_SHAPE``): in ONNX Runtime, and for ``clean`` also in OpenVINO (the runtime that reads
    it). A clean export whose fused norms fail that is redone with the norms decomposed, saying so; a model that
    still fails raises ``ExportError``. onnx.checker (full check) must pass too.
    """
    import onnx

    from model.layers import InstanceNorm

    if len(net.outputs) != 1:
        raise ExportError(f"{out_path}: export the deployable model (one output, the crack map; "
                          f"model.deploy_model), not one with {len(net.outputs)} outputs")
    probe = np.random.default_rng(0).uniform(-1, 1, PROBE_SHAPE).astype(np.float32)
    expected = np.asarray(net(probe, training=False))
    runtimes = ("onnxruntime", "openvino") if clean else ("onnxruntime",)
    norms = [layer for layer in net.layers if isinstance(layer, InstanceNorm)]
    proto, fused = _convert(net, opset, clean, norms if clean else [], probe)
    problem = disagreement(proto, probe, expected, runtimes)
    if problem and fused:
        # Safety net: the fusion itself is verified, but tf2onnx's optimisers run after it.
        print(f"{out_path}: with {fused} fused instance norms the model {problem}; exporting with the norms "
              f"decomposed instead", flush=True)
        proto, fused = _convert(net, opset, clean, [], probe)
        problem = disagreement(proto, probe, expected, runtimes)
    if problem:
        raise ExportError(f"{out_path}: the exported model {problem}")
    if clean and fused != len(norms):
        print(f"{out_path}: {fused} of {len(norms)} instance norms fused; the others stay decomposed (correct, "
              f"slower)", flush=True)
    proto.producer_name = "crackseg.export"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out_path}: exported ONNX model fails onnx.checker ({_first_line(exc)})") from None
    atomic_write_bytes(out_path, proto.SerializeToString())
    return Path(out_path)


def _convert(net, opset: int, clean: bool, norms_to_fuse: list, probe: np.ndarray) -> tuple[onnx.ModelProto, int]:
    """tf2onnx conversion of ``net`` -> (ModelProto with a conformed output, number of instance norms fused)."""
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    # Keras 3 models carry no input signature tf2onnx can read, so it is given explicitly.
    signature = (tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT_NAME),)
    fused: list[str] = []
    epsilons = {float(layer.epsilon) for layer in norms_to_fuse}
    rewriters = [instance_norm_fuser(epsilons, fused)] if norms_to_fuse else []
    with native_dilated_convolutions() if clean else nullcontext():
        proto, _ = tf2onnx.convert.from_keras(net, input_signature=signature, opset=opset, custom_rewriter=rewriters)
    if clean:
        explicit_dilated_padding(proto)
    for dim, label in zip(proto.graph.input[0].type.tensor_type.shape.dim, DYNAMIC_DIMS):
        if not dim.HasField("dim_value"):  # tf2onnx names them unk__NNN; readable names help TensorRT users
            dim.dim_param = label
    conform_output(proto, probe)
    return proto, len(fused)


@contextmanager
def native_dilated_convolutions():
    """While active, 2-D dilated convolutions trace as one ``Conv2D`` op with a ``dilations`` attribute.

    ``tf.nn.convolution`` on CPU wraps a dilated convolution in SpaceToBatchND / BatchToSpaceND whose paddings
    depend on the (dynamic) input size; tf2onnx then emits Pad + Transpose + SpaceToDepth + Conv + DepthToSpace +
    Slice per layer. ``tf.nn.conv2d`` with ``dilations`` is the same function (SAME / VALID padding included) and
    exports as a native dilated ``Conv``. Only used while tracing for export.
    """
    import tensorflow as tf

    original = tf.nn.convolution

    def convolution(input, filters, strides=None, padding="VALID", data_format=None, dilations=None, name=None):
        rate = dilations if isinstance(dilations, (list, tuple)) else [dilations] * 2
        if filters.shape.rank == 4 and dilations is not None and any(int(d) != 1 for d in rate):
            return tf.nn.conv2d(input, filters, strides or 1, padding, data_format=data_format or "NHWC",
                                dilations=list(rate), name=name)
        return original(input, filters, strides, padding, data_format=data_format, dilations=dilations, name=name)

    tf.nn.convolution = convolution
    try:
        yield
    finally:
        tf.nn.convolution = original


def explicit_dilated_padding(proto) -> int:
    """Turn ``auto_pad=SAME_*`` of stride-1 dilated ``Conv`` nodes into explicit ``pads`` (in place).

    ONNX Runtime's CPU Conv rejects dilation with SAME auto-padding; at stride 1 the padding is static:
    ``dilation * (kernel - 1)`` per axis, the odd pixel at the end for SAME_UPPER. Returns the nodes changed.
    """
    from onnx import helper

    changed = 0
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        dilations, strides = attrs.get("dilations", [1, 1]), attrs.get("strides", [1, 1])
        if (node.op_type != "Conv" or auto_pad not in ("SAME_UPPER", "SAME_LOWER") or all(d == 1 for d in dilations)
                or any(s != 1 for s in strides) or "kernel_shape" not in attrs):
            continue
        totals = [d * (k - 1) for d, k in zip(dilations, attrs["kernel_shape"])]
        small = [t // 2 for t in totals]
        large = [t - s for t, s in zip(totals, small)]
        pads = small + large if auto_pad == "SAME_UPPER" else large + small
        kept = [a for a in node.attribute if a.name != "auto_pad"]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("pads", pads)])
        changed += 1
    return changed


def instance_norm_fuser(epsilons: set[float], fused: list[str]) -> Callable[[tf2onnx.graph.Graph, list], list]:
    """A tf2onnx rewriter that turns each ``model.layers.InstanceNorm`` into one ONNX ``InstanceNormalization``.

    It runs on the TensorFlow ops, before tf2onnx's layout and graph optimisers (whose output varies from one
    conversion to the next), where every norm is the same chain -- ``keras.ops.moments`` and
    ``(x - mean) * rsqrt(var + eps) * gamma + beta`` as grappler leaves them, NHWC::

        mean = Mean(x, [1, 2], keep_dims);  centred = Sub(x, mean)
        var = Mean(SquaredDifference(x, StopGradient(mean)), [1, 2], keep_dims);  inv = Rsqrt(AddV2(var, eps))
        Mul(centred, inv) [-> Mul(., gamma)]  or  Mul(centred, Mul(gamma, inv));  then [AddV2(., beta)]

    (grappler drops gamma = 1 / beta = 0). A match must hold in full: a 4-D ``x`` with a known channel count, both
    reductions over axes [1, 2] keeping dims, an ``eps`` equal to one of ``epsilons`` (the model's InstanceNorm
    layers), gamma / beta constants with one value per channel (or one for all), and no intermediate result used
    outside the norm. It becomes Transpose(NCHW) -> InstanceNormalization -> Transpose(NHWC); tf2onnx's transpose
    optimiser then cancels those transposes against the convolutions' own. The scope of each fused norm is
    appended to ``fused``.
    """

    def rewrite(g, ops):
        from tf2onnx import utils

        def constant(tensor: str) -> np.ndarray | None:
            node = g.get_node_by_output(tensor)
            return node.get_tensor_value(as_list=False) if node is not None and node.is_const() else None

        def sole_consumer(tensor: str, *op_types: str):
            users = g.find_output_consumers(tensor)
            if len(users) == 1 and users[0].type in op_types and tensor not in g.outputs:
                return users[0]
            return None

        def other_operand(node, tensor: str) -> str | None:
            """The input of a binary ``node`` that is not ``tensor`` (None when ``tensor`` is not exactly one)."""
            others = [name for name in node.input if name != tensor]
            return others[0] if len(node.input) == 2 and len(others) == 1 else None

        def spatial_mean(node, x: str) -> bool:
            axes = constant(node.input[1]) if len(node.input) == 2 else None
            return (node.type == "Mean" and node.input[0] == x and bool(node.get_attr_value("keep_dims"))
                    and axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) == [1, 2])

        def per_channel(tensor: str | None, channels: int) -> np.ndarray | None:
            """A constant with one value per NHWC channel (or one for all) as a (channels,) vector, else None."""
            value = constant(tensor) if tensor else None
            if (value is None or not np.issubdtype(value.dtype, np.floating) or value.ndim > 4
                    or any(d != 1 for d in value.shape[:-1]) or value.size not in (1, channels)):
                return None
            return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)

        for mean in [node for node in ops if node.type == "Mean"]:
            x = mean.input[0]
            shape = g.get_shape(x)
            if not spatial_mean(mean, x) or shape is None or len(shape) != 4 or shape[3] <= 0:
                continue
            channels = shape[3]
            users = g.find_output_consumers(mean.output[0])
            centred = [u for u in users if u.type == "Sub" and list(u.input) == [x, mean.output[0]]]
            statistics = [u for u in users if u.type != "Sub"]
            if len(centred) != 1 or len(users) != 2 or len(statistics) != 1 or mean.output[0] in g.outputs:
                continue
            centred = centred[0]
            stopped = statistics[0]
            squared = stopped if stopped.type == "SquaredDifference" else (
                sole_consumer(stopped.output[0], "SquaredDifference") if stopped.type in ("StopGradient", "Identity")
                else None)
            mean_used = mean.output[0] if squared is stopped else stopped.output[0]
            if squared is None or sorted(squared.input) != sorted([x, mean_used]):
                continue
            variance = sole_consumer(squared.output[0], "Mean")
            if variance is None or not spatial_mean(variance, squared.output[0]):
                continue
            add_eps = sole_consumer(variance.output[0], "Add", "AddV2")
            eps_input = other_operand(add_eps, variance.output[0]) if add_eps is not None else None
            eps = constant(eps_input) if eps_input else None
            if eps is None or eps.size != 1 or not any(np.isclose(float(eps.ravel()[0]), e, rtol=1e-6, atol=0)
                                                       for e in epsilons):
                continue
            inv = sole_consumer(add_eps.output[0], "Rsqrt")
            scaled = sole_consumer(inv.output[0], "Mul") if inv is not None else None
            if scaled is None:
                continue
            gamma = None
            if other_operand(scaled, inv.output[0]) == centred.output[0]:  # (x - mean) * inv [* gamma]
                product = last = scaled
                gamma_mul = sole_consumer(last.output[0], "Mul")
                gamma = (per_channel(other_operand(gamma_mul, last.output[0]), channels) if gamma_mul is not None
                         else None)
                if gamma is not None:
                    last = gamma_mul
            else:  # (x - mean) * (gamma * inv)
                gamma = per_channel(other_operand(scaled, inv.output[0]), channels)
                product = last = sole_consumer(scaled.output[0], "Mul") if gamma is not None else None
                if product is None or other_operand(product, scaled.output[0]) != centred.output[0]:
                    continue
            if sole_consumer(centred.output[0], "Mul") is not product:
                continue
            add_beta = sole_consumer(last.output[0], "Add", "AddV2")
            beta = per_channel(other_operand(add_beta, last.output[0]), channels) if add_beta is not None else None
            if beta is not None:
                last = add_beta

            out, dtype = last.output[0], g.get_dtype(x)
            batch, height, width = shape[:3]
            scope = mean.name.rsplit("/moments", 1)[0]  # a label for the new nodes, not used for matching
            scale = g.make_const(utils.make_name(f"{scope}/in_scale"),
                                 gamma if gamma is not None else np.ones(channels, np.float32)).output[0]
            bias = g.make_const(utils.make_name(f"{scope}/in_bias"),
                                beta if beta is not None else np.zeros(channels, np.float32)).output[0]
            nchw = [batch, channels, height, width]
            to_nchw = g.make_node("Transpose", [x], attr={"perm": [0, 3, 1, 2]}, shapes=[nchw], dtypes=[dtype])
            norm = g.make_node("InstanceNormalization", [to_nchw.output[0], scale, bias],
                               attr={"epsilon": float(eps.ravel()[0])}, shapes=[nchw], dtypes=[dtype],
                               op_name_scope=scope)
            out_shape = g.get_shape(out)
            g.remove_node(last.name)  # the rest of the chain has no consumers left; tf2onnx drops it
            g.make_node("Transpose", [norm.output[0]], attr={"perm": [0, 2, 3, 1]}, outputs=[out],
                        shapes=[out_shape], dtypes=[dtype])
            fused.append(scope)
        return g.get_nodes()

    return rewrite


def conform_output(proto: onnx.ModelProto, probe: np.ndarray) -> None:
    """Make the graph output a declared (batch, height, width, 1) tensor that really has that shape (in place).

    tf2onnx's transpose optimiser sometimes turns the final NCHW -> NHWC transpose of the one-channel map into a
    Reshape to (1, N, H, W, 1) and loses the Squeeze after it (seen on some conversions of the same model, not
    others). Those are the same pixels in the same order, so a Reshape to the input's (N, H, W) plus one channel
    repairs it. Whatever ONNX Runtime cannot run, or any other shape, is left for ``disagreement`` to report.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    output = graph.output[0]
    batch, height, width = probe.shape[:3]
    try:
        shape = run_onnx(proto, probe, "onnxruntime").shape
    except RuntimeError:
        return  # ``disagreement`` reports a model ONNX Runtime cannot run
    if shape != (batch, height, width, 1) and [d for d in shape if d != 1] == [batch, height, width]:
        raw = f"{output.name}/unconformed"
        for node in graph.node:  # the old producer now writes ``raw``; the Reshape writes the output
            node.output[:] = [raw if name == output.name else name for name in node.output]
            node.input[:] = [raw if name == output.name else name for name in node.input]
        for typed in graph.value_info:  # tf2onnx's rank-5 typing stays with the tensor that has that rank
            if typed.name == output.name:
                typed.name = raw
        graph.initializer.extend([numpy_helper.from_array(np.array(value, np.int64), f"{raw}/{name}")
                                  for name, value in (("start", [0]), ("end", [3]), ("one", [1]))])
        graph.node.extend([
            helper.make_node("Shape", [graph.input[0].name], [f"{raw}/input_shape"]),
            helper.make_node("Slice", [f"{raw}/input_shape", f"{raw}/start", f"{raw}/end"], [f"{raw}/nhw"]),
            helper.make_node("Concat", [f"{raw}/nhw", f"{raw}/one"], [f"{raw}/target"], axis=0),
            helper.make_node("Reshape", [raw, f"{raw}/target"], [output.name]),
        ])
    dims = output.type.tensor_type.shape.dim
    del dims[:]
    for label in DYNAMIC_DIMS:
        dims.add().dim_param = label
    dims.add().dim_value = 1


def run_onnx(proto: onnx.ModelProto, batch: np.ndarray, runtime: str) -> np.ndarray:
    """The first output of an ONNX model on ``batch`` in ``runtime`` ("onnxruntime" or "openvino", CPU; OpenVINO
    compiled for the batch's static shape and in fp32, as ``OpenVinoEngine`` does: OpenVINO's own default on CPUs
    with avx512_bf16 or AMX is bf16, which a parity check must not measure); failures raise a one-line RuntimeError."""
    try:
        if runtime == "onnxruntime":
            import onnxruntime as ort

            session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            return session.run(None, {session.get_inputs()[0].name: batch})[0]
        import openvino as ov

        core = ov.Core()
        model = core.read_model(proto.SerializeToString(), b"")
        model.reshape(list(batch.shape))
        request = core.compile_model(model, "CPU", openvino_cpu_config("fp32")).create_infer_request()
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, copy=True)
    except Exception as exc:  # each runtime raises its own types
        raise RuntimeError(f"{runtime}: {_first_line(exc)}") from None


def disagreement(proto: onnx.ModelProto, probe: np.ndarray, expected: np.ndarray, runtimes: tuple[str, ...]
                 ) -> str | None:
    """How an ONNX model fails to give ``expected`` (Keras's output) on ``probe`` in any of ``runtimes``, or None:
    not running, another output shape, or values beyond the fp32 parity tolerance."""
    tolerance = PARITY_TOLERANCE["fp32"][0]
    for runtime in runtimes:
        try:
            out = run_onnx(proto, probe, runtime)
        except RuntimeError as exc:
            return f"does not run ({exc})"
        if out.shape != expected.shape:
            return (f"gives an output of shape {out.shape} in {runtime} for an input of {probe.shape}; "
                    f"expected {expected.shape}")
        diff = float(np.abs(out - expected).max())
        if not diff <= tolerance:
            return f"differs from Keras by up to {diff:.2e} in {runtime} (tolerance {tolerance:g})"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def onnx_summary(path: str | Path) -> dict:
    """Input/output names and shapes (symbolic dims by name), opset and node count of an ONNX file."""
    import onnx

    proto = onnx.load(str(path))

    def shape(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {"inputs": {v.name: shape(v) for v in proto.graph.input},
            "outputs": {v.name: shape(v) for v in proto.graph.output},
            "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "nodes": len(proto.graph.node)}

