"""Train_1_Step.py end to end on synthetic data: a tiny run, kill + resume, refusals, --help, bad flags.

One tiny run serves several tests (each Train_1 process costs ~30 s of TensorFlow start-up and tracing on
2 cores): it is killed after its first finished epoch, re-run with the same command, and must resume and finish.
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, TF_STARTUP_LOG

EPOCHS = 3
TIMEOUT = 600


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _command(data, out, *extra):
    return [sys.executable, "Train_1_Step.py", f"--data={data}", "--lists=none", "--preset=student", "--width=4",
            "--blocks=1", "--crop=64", "--batch_size=2", f"--epochs={EPOCHS}", "--profile_size=64",
            "--optimizer=adam", "--lr=3e-3", "--samples_per_epoch=0", f"--out={out}", *extra]


def _run(args, timeout=TIMEOUT):
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def _state_epoch(run):
    try:
        return json.loads((run / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _log(run):
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, synthetic_data):
    """Start a 3-epoch run, SIGKILL it once state.json shows a finished epoch, re-run the same command."""
    run = tmp_path_factory.mktemp("train1") / "run"
    cmd = _command(synthetic_data, run)
    first_log = run.parent / "first.txt"
    with open(first_log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and _state_epoch(run) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = _state_epoch(run)
    second = _run(cmd)
    return {"run": run, "killed_rc": proc.returncode, "killed_at": killed_at, "first": first_log.read_text(),
            "second": second, "cmd": cmd}


def test_resume_after_a_kill(resumed_run):
    r = resumed_run
    assert r["killed_rc"] == -signal.SIGKILL, r["first"][-3000:]
    assert 1 <= r["killed_at"] < EPOCHS
    second = r["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming {r['run']} after epoch {r['killed_at']}" in second.stdout
    epochs = [int(row["epoch"]) for row in _log(r["run"])]
    assert epochs == list(range(1, EPOCHS + 1))  # contiguous, no epoch lost or repeated
    state = json.loads((r["run"] / "state.json").read_text())
    assert state["epoch"] == EPOCHS and [h["epoch"] for h in state["history"]] == epochs
    # the second process trained only the missing epochs
    assert f"Epoch {r['killed_at'] + 1}/{EPOCHS}" in second.stdout and f"Epoch {r['killed_at']}/" not in second.stdout


def test_training_loss_goes_down(resumed_run):
    losses = [float(row["loss"]) for row in _log(resumed_run["run"])]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_run_folder_contents(resumed_run):
    from crackseg.train_steps import load_keras_model
    from model import infer_preset

    run = resumed_run["run"]
    for name in ("config.json", "log.csv", "curves.png", "best.keras", "last.keras", "state.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert sorted(p.name for p in (run / "previews").iterdir()) == [f"epoch_{e:03d}.png" for e in
                                                                     range(1, EPOCHS + 1)]
    assert (run / "tensorboard").is_dir()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "student" and config["width"] == 4 and config["epochs"] == EPOCHS
    row = _log(run)[0]
    assert {"loss", "val_score", "val_threshold", "lr", "seconds"} <= set(row)
    assert infer_preset(load_keras_model(run / "last.keras")).width == 4  # registers the saved loss/metrics


def test_keras_warnings_are_quiet(resumed_run):
    text = resumed_run["first"] + resumed_run["second"].stdout + resumed_run["second"].stderr
    assert "ran out of data" not in text and "shuffle=True" not in text


def test_resume_with_a_different_network_is_refused(resumed_run):
    run = resumed_run["run"]
    before = (run / "config.json").read_text()
    cmd = [a for a in resumed_run["cmd"] if not a.startswith(("--preset", "--width"))]
    r = _run(cmd + ["--preset=teacher_cpu", "--width=8"])
    assert r.returncode != 0
    # TensorFlow's C++ start-up lines (oneDNN notice) are printed before its logging can be configured.
    errors = [line for line in r.stderr.splitlines() if line.strip() and not TF_STARTUP_LOG.match(line)]
    assert len(errors) == 1 and errors[0].startswith("error:"), r.stderr[-3000:]
    assert "preset" in errors[0] and "width" in errors[0] and "--out" in errors[0]
    assert "Traceback" not in r.stderr
    assert (run / "config.json").read_text() == before


def test_help_lists_the_flags():
    r = _run([sys.executable, "Train_1_Step.py", "--help"], timeout=120)
    assert r.returncode == 0
    for flag in ("--data=", "--out=", "--preset=", "--epochs=", "--batch_size=", "--crop=", "--lr="):
        assert flag in r.stdout


def test_unknown_flag_is_an_error():
    r = _run([sys.executable, "Train_1_Step.py", "--epochs=1", "--bogus=3"], timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unknown flag --bogus; --help lists the flags"]


def test_run_logger_restores_plateau_and_early_stopping_counters(tmp_path):
    """Their own on_train_begin resets the counters; the logger (last in the list) must restore them after."""
    import keras

    from crackseg.training import RunLogger

    plateau = keras.callbacks.ReduceLROnPlateau("val_mix_f1", mode="max", patience=5)
    stop = keras.callbacks.EarlyStopping("val_mix_f1", mode="max", patience=15)
    state = {"epoch": 6, "best": 0.5, "history": [],
             "callbacks": [{"wait": 3, "best": 0.5, "cooldown_counter": 0}, {"wait": 4, "best": 0.5,
                                                                             "stopped_epoch": 0}]}
    logger = RunLogger(tmp_path, "val_mix_f1", state, [plateau, stop])
    for cb in (plateau, stop, logger):  # the order fit() calls them
        cb.on_train_begin()
    assert (plateau.wait, plateau.best, stop.wait, stop.best) == (3, 0.5, 4, 0.5)
