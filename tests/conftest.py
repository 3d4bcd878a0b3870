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
