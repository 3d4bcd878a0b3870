"""One precision vocabulary (``fp32``, ``fp16``, ``bf16``, ``int8``) and what this CPU has for each of them.

``auto`` is not a precision but a request: ``crackseg.engines`` turns it into one, from the CPU's int8 dot-product units
(``int8_units``: AMX, AVX-512 VNNI, AVX-VNNI) or, without them, its AVX2 int8 kernels (``avx2_int8``), OpenVINO's
BF16 capability and the int8 model's card. The old word ``f32`` is still accepted (``normalize_precision``); only the
new words are printed or recorded. Nothing here imports a runtime at import time.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import EngineError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CPU_PRECISIONS = ("auto", "fp32", "bf16", "int8")  # what --precision takes on camera.py / evaluate.py (OpenVINO)
ALIASES = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bfloat16": "bf16"}
INT8_UNIT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # /proc/cpuinfo flags of int8 dot-product instructions
MACHINE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                 "amx_tile", "avx512_fp16")
MAX_INT8_F1_DROP = 0.005  # auto picks an int8 model only when its card records validation F1 within 0.5 pt of fp32


def normalize_precision(name: str, allowed: tuple[str, ...] = CPU_PRECISIONS) -> str:
    """``name`` in the project's vocabulary (``f32`` -> ``fp32``), or ``EngineError`` naming the choices."""
    word = ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if word not in allowed:
        raise EngineError(f"unknown precision {name!r}; choose one of {allowed}")
    return word


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def int8_units(flags: frozenset[str] | None = None) -> list[str]:
    """The int8 dot-product units this CPU has (AMX, AVX-512 VNNI, AVX-VNNI), by their /proc/cpuinfo flag names."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in INT8_UNIT_FLAGS if f in flags]


def avx2_int8(flags: frozenset[str] | None = None) -> bool:
    """True on an AVX2 CPU without int8 dot-product units: OpenVINO then runs int8 with AVX2 byte multiplies summed
    in 16-bit pairs (``jit_avx2_I8``). Still faster than fp32 (on the AVX2 EPYC: int8 peak 270 vs fp32 141 GFLOP/s,
    the full-int8 student 1.62x OpenVINO fp32; docs/speed.md), but those 16-bit sums saturate on full-range int8
    weights: NNCF's full-int8 IR keeps its first layer in 7 bits (NNCF's overflow fix, on by default) and kept F1
    there; a Conv-only QDQ model with 8-bit weights lost 1.5 pt (``quantize_int8`` now writes 7-bit weights)."""
    flags = cpu_flags() if flags is None else flags
    return "avx2" in flags and not int8_units(flags)


@lru_cache(maxsize=1)
def openvino_capabilities() -> tuple[str, ...]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (e.g. FP32, BF16, INT8), () without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return ()
    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_cpu_config(precision: str = "fp32") -> dict[str, str]:
    """OpenVINO CPU compile settings naming the inference precision explicitly: OpenVINO's own default on CPUs with
    avx512_bf16 or AMX is bf16, which changes the masks and fails fp32 parity checks. An int8 model runs its
    quantised ops in int8 and the rest in fp32."""
    word = normalize_precision(precision, PRECISIONS)
    return {"INFERENCE_PRECISION_HINT": "bf16" if word == "bf16" else "f32"}


def machine_line() -> str:
    """``CPU model, N cores, flags: ...`` -- what every speed figure is reported with."""
    import os

    flags = [f for f in MACHINE_FLAGS if f in cpu_flags()]
    return f"{cpu_model()}, {os.cpu_count()} cores, flags: {' '.join(flags) or 'none of ' + '/'.join(MACHINE_FLAGS)}"
