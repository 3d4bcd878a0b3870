"""A tiny end-to-end distillation on synthetic data: teacher -> Train_2 soft labels -> Train_3 student (standard and
no-teacher baseline) -> a deployable model with one output + its model card."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crackseg.io import sha256

REPO = Path(__file__).resolve().parents[1]
TINY = ("--width=4", "--blocks=1")
FAST = ("--epochs=1", "--crop=64", "--batch_size=4", "--profile_size=64", "--samples_per_epoch=0")


def run_script(script: str, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout)
    return result


def run_in_process(monkeypatch, capsys, script: str, *args: str) -> str:
    """Run a script as ``__main__`` in this process (TensorFlow is already imported: saves ~10 s a run)."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / script), run_name="__main__")
    return capsys.readouterr().out


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory, synthetic_data) -> dict:
    """A tiny untrained teacher (the pipeline, not its quality, is under test), its labels and a standard student."""
    import model

    root = tmp_path_factory.mktemp("kd")
    teacher = root / "teacher" / "best.keras"
    teacher.parent.mkdir()
    model.build_model("student", None, width=4, blocks=1).save(teacher)
    data = ("--data", synthetic_data, "--lists=none")
    labels = root / "labels"
    train2 = ok(run_script("Train_2_Step.py", f"--teacher={teacher}", *data, f"--out={labels}"))
    deploy = root / "weights" / "student.keras"
    train3 = ok(run_script("Train_3_Step.py", *data, f"--labels={labels}", *TINY, *FAST, f"--out={root / 'student'}",
                           f"--deploy={deploy}"))
    return {"root": root, "teacher": teacher, "data": data, "labels": labels, "deploy": deploy,
            "train2": train2, "train3": train3}


def test_train2_writes_labels_for_each_split(kd_run):
    labels = kd_run["labels"]
    assert "train: 11 written, 0 already there" in kd_run["train2"]
    assert "val: 1 written" in kd_run["train2"] and "test: no images" in kd_run["train2"]
    # the val labels are scored against the ground truth (the card's rule) and the score kept in their manifest
    quality = json.loads((labels / "val" / "manifest.json").read_text())["quality"]
    assert quality["images"] == 1 and 0.0 <= quality["mean_f1"] <= 1.0
    assert f"mean strict F1 {quality['mean_f1']:.4f} at t={quality['threshold']:.2f}" in kd_run["train2"]
    for split, n in (("train", 11), ("val", 1)):
        manifest = json.loads((labels / split / "manifest.json").read_text())
        assert manifest["temperature"] == 10.0 and manifest["split"] == split and len(manifest["images"]) == n
        from crackseg.io import sha256

        assert manifest["teacher_sha256"] == sha256(kd_run["teacher"])
        assert len(list((labels / split).rglob("*.npz"))) == n
    crack = np.load(next((labels / "train").rglob("*.npz")))["crack"]
    assert crack.shape == (96, 128, 4) and crack.dtype == np.float16  # the default --dtype (docs/distillation.md)


def test_train2_resumes_and_refuses_another_temperature(kd_run, monkeypatch, capsys):
    args = (f"--teacher={kd_run['teacher']}", *kd_run["data"], f"--out={kd_run['labels']}")
    assert "train: 0 written, 11 already there" in run_in_process(monkeypatch, capsys, "Train_2_Step.py", *args)
    with pytest.raises(SystemExit) as refused:
        run_in_process(monkeypatch, capsys, "Train_2_Step.py", *args, "--temperature=5")
    line = str(refused.value.code)
    assert "\n" not in line and line.startswith("error: ") and "T=10" in line and "T=5" in line
    assert "--rebuild" in line


def test_student_is_deployable_with_one_output_and_a_card(kd_run):
    import keras

    import model  # noqa: F401  (custom layers)
    from crackseg.card import read_card
    from crackseg.preprocess import prepare
    from crackseg.train_steps import load_keras_model

    out = kd_run["train3"]
    assert "strategy standard: T0=0 T1=10 T2=1, alpha=0.9" in out and "deployable student" in out
    deployed = keras.models.load_model(kd_run["deploy"], compile=False)
    assert len(deployed.outputs) == 1 and deployed.output_shape == (None, None, None, 1)
    card = read_card(kd_run["deploy"], verify=True)
    assert card["strategy"] == "standard" and (card["t0"], card["t1"], card["t2"]) == (0.0, 10.0, 1.0)
    assert card["alpha"] == 0.9 and card["preset"] == "student" and card["architecture"]["width"] == 4
    assert card["params"] == deployed.count_params() and card["gflops"] > 0
    assert 0 < card["threshold"] < 1 and card["validation"]["images"] == 1
    assert card["teacher"]["sha256"] and card["images"] == {"train": 11, "val": 1, "test": 0}
    # the deployed network is the trained real head: mix at T2, crack channel
    trained = load_keras_model(kd_run["root"] / "student" / "best.keras")
    x, _ = prepare(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))
    real = np.asarray(trained(x, training=False)["real"])[..., 1]
    assert np.abs(np.asarray(deployed(x, training=False))[..., 0] - real).max() < 1e-5


def test_no_teacher_baseline_trains_the_same_student(kd_run, monkeypatch, capsys):
    deploy = kd_run["root"] / "weights" / "student_nokd.keras"
    out = run_in_process(monkeypatch, capsys, "Train_3_Step.py", *kd_run["data"], "--strategy=none",
                         "--labels=/nonexistent", *TINY, *FAST, f"--out={kd_run['root'] / 'student_nokd'}",
                         f"--deploy={deploy}")
    assert "strategy none: T0=0 T1=1 T2=1" in out
    assert "loss weights: h, x, y, mix 0.225 each, real 0.1" in out  # alpha 0.9 * T1^2 1 / 4 heads; 1 - alpha
    assert "warning: fine-tuning" not in out  # no --init: nothing to warn about
    card = json.loads(deploy.with_suffix(".json").read_text())
    assert card["strategy"] == "none" and card["teacher"] is None
    assert card["params"] == json.loads(kd_run["deploy"].with_suffix(".json").read_text())["params"]


def test_student_fine_tunes_from_the_deployed_student(kd_run, monkeypatch, capsys):
    """--init starts a new run from a deployed student's weights, and the card says where it started."""
    deploy = kd_run["root"] / "weights" / "student_finetuned.keras"
    out = run_in_process(monkeypatch, capsys, "Train_3_Step.py", *kd_run["data"], f"--labels={kd_run['labels']}",
                         *TINY, *FAST, f"--init={kd_run['deploy']}", "--lr=1e-4",
                         f"--out={kd_run['root'] / 'student_finetuned'}", f"--deploy={deploy}")
    layers_with_weights = out.split("initial weights: ")[1].split(" layers from ")
    assert int(layers_with_weights[0]) > 0 and layers_with_weights[1].startswith(str(kd_run["deploy"]))
    card = json.loads(deploy.with_suffix(".json").read_text())
    assert card["initial_weights"] == {"path": str(kd_run["deploy"]), "sha256": sha256(kd_run["deploy"])}
    assert card["lr"] == 1e-4
    assert json.loads(kd_run["deploy"].with_suffix(".json").read_text())["initial_weights"] is None


def test_fine_tune_deploys_the_interpolation_with_the_best_score(kd_run, monkeypatch, capsys):
    """--interpolate=auto: the deployed weights are (1 - a) * init + a * trained for the a of the sweep with the
    best validation score; the card records the sweep, and a = 0 gives back the init's own weights."""
    import keras

    from crackseg.keras_io import load_keras_model

    deploy = kd_run["root"] / "weights" / "student_wise.keras"
    dataset = Path(kd_run["data"][1]).name  # crackseg.data.dataset_of: the folder holding images/
    out = run_in_process(monkeypatch, capsys, "Train_3_Step.py", *kd_run["data"], f"--labels={kd_run['labels']}",
                         *TINY, *FAST, f"--init={kd_run['deploy']}", "--lr=1e-3", "--interpolate=auto",
                         f"--floor={dataset}=0", f"--out={kd_run['root'] / 'student_wise'}", f"--deploy={deploy}")
    card = json.loads(deploy.with_suffix(".json").read_text())
    record = card["interpolation"]
    assert [row["alpha"] for row in record["sweep"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    best = max(record["sweep"], key=lambda row: (row["score"], row["alpha"]))
    assert record["alpha"] == best["alpha"] and record["start_sha256"] == sha256(kd_run["deploy"])
    assert out.count("interpolate a=") == 5 and card["floor"] == {dataset: 0.0}
    assert all(row["without_floor"]["threshold"] == row["threshold"] for row in record["sweep"])  # F1 >= 0: no limit
    assert f"among the thresholds where {dataset} >= 0" in card["threshold_rule"]
    start = load_keras_model(kd_run["deploy"])
    trained = load_keras_model(kd_run["root"] / "student_wise" / "best.keras")
    shipped = load_keras_model(deploy)
    a = record["alpha"]
    for layer in shipped.layers:
        if layer.weights:
            for got, s, t in zip(layer.get_weights(), start.get_layer(layer.name).get_weights(),
                                 trained.get_layer(layer.name).get_weights()):
                np.testing.assert_allclose(got, (1 - a) * s + a * t, rtol=1e-5, atol=1e-6)
    assert isinstance(shipped, keras.Model)


@pytest.mark.parametrize("flags, message", [(("--interpolate=2",), "expected auto, a number in 0..1"),
                                            (("--interpolate=half",), "expected auto, a number in 0..1"),
                                            (("--interpolate=0.5", "--init="), "no --init was given"),
                                            (("--floor=DeepCrack",), "expected DATASET=F1"),
                                            (("--soft_loss=dice",), "--soft_loss: unknown loss 'dice'")])
def test_bad_interpolate_or_floor_is_one_line_before_training(kd_run, flags, message, tmp_path):
    result = run_script("Train_3_Step.py", *kd_run["data"], f"--labels={kd_run['labels']}", *TINY, *FAST,
                        f"--init={kd_run['deploy']}", *flags, f"--out={tmp_path / 'run'}",
                        f"--deploy={tmp_path / 'student.keras'}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # TF logs its own lines
    assert result.returncode != 0 and len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "state.json").exists()


def test_interpolation_sweep_script_scores_each_alpha(kd_run, tmp_path):
    """scripts/interpolation_sweep.py between the deployed student and its run's checkpoint: one row per a, the
    best one named, the JSON written; a missing model is one line."""
    out = tmp_path / "sweep.json"
    common = ("--data", kd_run["data"][1], "--lists=none", f"--start={kd_run['deploy']}", "--alphas=0,0.5,1",
              "--floor=", "--temperature=1", f"--json_out={out}")
    result = ok(run_script("scripts/interpolation_sweep.py", *common,
                           f"--trained={kd_run['root'] / 'student' / 'best.keras'}"))
    record = json.loads(out.read_text())
    assert [row["alpha"] for row in record["sweep"]] == [0.0, 0.5, 1.0] and result.count("interpolate a=") == 3
    best = max(record["sweep"], key=lambda row: (row["score"], row["alpha"]))
    assert record["best_alpha"] == best["alpha"] and record["start"]["sha256"] == sha256(kd_run["deploy"])
    # the deployed student is the run's best checkpoint at T2: a = 1 scores as the deployed student (a = 0) does
    assert record["sweep"][2]["mean_f1"] == pytest.approx(record["sweep"][0]["mean_f1"], abs=1e-6)
    missing = run_script("scripts/interpolation_sweep.py", *common, f"--trained={tmp_path / 'none.keras'}")
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode == 1 and len(errors) == 1 and "none.keras: model file not found" in errors[0]
