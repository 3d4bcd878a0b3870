"""int8 for the CPU: the full-graph OpenVINO int8 model that ships (NNCF post-training quantisation, with
accuracy-aware fallback of the layers that hurt), and the older ONNX Runtime QDQ model (Conv / ConvTranspose only),
which benchmark.py still measures on ONNX Runtime.

NNCF, OpenVINO and ONNX Runtime are imported inside the functions; NNCF is needed at export time only
(requirements.txt), never on an edge device: the int8 model is an ordinary OpenVINO IR (``.xml`` + ``.bin``).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ExportError
from .io import atomic_path
from .onnx_export import INPUT_NAME
from .precision import MAX_INT8_F1_DROP
from .preprocess import crop_back, prepare


def quantize_int8(onnx_path: str | Path, out_path: str | Path, calibration: list[np.ndarray]) -> Path:
    """ONNX Runtime static QDQ int8 of ``onnx_path`` (per-channel int8 weights, uint8 activations, min/max ranges
    from ``calibration``: real RGB uint8 images, prepared as for inference), written atomically to ``out_path``.

    Weights use 7 of the 8 bits (``reduce_range``): without VNNI, uint8 x int8 products are summed in pairs into
    saturating 16-bit registers (AVX2's vpmaddubsw), which full-range weights overflow (on the AVX2 EPYC: −1.5 pt F1
    on benchmark.py's crops with 8 bits, −0.17 pt with 7; docs/speed.md).

    Only Conv and ConvTranspose are quantised: ONNX Runtime has no int8 InstanceNormalization kernel, so the norms
    stay fp32 between them. OpenVINO runs the QDQ pairs as int8 convolutions (VNNI / AMX), ONNX Runtime too.
    ``quantize_full_int8`` quantises the whole graph instead (what ships).
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    if not calibration:
        raise ExportError(f"{out_path}: int8 quantisation needs calibration images")

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
                        op_types_to_quantize=["Conv", "ConvTranspose"], reduce_range=True)
    return out_path


# ---------------------------------------------------------------------------------------------- full int8 (NNCF)
def strict_f1(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], threshold: float) -> float:
    """Pooled strict F1 at ``threshold`` (the validation F1 every report uses: ``crackseg.metrics``)."""
    from .metrics import MetricAccumulator

    acc = MetricAccumulator(threshold, 0)
    for prob, truth in zip(probs, truths):
        acc.update(prob, truth)
    return float(acc.result()["strict"]["f1"])


def _predict_compiled(compiled, image: np.ndarray) -> np.ndarray:
    batch, size = prepare(image)
    return crop_back(np.asarray(compiled(batch)[0]), size)[0]


def save_ir(model, out_xml: str | Path) -> Path:
    """Write an OpenVINO model as ``out_xml`` + ``.bin`` without a half-written pair ever standing there: both are
    saved into a hidden folder beside them, then renamed (.bin first, the .xml that names it last)."""
    import openvino as ov

    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_xml.stem}.", dir=out_xml.parent) as scratch:
        tmp_xml = Path(scratch) / out_xml.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), out_xml.with_suffix(".bin"))
        os.replace(tmp_xml, out_xml)
    return out_xml


def quantize_full_int8(onnx_path: str | Path, out_xml: str | Path | None, calibration: list[np.ndarray], *,
                       validation: Sequence[tuple[np.ndarray, np.ndarray]] = (), threshold: float = 0.5,
                       max_drop: float = MAX_INT8_F1_DROP, per_channel: bool = True, accuracy_control: bool = True,
                       log: Callable[[str], None] = print) -> tuple[object, dict]:
    """The whole graph of ``onnx_path`` (the clean export) quantised to int8 by NNCF post-training quantisation:
    convolutions, transposed convolutions, the instance norms' inputs (MVN) and the element-wise ops between them
    (what OpenVINO's CPU plugin runs in int8), calibrated on ``calibration`` (real RGB uint8 training crops).

    With ``validation`` ((image, mask) pairs: the validation split at full size) and ``accuracy_control``, NNCF's
    accuracy-aware fallback returns the layers that cost most strict F1 to fp32 until the drop is within
    ``max_drop`` (absolute); ``per_channel``: weight scales per output channel (else per tensor). Returns (the
    OpenVINO model, facts for the card); written as an IR to ``out_xml`` (atomically) when given.
    """
    try:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    except ImportError as exc:
        raise ExportError(f"{onnx_path}: full int8 needs nncf and openvino at export time ({exc}); "
                          f"pip install -r requirements.txt") from None
    if not calibration:
        raise ExportError(f"{out_xml or onnx_path}: int8 quantisation needs calibration images")
    model = ov.Core().read_model(str(onnx_path))
    calib = nncf.Dataset(list(calibration), lambda image: prepare(image)[0])
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=None if per_channel else QuantizationParameters(per_channel=False))
    started = time.perf_counter()
    facts: dict = {"method": "NNCF post-training quantisation of the OpenVINO model (whole graph)",
                   "nncf": nncf.__version__, "openvino": ov.__version__, "calibration_images": len(calibration),
                   "calibration_size": list(calibration[0].shape[:2]),
                   "weights": "int8 per channel" if per_channel else "int8 per tensor",
                   "activations": "int8 per tensor"}
    if validation and accuracy_control:
        items = list(validation)

        def validate(compiled, data) -> float:
            data = list(data)
            return strict_f1([_predict_compiled(compiled, image) for image, _ in data], [t for _, t in data],
                             threshold)

        quantized = nncf.quantize_with_accuracy_control(
            model, calib, nncf.Dataset(items, lambda item: prepare(item[0])[0]), validate, max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration), advanced_quantization_parameters=advanced)
        facts["accuracy_control"] = {"metric": f"strict F1 at threshold {threshold:g}", "max_drop": max_drop,
                                     "validation_images": len(items)}
    else:
        quantized = nncf.quantize(model, calib, subset_size=len(calibration), advanced_parameters=advanced)
        facts["accuracy_control"] = None
    ops = [op.get_type_name() for op in quantized.get_ops()]
    facts["fake_quantize_nodes"] = ops.count("FakeQuantize")
    facts["seconds"] = round(time.perf_counter() - started, 1)
    log(f"int8: {facts['fake_quantize_nodes']} quantisers in the graph ({facts['weights']} weights), "
        f"{len(calibration)} calibration crops, {facts['seconds']:.0f} s")
    if out_xml:
        save_ir(quantized, out_xml)
    return quantized, facts
