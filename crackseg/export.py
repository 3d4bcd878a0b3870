"""The ship step's names in one place, for callers written before the split (issue 19): each lives in the module of
its job -- ``onnx_export`` (conversion, the tf2onnx rewriter, output repair), ``parity``, ``quantize`` (int8),
``tensorrt`` (build, calibrator, logger), ``card`` (card writing) and ``data`` (sampling real images).

New code imports from those modules; this one only re-exports them and has no code of its own.
"""
from __future__ import annotations

from .card import complete_card_facts, write_export_card
from .data import sample_images, square_crop
from .errors import EngineError, ExportError
from .onnx_export import (DYNAMIC_DIMS, INPUT_NAME, OPSET, PROBE_SHAPE, conform_output, disagreement,
                          explicit_dilated_padding, export_onnx, instance_norm_fuser, native_dilated_convolutions,
                          onnx_summary, run_onnx)
from .parity import PARITY_TOLERANCE, format_parity, parity_check
from .quantize import quantize_full_int8, quantize_int8
from .tensorrt import (TensorRTUnavailable, build_tensorrt_engine, import_tensorrt, make_entropy_calibrator,
                       tensorrt_status)

__all__ = ["complete_card_facts", "write_export_card", "sample_images", "square_crop", "EngineError", "ExportError",
           "DYNAMIC_DIMS", "INPUT_NAME", "OPSET", "PROBE_SHAPE", "conform_output", "disagreement",
           "explicit_dilated_padding", "export_onnx", "instance_norm_fuser", "native_dilated_convolutions",
           "onnx_summary", "run_onnx", "PARITY_TOLERANCE", "format_parity", "parity_check", "quantize_full_int8",
           "quantize_int8", "TensorRTUnavailable", "build_tensorrt_engine", "import_tensorrt",
           "make_entropy_calibrator", "tensorrt_status"]
