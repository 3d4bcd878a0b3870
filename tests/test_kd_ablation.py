"""scripts/kd_ablation.py: the paired interval on hand-computed numbers, and on tiny synthetic data the ablation
(two arms x two seeds with a stand-in for Train_3: resume after a kill, refusal of another recipe) and the strategies
table with one real Train_3 run, on soft labels from an ensemble of two tiny teachers with TTA written by
Train_2_Step."""
from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import kd_ablation  # noqa: E402

TINY = ("--width=4", "--blocks=1", "--epochs=1", "--crop=64", "--batch_size=4", "--profile_size=64",
        "--samples_per_epoch=0")


# ---------------------------------------------------------------------------------------------- statistics
def test_paired_interval_on_hand_computed_numbers():
    kd = {0: 0.80, 1: 0.82, 2: 0.81, 7: 0.99}  # seed 7 has no no-KD partner: left out
    nokd = {0: 0.78, 1: 0.79, 2: 0.80}
    g = kd_ablation.paired_interval(kd, nokd)
    # d = 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t(0.975, 2) = 4.302653, half = 4.302653 * 0.01 / sqrt(3)
    assert g["n"] == 3 and g["seeds"] == [0, 1, 2] and g["differences"] == pytest.approx([0.02, 0.03, 0.01])
    assert g["mean"] == pytest.approx(0.02)
    assert g["low"] == pytest.approx(0.02 - 0.0248414, abs=1e-6)
    assert g["high"] == pytest.approx(0.02 + 0.0248414, abs=1e-6)
    two = kd_ablation.paired_interval({0: 0.5, 1: 0.7}, {0: 0.4, 1: 0.4})  # d = 0.1, 0.3: sd 0.1414, t = 12.7062
    assert two["mean"] == pytest.approx(0.2) and two["high"] - two["mean"] == pytest.approx(12.7062047 * 0.1, 1e-5)
    one = kd_ablation.paired_interval({0: 0.5}, {0: 0.4})
    assert one["mean"] == pytest.approx(0.1) and one["low"] is None and one["high"] is None
    assert kd_ablation.paired_interval({}, {0: 0.4})["mean"] is None


def test_strategy_temperatures_and_arguments():
    assert kd_ablation.strategy_temperatures("standard", 5) == (0.0, 5, 1.0)
    assert kd_ablation.strategy_temperatures("hyperthermal", 15) == (15, 15, 15)
    assert kd_ablation.strategy_temperatures("non-isothermal", 5) == (0.0, 5, 5)
    assert kd_ablation.strategy_temperatures("none", 10) == (0.0, 1.0, 1.0)
    own, passthrough = kd_ablation.parse_args(["--seeds=3,4", "--epochs=2", "--lists=none", "--no-teacher_eval"])
    assert own["seeds"] == "3,4" and own["teacher_eval"] == "false"
    assert passthrough[0] == "--epochs=2" and "--lists=none" in passthrough
    assert "--data=../shared/datasets" in passthrough
    for bad in ("--deploy=y", "--t1=5"):  # set per run by the script
        with pytest.raises(SystemExit, match="set by kd_ablation.py"):
            kd_ablation.parse_args([bad])
    with pytest.raises(SystemExit, match="distinct"):
        kd_ablation.int_list("0,0", "seeds")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, synthetic_data):
    """Split lists for the synthetic data, two tiny untrained teachers and their TTA ensemble soft labels."""
    import model
    from crackseg.data import find_samples, write_list

    root = tmp_path_factory.mktemp("ablation")
    samples = sorted(find_samples(str(synthetic_data)), key=lambda s: s.id)
    lists = root / "lists"
    lists.mkdir()
    write_list(lists / "train.txt", samples[:4])  # few: Train_2 with two teachers x 8 views per image
    write_list(lists / "val.txt", samples[8:10])
    write_list(lists / "test.txt", samples[10:])
    teachers = []
    for i in range(2):
        path = root / f"teacher{i}.keras"
        model.build_model("student", None, width=4, blocks=1).save(path)
        teachers.append(path)
    deployed = root / "deployed.keras"  # an untrained deployable student, for the stand-in of Train_3
    model.deploy_model(model.build_model("student", None, width=4, blocks=1)).save(deployed)
    return {"root": root, "data": str(synthetic_data), "lists": lists, "teachers": teachers,
            "labels": root / "labels", "deployed": deployed}


@pytest.fixture(scope="module")
def soft_labels(tiny_setup) -> str:
    """Train_2_Step's soft labels (ensemble of the two teachers, TTA) for the train and val lists, made once for
    whichever test asks first, so each test runs alone or in any order; returns what Train_2 printed."""
    s = tiny_setup
    argv = ["Train_2_Step.py", f"--teacher={','.join(map(str, s['teachers']))}", "--tta", f"--data={s['data']}",
            f"--lists={s['lists']}", "--splits=train,val", f"--out={s['labels']}"]
    with pytest.MonkeyPatch.context() as patched, contextlib.redirect_stdout(io.StringIO()) as printed:
        patched.setattr(sys, "argv", argv)
        patched.chdir(REPO)
        runpy.run_path(str(REPO / "Train_2_Step.py"), run_name="__main__")
    return printed.getvalue()


@pytest.fixture()
def fake_train3(monkeypatch, tiny_setup):
    """A stand-in for Train_3 that deploys the untrained tiny student with a card (threshold by arm and seed, so the
    arms score differently): the ablation's bookkeeping without minutes of training per run. ``kill`` names a run
    folder whose next training is interrupted before it deploys (as a kill would)."""
    import shutil

    from crackseg.card import write_card

    calls, kill = [], set()

    def run(command):
        flags = dict(a[2:].split("=", 1) for a in command[1:] if a.startswith("--") and "=" in a)
        deploy = Path(flags["deploy"])
        calls.append(command)
        if deploy.parent.name in kill:
            kill.discard(deploy.parent.name)
            raise KeyboardInterrupt
        shutil.copyfile(tiny_setup["deployed"], deploy)
        offset = 0.05 if flags["strategy"] != "none" else 0.0
        write_card(deploy, {"model": deploy.name, "threshold": 0.3 + 0.1 * int(flags["seed"]) + offset,
                            "strategy": flags["strategy"]})
        return 0

    monkeypatch.setattr(kd_ablation, "run_train3", run)
    return calls, kill


@pytest.fixture()
def evaluations(monkeypatch):
    from crackseg import evaluation

    calls = []
    real = evaluation.evaluate_model

    def counted(model, pairs, *args, **kwargs):
        calls.append((Path(model).parent.name, len(pairs)))
        return real(model, pairs, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_model", counted)
    return calls


def test_train2_writes_ensemble_tta_labels(tiny_setup, soft_labels):
    from crackseg.distill import ensemble_sha256, read_manifest
    from crackseg.io import sha256

    s, out = tiny_setup, soft_labels
    assert "train: 4 written" in out and "val: 2 written" in out
    assert "val labels (mix head, TTA d4) against the ground truth: mean strict F1" in out
    manifest = read_manifest(s["labels"] / "train")
    shas = [sha256(p) for p in s["teachers"]]
    assert manifest["teacher_sha256"] == ensemble_sha256(shas) and manifest["tta"] == "d4"
    assert [t["sha256"] for t in manifest["teachers"]] == shas and manifest["dtype"] == "float16"
    assert manifest["teachers"][1]["path"] == str(s["teachers"][1])
    # (refusal of the same teachers without TTA: test_distill.py::test_label_identity_includes_ensemble_tta_and_dtype)


def test_ablation_two_seeds_resumes_after_a_kill_and_refuses_another_recipe(tiny_setup, soft_labels, monkeypatch,
                                                                            capsys, fake_train3, evaluations):
    from crackseg.distill import ensemble_sha256
    from crackseg.io import sha256

    s = tiny_setup
    calls, kill = fake_train3
    out, results = s["root"] / "runs", s["root"] / "results" / "kd_ablation.json"
    args = ["--seeds=0,1", f"--data={s['data']}", f"--lists={s['lists']}", f"--labels={s['labels']}",
            f"--out={out}", f"--results={results}", *TINY]
    monkeypatch.chdir(REPO)
    kill.add("nokd_seed1")  # killed while training the last run
    with pytest.raises(KeyboardInterrupt):
        kd_ablation.main(args)
    partial = json.loads(results.read_text())  # what was finished is there
    assert [len(partial["arms"][a]["runs"]) for a in ("kd", "nokd")] == [2, 1]
    assert partial["gain"]["val_strict_f1"]["n"] == 1 and partial["gain"]["val_strict_f1"]["low"] is None
    capsys.readouterr()
    calls.clear()
    evaluations.clear()
    kd_ablation.main(args)  # the same command again: only the killed run trains, only its scores are computed
    printed = capsys.readouterr().out
    assert [c[1:3] for c in calls] == [["--strategy=none", "--seed=1"]]
    assert sorted(evaluations) == [("nokd_seed1", 2), ("nokd_seed1", 2)]
    assert "gain KD - no-KD (paired by seed, 95 % t-interval)" in printed and "ship: " in printed
    assert "teacher's val labels (the card's rule): mean strict F1" in printed  # Train_2's score of the labels
    assert "kd_seed0: finished, not trained again" in printed
    first = calls[0]
    assert "--epochs=1" in first and "--width=4" in first and f"--lists={s['lists']}" in first  # passed through

    r = json.loads(results.read_text())
    assert set(r) >= {"recipe", "teacher", "arms", "gain", "ship"} and "--epochs=1" in r["recipe"]
    shas = [sha256(p) for p in s["teachers"]]
    assert r["teacher"]["sha256"] == ensemble_sha256(shas) and r["teacher"]["tta"] == "d4"
    assert [t["sha256"] for t in r["teacher"]["teachers"]] == shas
    assert r["teacher"]["val_strict_f1"] is None and r["teacher"]["teachers"][0]["val"]["images"] == 2
    labels_val = r["teacher"]["labels_val"]
    assert 0.0 <= labels_val["mean_f1"] <= 1.0 and 0.0 < labels_val["threshold"] < 1.0 and labels_val["by_dataset"]
    for arm in ("kd", "nokd"):
        runs = r["arms"][arm]["runs"]
        assert [x["seed"] for x in runs] == [0, 1]
        for x in runs:
            assert x["val"]["images"] == 2 and x["test"]["images"] == 2
            assert 0 <= x["val"]["strict_f1"] <= 1 and 0 <= x["test"]["tolerant_f1"] <= 1
            assert sha256(x["model"]) == x["sha256"] and x["strategy"] == ("standard" if arm == "kd" else "none")
    g = r["gain"]
    assert "scipy.stats.t" in g["method"] and "paired by seed" in g["method"]
    for split in ("val", "test"):
        kd = [x[split]["strict_f1"] for x in r["arms"]["kd"]["runs"]]
        nokd = [x[split]["strict_f1"] for x in r["arms"]["nokd"]["runs"]]
        gs = g[f"{split}_strict_f1"]
        assert gs["n"] == 2 and gs["mean"] == pytest.approx(np.mean(np.subtract(kd, nokd)))
        assert gs["low"] <= gs["mean"] <= gs["high"]
    assert r["ship"]["arm"] == ("kd" if g["val_strict_f1"]["low"] > 0 else "nokd")
    assert r["ship"]["gain_val_strict_f1"] == g["val_strict_f1"]
    assert "--seed=1" in json.loads((out / "nokd_seed1" / "command.json").read_text())["train3"]

    with pytest.raises(SystemExit, match="another --out"):  # another recipe into the same folders
        kd_ablation.main([a if a != "--epochs=1" else "--epochs=2" for a in args])


def test_recipe_file_goes_to_both_arms_and_sets_the_evaluation_lists(tiny_setup, soft_labels, monkeypatch, capsys,
                                                                    fake_train3, evaluations, tmp_path):
    s = tiny_setup
    calls, _ = fake_train3
    recipe = tmp_path / "ablation_recipe.py"
    recipe.write_text(f'data = "{s["data"]}"\nlists = "{s["lists"]}"\nlabels = "{s["labels"]}"\n'
                      f'strategy = "none"\nepochs = 1\n')
    own, passthrough = kd_ablation.parse_args([str(recipe), "--seeds=0"])
    assert own["lists"] == str(s["lists"]) and own["labels"] == str(s["labels"])
    assert own["strategy"] == "standard"  # the recipe's "none" is the other arm, not the kd arm's strategy
    assert passthrough[0] == str(recipe) and f"--lists={s['lists']}" in passthrough
    out = tmp_path / "runs"
    args = [str(recipe), "--seeds=0", f"--out={out}", f"--results={tmp_path / 'r.json'}", *TINY]
    monkeypatch.chdir(REPO)
    kd_ablation.main(args)
    assert [c[1] for c in calls] == [str(recipe), str(recipe)]  # first, before the flags that override it
    assert [c[2] for c in calls] == ["--strategy=standard", "--strategy=none"]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["arms"]["kd"]["runs"][0]["val"]["images"] == 2  # scored on the recipe's lists
    assert r["recipe"].startswith(f"python Train_3_Step.py {recipe} ")
    recipe.write_text(recipe.read_text() + "lr = 0.5\n")  # an edited recipe is another recipe
    with pytest.raises(SystemExit, match="changed since this run was started"):
        kd_ablation.main(args)
    recipe.write_text("lists = (\n")
    with pytest.raises(SystemExit, match="not valid Python"):
        kd_ablation.parse_args([str(recipe)])


def test_strategies_table_with_the_real_train3(tiny_setup, soft_labels, monkeypatch, capsys, train3_in_process):
    """Two real Train_3 runs: hyperthermal at T = 5 on the ensemble + TTA labels made at T = 10 (re-softened and
    shifted by 2 logits), and the no-teacher reference row, which runs once at Train_3's own temperatures."""
    s = tiny_setup
    results = s["root"] / "results" / "kd_strategies.json"
    monkeypatch.chdir(REPO)
    kd_ablation.main(["--strategies=hyperthermal,none", "--temperatures=5", f"--data={s['data']}",
                      f"--lists={s['lists']}", f"--labels={s['labels']}", f"--out={s['root'] / 'strategies'}",
                      f"--results={results}", "--no-teacher_eval", "--label_shift=2", *TINY])
    printed = capsys.readouterr().out
    assert "soft labels shifted by +2 logits" in printed
    assert "hyperthermal T=5" in printed and "re-softened from the T=10 they were made at" in printed
    assert "\n| none |" in printed or "none " in printed.split("best by validation")[0]
    assert len(train3_in_process) == 2 and "--t0=5" in train3_in_process[0] and "--t2=5" in train3_in_process[0]
    assert not any(a.startswith("--t") and a[2] in "012" for a in train3_in_process[1])  # none: no temperatures
    r = json.loads(results.read_text())
    assert [(x["strategy"], x.get("t0"), x.get("t1"), x.get("t2")) for x in r["runs"]] == [
        ("hyperthermal", 5.0, 5.0, 5.0), ("none", None, None, None)]
    assert r["runs"][1]["temperature"] is None and r["runs"][1]["labels"] is None
    assert r["runs"][0]["val"]["images"] == 2 and r["runs"][0]["test"]["images"] == 2
    assert r["best_by_val"]["strategy"] in ("hyperthermal", "none")
    card = json.loads((s["root"] / "strategies" / "hyperthermal_T5_seed0" / "student.json").read_text())
    assert (card["t0"], card["t1"], card["t2"]) == (5.0, 5.0, 5.0) and card["strategy"] == "hyperthermal"
    assert card["teacher"]["tta"] == "d4" and len(card["teacher"]["teachers"]) == 2
    assert card["teacher"]["label_dtype"] == "float16" and card["teacher"]["label_temperature"] == 10.0
    assert card["teacher"]["label_shift"] == 2.0
    assert (s["root"] / "strategies" / "none_seed0" / "student.keras").is_file()
