"""Keras -> ONNX (tf2onnx), parity checks between backends, TensorRT engine build + INT8 entropy calibrator.

TensorFlow, tf2onnx, TensorRT and pycuda are imported inside the functions that need them, so a Jetson with
TensorRT and no TensorFlow can still build an engine from an exported ``.onnx``.

The TensorRT part uses the TensorRT >= 8.5 name-based API (``build_serialized_network``, optimization profiles by
tensor name, ``IInt8EntropyCalibrator2``); it was written from the TensorRT 10 Python API documentation and has
not been run on this project's CPU-only machines.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from .engines import EngineError, model_card_path, openvino_cpu_config, read_model_card
from .io import atomic_path, atomic_write_bytes, atomic_write_json, sha256
from .preprocess import MULTIPLE, prepare

if TYPE_CHECKING:  # annotations only: onnx and tf2onnx are imported by the functions that use them
    import onnx
    import tf2onnx

OPSET = 17
INPUT_NAME = "image"
DYNAMIC_DIMS = ("batch", "height", "width")  # names of the free NHWC dims in the exported graph
# Export check input: batch 2 and H != W, so every (N, H, W) axis of the output is told apart from a unit axis.
PROBE_SHAPE = (2, 64, 96, 3)

# Parity of a candidate against its reference, per precision: (max abs probability difference or None for
# "not checked", largest fraction of mask pixels allowed to differ beyond the borderline ones).
PARITY_TOLERANCE = {"fp32": (1e-3, 0.0), "fp16": (5e-2, 1e-3), "int8": (None, 1e-2)}


class TensorRTUnavailable(EngineError):
    """No TensorRT / pycuda / NVIDIA GPU here; the message is one line saying which."""


# ---------------------------------------------------------------------------------------------- ONNX
def export_onnx(net, out_path: str | Path, opset: int = OPSET, clean: bool = False) -> Path:
    """Export a deployable Keras model to ONNX (dynamic batch, height and width), checked, written atomically.

    ``clean``: the fast-CPU graph -- dilated convolutions as native dilated ``Conv`` (no SpaceToDepth/DepthToSpace
    wrapping and its layout transposes) and every instance norm as one native ``InstanceNormalization`` node
    (see ``instance_norm_fuser``). Same function, fewer and faster nodes.

    Before anything is written the model must give Keras's output, shape (N, H, W, 1) included, on a small
    non-square batch (``PROBE_SHAPE``): in ONNX Runtime, and for ``clean`` also in OpenVINO (the runtime that reads
    it). A clean export whose fused norms fail that is redone with the norms decomposed, saying so; a model that
    still fails raises ``EngineError``. onnx.checker (full check) must pass too.
    """
    import onnx

    from model.layers import InstanceNorm

    if len(net.outputs) != 1:
        raise EngineError(f"{out_path}: export the deployable model (one output, the crack map; "
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
        raise EngineError(f"{out_path}: the exported model {problem}")
    if clean and fused != len(norms):
        print(f"{out_path}: {fused} of {len(norms)} instance norms fused; the others stay decomposed (correct, "
              f"slower)", flush=True)
    proto.producer_name = "crackseg.export"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EngineError(f"{out_path}: exported ONNX model fails onnx.checker ({_first_line(exc)})") from None
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
        request = core.compile_model(model, "CPU", openvino_cpu_config("f32")).create_infer_request()
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


# ---------------------------------------------------------------------------------------------- real images
def _spread(items: list, count: int) -> list:
    """Up to ``count`` items evenly spaced over ``items``."""
    if count <= 0 or not items:
        return []
    picks = np.unique(np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int))
    return [items[i] for i in picks]


def sample_images(data: str, count: int, split: str = "val", lists: str | None = None) -> list[np.ndarray]:
    """``count`` real RGB images from ``split`` of a dataset root (any layout ``crackseg.data`` reads), spread
    evenly over it and topped up from the other splits when it is smaller; or from a plain folder of images."""
    from .data import IMAGE_EXTS, DataError, load_split, read_image

    root = Path(data)
    try:
        splits = load_split(str(data), lists)
        primary = _spread([s.image for s in splits[split]], count)
        others = [s.image for name in splits if name != split for s in splits[name]]
        paths = primary + _spread(others, count - len(primary))
    except DataError:
        folder = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS) if root.is_dir() else []
        paths = _spread(folder, count)
    if not paths:
        raise EngineError(f"{data}: no images found (a dataset root or a folder of images)")
    return [read_image(p) for p in paths]


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` centre crop at native scale (resized up when the image is smaller)."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        scale = size / min(h, w)
        image = cv2.resize(image, (max(size, round(w * scale)), max(size, round(h * scale))),
                           interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


# ---------------------------------------------------------------------------------------------- int8 (CPU)
def quantize_int8(onnx_path: str | Path, out_path: str | Path, calibration: list[np.ndarray]) -> Path:
    """ONNX Runtime static QDQ int8 of ``onnx_path`` (per-channel int8 weights, uint8 activations, min/max ranges
    from ``calibration``: real RGB uint8 images, prepared as for inference), written atomically to ``out_path``.

    Only Conv and ConvTranspose are quantised: no runtime has an int8 InstanceNormalization kernel, so the norms
    stay fp32 between them. OpenVINO runs the QDQ pairs as int8 convolutions (VNNI / AMX), ONNX Runtime too.
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    if not calibration:
        raise EngineError(f"{out_path}: int8 quantisation needs calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {INPUT_NAME: prepare(image)[0]}

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, tempfile.TemporaryDirectory(prefix="crackseg_int8_") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
            source = prepared
        except Exception:  # pre-processing (shape inference, folding) is an optimisation; quantise the graph as is
            source = Path(onnx_path)
        quantize_static(str(source), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=["Conv", "ConvTranspose"])
    return out_path


# ---------------------------------------------------------------------------------------------- parity
def parity_check(reference, candidate, images: list[np.ndarray], threshold: float, precision: str = "fp32"
                 ) -> dict:
    """Compare two engines on the same images.

    Masks must be identical except at borderline pixels: where the reference probability lies within the
    allowed difference of the threshold, rounding alone may flip the mask, so those are reported separately.
    """
    atol, max_mask_fraction = PARITY_TOLERANCE[precision]
    max_diff, pixels, mismatched, borderline = 0.0, 0, 0, 0
    band = atol if atol is not None else 0.0
    for image in images:
        a, b = reference.predict(image), candidate.predict(image)
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        differ = (a >= threshold) != (b >= threshold)
        mismatched += int(differ.sum())
        borderline += int((differ & (np.abs(a - threshold) <= band)).sum())
        pixels += a.size
    beyond = mismatched - borderline
    passed = (atol is None or max_diff <= atol) and beyond <= max_mask_fraction * pixels
    return {"reference": reference.backend, "candidate": candidate.backend, "precision": precision,
            "images": len(images), "pixels": pixels, "threshold": threshold, "max_abs_diff": max_diff,
            "tolerance": atol, "mask_diff_pixels": mismatched, "mask_diff_borderline": borderline,
            "passed": bool(passed)}


def format_parity(r: dict) -> str:
    verdict = "PASS" if r["passed"] else "FAIL"
    tol = f" (<= {r['tolerance']:g})" if r["tolerance"] is not None else ""
    return (f"parity {r['candidate']} vs {r['reference']} [{r['precision']}] on {r['images']} images: "
            f"max |diff| {r['max_abs_diff']:.2e}{tol}, mask pixels differing {r['mask_diff_pixels']} of "
            f"{r['pixels']} ({r['mask_diff_borderline']} borderline) at threshold {r['threshold']:g}: {verdict}")


# ---------------------------------------------------------------------------------------------- model cards
def complete_card_facts(model_path: str | Path, net) -> bool:
    """Fill in the GFLOPs of a .keras model's card written where TensorFlow was missing (Train_3 on a JAX or PyTorch
    GPU machine; see ``crackseg.card.model_facts``). The model file is unchanged, so its sha256 stays valid.
    Returns whether the card changed."""
    from .card import model_facts

    dest = model_card_path(model_path)
    if not dest.is_file():
        return False
    card = read_model_card(model_path)
    if card.get("gflops") is not None:
        return False
    card.update(model_facts(net, int(card.get("flops_input_size", 448))))
    atomic_write_json(dest, card)
    return True


def write_export_card(source: str | Path | None, out_path: str | Path, fmt: str, info: dict) -> Path:
    """Model card beside ``out_path`` with ``exports[fmt] = info`` added: the destination's card when it describes
    the source's model (``student.keras`` and ``student.onnx`` share one), else a copy of the source's card.

    A card left beside ``out_path`` by an earlier model (another top-level sha256) is replaced, not extended: after
    retraining, a re-export must not keep the old model's threshold and validation metrics (student_fast.json)."""
    dest = model_card_path(out_path)
    card = read_model_card(out_path) if dest.is_file() else {}
    source_card = read_model_card(source) if source else {}
    if source_card and card.get("sha256") != source_card.get("sha256"):
        card = source_card
    if "threshold" not in card and "threshold" in source_card:
        card["threshold"] = source_card["threshold"]
    card.setdefault("exports", {})[fmt] = {"file": Path(out_path).name, "sha256": sha256(out_path), **info}
    atomic_write_json(dest, card)
    return dest


# ---------------------------------------------------------------------------------------------- TensorRT
def import_tensorrt():
    """(tensorrt, pycuda.driver) or ``TensorRTUnavailable`` with one line saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT: not available here (no 'tensorrt' Python package; on Jetson it "
                                  "comes with JetPack, elsewhere see requirements-jetson.txt)") from None
    major, minor = (int(p) for p in trt.__version__.split(".")[:2])
    if (major, minor) < (8, 5):
        raise TensorRTUnavailable(f"TensorRT: version {trt.__version__} is too old (the name-based tensor API "
                                  f"needs >= 8.5)")
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise TensorRTUnavailable("TensorRT: pycuda is not installed (needed for GPU buffers)") from None
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            raise TensorRTUnavailable("TensorRT: no NVIDIA GPU found")
    except cuda.Error as exc:
        raise TensorRTUnavailable(f"TensorRT: no usable NVIDIA GPU / driver ({exc})") from None
    return trt, cuda


def tensorrt_status() -> tuple[bool, str]:
    """(available, one line) without raising."""
    try:
        trt, cuda = import_tensorrt()
    except TensorRTUnavailable as exc:
        return False, str(exc)
    return True, f"TensorRT {trt.__version__} on {cuda.Device(0).name()}"


def make_entropy_calibrator(trt, cuda, batches: np.ndarray, batch_size: int, cache_path: str | Path | None):
    """An ``IInt8EntropyCalibrator2`` that feeds ``batches`` (prepared float32 NHWC, all one size) to the builder,
    ``batch_size`` images at a time, and keeps its scale cache in ``cache_path`` (reused when present)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base initialised explicitly
            self.batches = np.ascontiguousarray(batches, dtype=np.float32)
            self.index = 0
            self.device_input = cuda.mem_alloc(self.batches[:batch_size].nbytes)
            self.cache_path = Path(cache_path) if cache_path else None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):  # noqa: ARG002 - one input; TensorRT passes its name
            if self.index + batch_size > len(self.batches):
                return None  # no more data: calibration ends
            cuda.memcpy_htod(self.device_input, np.ascontiguousarray(self.batches[self.index:self.index + batch_size]))
            self.index += batch_size
            return [int(self.device_input)]

        def read_calibration_cache(self):
            if self.cache_path and self.cache_path.is_file():
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if self.cache_path:
                atomic_write_bytes(self.cache_path, bytes(cache))

    return EntropyCalibrator()


def build_tensorrt_engine(onnx_path: str | Path, engine_path: str | Path | None, precision: str = "fp32",
                          calibration_images: list[np.ndarray] | None = None, calibration_size: int = 448,
                          calibration_batch: int = 4, calibration_cache: str | Path | None = None,
                          min_size: int = 32, opt_size: int = 448, max_size: int = 1024, max_batch: int = 4,
                          workspace_mb: int = 2048) -> bytes:
    """Build a serialized TensorRT engine from an ONNX file (optionally written atomically to ``engine_path``).

    One optimization profile covers batch 1..``max_batch`` and square-or-not H, W in ``min_size..max_size``
    (tuned for ``opt_size``). ``int8`` needs ``calibration_images`` (real RGB uint8 training images): they are
    centre-cropped to ``calibration_size`` and fed through an entropy calibrator; layers without INT8 kernels
    fall back to FP16.
    """
    if precision not in PARITY_TOLERANCE:
        raise EngineError(f"precision must be one of {sorted(PARITY_TOLERANCE)}, got {precision!r}")
    for name, value in (("min_size", min_size), ("opt_size", opt_size), ("max_size", max_size),
                        ("calibration_size", calibration_size)):
        if value % MULTIPLE or value <= 0:
            raise EngineError(f"{name} must be a positive multiple of {MULTIPLE}, got {value}")
    if not min_size <= opt_size <= max_size:
        raise EngineError(f"need min_size <= opt_size <= max_size, got {min_size}, {opt_size}, {max_size}")
    if precision == "int8" and not calibration_images and not (calibration_cache and Path(calibration_cache).is_file()):
        raise EngineError("int8 needs calibration images (--calib_data) or an existing calibration cache")
    trt, cuda = import_tensorrt()
    from .engines import _trt_logger

    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it set.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    crack = next((o for o in outputs if o.name == "crack"), outputs[0])
    if len(crack.shape) != 4:  # refused before a long build, as the other backends refuse it at inference
        raise EngineError(f"{onnx_path}: output '{crack.name}' has shape {tuple(crack.shape)}; expected "
                          f"(N, H, W, 1) -- re-export it with TensorRT.py")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    input_name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, min_size, min_size, 3), (1, opt_size, opt_size, 3),
                      (max_batch, max_size, max_size, 3))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)

    cuda_context = cuda.Device(0).retain_primary_context()
    cuda_context.push()  # the calibrator's buffers live in the context TensorRT builds in
    try:
        calibrator = None
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            crops = [square_crop(image, calibration_size) for image in calibration_images or []]
            batches = prepare(np.stack(crops))[0] if crops else np.zeros((0, calibration_size, calibration_size, 3),
                                                                         np.float32)
            batch = max(1, min(calibration_batch, len(crops) or 1, max_batch))
            calib_profile = builder.create_optimization_profile()
            fixed = (batch, calibration_size, calibration_size, 3)
            calib_profile.set_shape(input_name, fixed, fixed, fixed)
            config.set_calibration_profile(calib_profile)
            calibrator = make_entropy_calibrator(trt, cuda, batches, batch, calibration_cache)
            config.int8_calibrator = calibrator  # the local name keeps the Python object alive during the build
        serialized = builder.build_serialized_network(network, config)
    finally:
        cuda_context.pop()
        cuda_context.detach()
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT engine build failed ({precision}); see the TensorRT log above")
    data = bytes(serialized)
    del calibrator
    if engine_path:
        atomic_write_bytes(engine_path, data)
    return data
