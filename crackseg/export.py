"""Keras -> ONNX (tf2onnx), parity checks between backends, TensorRT engine build + INT8 entropy calibrator.

TensorFlow, tf2onnx, TensorRT and pycuda are imported inside the functions that need them, so a Jetson with
TensorRT and no TensorFlow can still build an engine from an exported ``.onnx``.

The TensorRT part uses the TensorRT >= 8.5 name-based API (``build_serialized_network``, optimization profiles by
tensor name, ``IInt8EntropyCalibrator2``); it was written from the TensorRT 10 Python API documentation and has
not been run on this project's CPU-only machines.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from .engines import EngineError, model_card_path, read_model_card
from .io import atomic_write_bytes, atomic_write_json, sha256
from .preprocess import MULTIPLE, prepare

OPSET = 17
INPUT_NAME = "image"
DYNAMIC_DIMS = ("batch", "height", "width")  # names of the free NHWC dims in the exported graph

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
    (see ``fuse_instance_norms``). Same function, fewer and faster nodes.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    # Keras 3 models carry no input signature tf2onnx can read, so it is given explicitly.
    signature = (tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT_NAME),)
    if clean:
        with native_dilated_convolutions():
            proto, _ = tf2onnx.convert.from_keras(net, input_signature=signature, opset=opset)
        explicit_dilated_padding(proto)
        unfused = onnx.ModelProto()
        unfused.CopyFrom(proto)
        fuse_instance_norms(proto)
        if not same_outputs(unfused, proto):
            # Seen intermittently in CI: a fused graph whose output differs; the decomposed norms are always right.
            print(f"{out_path}: instance-norm fusion changed the outputs; norms left decomposed", flush=True)
            proto = unfused
    else:
        proto, _ = tf2onnx.convert.from_keras(net, input_signature=signature, opset=opset)
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, label in zip(dims, DYNAMIC_DIMS):
            if not dim.HasField("dim_value"):  # tf2onnx names them unk__NNN; readable names help TensorRT users
                dim.dim_param = label
    proto.producer_name = "crackseg.export"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EngineError(f"{out_path}: exported ONNX model fails onnx.checker ({exc})") from None
    atomic_write_bytes(out_path, proto.SerializeToString())
    return Path(out_path)


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


def _constant(graph, name: str) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def same_outputs(a, b, atol: float = 1e-4) -> bool:
    """Do two ONNX models give the same output (shape and values) on one small random image in ONNX Runtime?"""
    import onnxruntime as ort

    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 48, 3)).astype(np.float32)
    outs = []
    for proto in (a, b):
        try:
            session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            outs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
        except Exception:  # an invalid rewritten graph is "not the same"
            return False
    return outs[0].shape == outs[1].shape and bool(np.allclose(outs[0], outs[1], atol=atol))


def fuse_instance_norms(proto) -> int:
    """Replace each decomposed instance norm of a tf2onnx graph by one ``InstanceNormalization`` node, in place.

    The pattern (NCHW after tf2onnx's transpose optimiser; ``keras.ops.moments`` + ``(x - mean) * rsqrt(var + eps)``,
    then ``* gamma + beta`` unless tf2onnx folded away gamma = 1 / beta = 0)::

        mean = GlobalAveragePool(x);  d = Sub(x, [Reshape] mean) (one node or two);  v = GlobalAveragePool(d*d)
        y = Mul(d, Reciprocal(Sqrt(Add(v, eps))))  [ -> Mul(y, gamma) ] [ -> Add(y, beta) ]
        (or gamma folded first: y = Mul(d, Mul(Reciprocal(...), gamma)))

    Returns the number of norms fused; nodes left without consumers are removed.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {v.name for v in graph.output}

    def only_consumer(name: str, op_type: str):
        users = consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in graph_outputs:
            return users[0]
        return None

    def channel_vector(value: np.ndarray | None, channels: int | None) -> np.ndarray | None:
        if value is None or value.size not in (1, channels or value.size):
            return None
        if value.ndim == 4 and value.size > 1 and value.shape[1] != value.size:
            return None  # not per-channel in NCHW
        return value.reshape(-1).astype(np.float32)

    fused, replacements = 0, []
    for mean_node in [n for n in graph.node if n.op_type == "GlobalAveragePool"]:
        x = mean_node.input[0]
        mean = mean_node.output[0]
        means = {mean} | {n.output[0] for n in consumers.get(mean, []) if n.op_type == "Reshape"}
        differences = {n.output[0] for n in consumers.get(x, []) if n.op_type == "Sub" and n.input[1] in means}
        square = next((n for d in differences for n in consumers.get(d, [])
                       if n.op_type == "Mul" and n.input[0] == n.input[1] == d), None)
        if square is None:
            continue
        var_node = only_consumer(square.output[0], "GlobalAveragePool")
        add_eps = var_node and only_consumer(var_node.output[0], "Add")
        sqrt = add_eps and only_consumer(add_eps.output[0], "Sqrt")
        recip = sqrt and only_consumer(sqrt.output[0], "Reciprocal")
        scale = recip and only_consumer(recip.output[0], "Mul")
        if scale is None:
            continue
        eps = _constant(graph, add_eps.input[1] if add_eps.input[0] == var_node.output[0] else add_eps.input[0])
        if eps is None or eps.size != 1:
            continue
        gamma, beta = None, None
        if not differences & set(scale.input):  # tf2onnx may fold gamma into the inverse first: inv * gamma
            other = scale.input[1] if scale.input[0] == recip.output[0] else scale.input[0]
            gamma = channel_vector(_constant(graph, other), None)
            scale = only_consumer(scale.output[0], "Mul") if gamma is not None else None
            if scale is None or not differences & set(scale.input):
                continue
        last = scale
        nxt = only_consumer(last.output[0], "Mul") if gamma is None else None
        if nxt is not None:
            other = nxt.input[1] if nxt.input[0] == last.output[0] else nxt.input[0]
            gamma = channel_vector(_constant(graph, other), None)
            if gamma is not None:
                last = nxt
        nxt = only_consumer(last.output[0], "Add")
        if nxt is not None:
            other = nxt.input[1] if nxt.input[0] == last.output[0] else nxt.input[0]
            beta = channel_vector(_constant(graph, other), gamma.size if gamma is not None and gamma.size > 1 else None)
            if beta is not None:
                last = nxt
        replacements.append((mean_node, last, x, float(eps.reshape(-1)[0]), gamma, beta))

    channel_counts = _channel_counts(proto) if replacements else {}
    for mean_node, last, x, eps, gamma, beta in replacements:
        channels = max([v.size for v in (gamma, beta) if v is not None] + [channel_counts.get(x, 0)])
        if channels <= 1:
            continue  # channel count unknown: leave this norm decomposed (still correct)
        base = mean_node.name.rsplit("/moments", 1)[0]
        gamma_value = np.broadcast_to(gamma if gamma is not None else np.float32(1), (channels,)).astype(np.float32)
        beta_value = np.broadcast_to(beta if beta is not None else np.float32(0), (channels,)).astype(np.float32)
        graph.initializer.extend([numpy_helper.from_array(gamma_value, f"{base}/in_gamma"),
                                  numpy_helper.from_array(beta_value, f"{base}/in_beta")])
        node = helper.make_node("InstanceNormalization", [x, f"{base}/in_gamma", f"{base}/in_beta"],
                                [last.output[0]], name=f"{base}/InstanceNormalization", epsilon=eps)
        position = list(graph.node).index(last)
        graph.node.remove(last)
        graph.node.insert(position, node)
        fused += 1
    remove_unused(proto)
    return fused


def _channel_counts(proto) -> dict[str, int]:
    """Static channel count (NCHW axis 1) of every 4-D tensor shape inference can type."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    counts = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            counts[value.name] = int(dims[1].dim_value)
    return counts


def remove_unused(proto) -> None:
    """Drop nodes whose outputs nothing uses and initializers no node reads (in place)."""
    graph = proto.graph
    needed = {v.name for v in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used_inits = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)


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
def write_export_card(source: str | Path | None, out_path: str | Path, fmt: str, info: dict) -> Path:
    """Model card beside ``out_path``: the destination's card if it has one (shared by ``student.keras`` and
    ``student.onnx``), else a copy of the source's, with ``exports[fmt] = info`` added."""
    dest = model_card_path(out_path)
    card = read_model_card(out_path) if dest.is_file() else (read_model_card(source) if source else {})
    if source and "threshold" not in card:
        source_card = read_model_card(source)
        if "threshold" in source_card:
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
