"""Shared test set-up: repository paths, the real data folder (skip when absent), a small synthetic dataset.

Add new shared fixtures at the end of this file, one section per topic.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"  # ../shared/datasets beside the checkout (CI has it too)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Lines TensorFlow's C++ side prints at import before TF_CPP_MIN_LOG_LEVEL applies (e.g. the oneDNN notice).
TF_STARTUP_LOG = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IW]\d{4} \d\d:\d\d:")

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not found at {SHARED}")


def pytest_configure(config: pytest.Config) -> None:
    # Keras' TensorFlow backend converts tensors with np.array(); TF 2.21's EagerTensor.__array__ predates numpy 2's
    # copy keyword, so numpy warns on every conversion. Not ours to fix, and it buries the warnings that are.
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


# ---------------------------------------------------------------------------------------------- data
SYNTHETIC_COUNT = 12
SYNTHETIC_SIZE = (96, 128)  # H, W


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real ``../shared/datasets`` folder; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A generic-layout dataset (``images/`` + ``masks/``) of 12 images 96x128 made by datasets/synthetic.py.

    Shared by the whole session: tests must not modify it (copy it first).
    """
    from datasets.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic"), SYNTHETIC_COUNT, SYNTHETIC_SIZE, seed=0)


# ---------------------------------------------------------------------------------------------- deployment
TINY_THRESHOLD = 0.4  # the tiny model's card threshold: not the 0.5 default, so reading the card is tested


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict[str, Path]:
    """An untrained deployable student of width 4 and 1 block (``tiny.keras``), its card (threshold 0.4) and its
    ONNX export (``tiny.onnx``, sharing ``tiny.json``). Shared by the session: copy before modifying."""
    import json

    import model as mcff
    from crackseg.export import export_onnx

    folder = tmp_path_factory.mktemp("tiny_model")
    net = mcff.deploy_model(mcff.build_model("student", None, width=4, blocks=1))
    net.save(folder / "tiny.keras")
    (folder / "tiny.json").write_text(json.dumps({"model": "tiny.keras", "threshold": TINY_THRESHOLD}))
    export_onnx(net, folder / "tiny.onnx")
    return {"keras": folder / "tiny.keras", "onnx": folder / "tiny.onnx", "card": folder / "tiny.json",
            "folder": folder}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- ablation scripts
@pytest.fixture()
def train3_in_process(monkeypatch) -> list[list[str]]:
    """scripts/kd_ablation.py's ``run_train3`` (scripts/aug_ablation.py's too) runs Train_3 in this process
    (TensorFlow already imported: seconds instead of a new interpreter each); returns the commands run."""
    import runpy

    sys.path.insert(0, str(REPO / "scripts"))
    import kd_ablation

    calls: list[list[str]] = []

    def run(command: list[str]) -> int:
        calls.append(command)
        monkeypatch.setattr(sys, "argv", list(command))
        try:
            runpy.run_path(str(REPO / command[0]), run_name="__main__")
        except SystemExit as exc:
            return 1 if exc.code else 0
        return 0

    monkeypatch.setattr(kd_ablation, "run_train3", run)
    return calls


# ---------------------------------------------------------------------------------------------- CPU kinds
# The three kinds of x86 CPU the project meets: their /proc/cpuinfo flags (those crackseg.precision reads) and what
# OpenVINO 2026 reports for them (OPTIMIZATION_CAPABILITIES; BF16 from AVX-512 up, FP16 with AVX-512 FP16). Tests
# whose outcome depends on the CPU fake each kind instead of expecting this machine's answer.
CPU_KINDS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "avx2": (frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"}),
             ("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")),
    "avx512_vnni_bf16": (frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                                    "avx512_vnni", "avx512_bf16"}),
                         ("BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")),
    "amx": (frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                       "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile"}),
            ("FP32", "BF16", "FP16", "INT8", "BIN", "EXPORT_IMPORT")),
}


def fake_cpu(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], capabilities: tuple[str, ...]) -> None:
    """crackseg sees a CPU with ``flags`` whose OpenVINO reports ``capabilities``. Patched in every loaded crackseg
    module that holds ``cpu_flags`` / ``openvino_capabilities`` (``from .precision import ...`` copies them), so it
    holds wherever those functions are called from; OpenVINO itself ignores a bf16 hint the real CPU cannot run."""
    from crackseg import precision

    fakes = {precision.cpu_flags: lambda: frozenset(flags),
             precision.openvino_capabilities: lambda: tuple(capabilities)}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "crackseg" or name.startswith("crackseg.")):
            continue
        for attr in ("cpu_flags", "openvino_capabilities"):
            fake = fakes.get(getattr(module, attr, None))
            if fake is not None:
                monkeypatch.setattr(module, attr, fake)


@pytest.fixture(params=sorted(CPU_KINDS))
def cpu_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each kind of CPU in turn (``CPU_KINDS``), faked: the test runs once per kind on any machine."""
    fake_cpu(monkeypatch, *CPU_KINDS[request.param])
    return request.param
