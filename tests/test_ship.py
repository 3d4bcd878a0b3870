"""scripts/ship.py + crackseg.shipping (the checks, the stage history of the card, the atomic hand-over into a
weights folder) and scripts/train_shipped.py (the shipped recipe, stage by stage). Nothing here touches weights/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from crackseg.card import write_card
from crackseg.io import sha256

PY = sys.executable


def run_script(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_net():
    """An untrained deployable student of width 4, 1 block (each stage saves it: distinct files, distinct bytes)."""
    import model as mcff

    return mcff.deploy_model(mcff.build_model("student", None, width=4, blocks=1))


def make_stage(root: Path, name: str, net, init: Path | None = None, done: int = 2, epochs: int = 2,
               max_minutes: float = 0.0, card_epochs: int | None = None) -> Path:
    """A run folder and deploy file + card as Train_3 leaves them (config.json, state.json, <name>.keras, .json)."""
    run = root / name
    run.mkdir(parents=True)
    deploy = root / f"{name}.keras"
    net.save(deploy)
    config = {"epochs": epochs, "deploy": str(deploy), "recipe": [f"recipes/{name}.py"], "strategy": "none",
              "alpha": 0.0, "loss": "bce_dice", "optimizer": "adam", "lr": 1e-4, "lists": "none",
              "init": str(init or ""), "max_minutes": max_minutes}
    (run / "config.json").write_text(json.dumps(config))
    state = {"epoch": done, "best": 0.25 + done / 100, "monitor": "val_score", "history": [],
             "callbacks": [{}, {"stopped_epoch": 0}]}
    (run / "state.json").write_text(json.dumps(state))
    start = {"path": str(init), "sha256": sha256(init)} if init else None
    write_card(deploy, {"kind": "MCFF-L student, mix head only", "threshold": 0.4, "run": str(run),
                        "epochs": done if card_epochs is None else card_epochs, "initial_weights": start,
                        "validation": {"strict": {"f1": 0.3}}})
    return deploy


@pytest.fixture()
def chain(tmp_path, tiny_net) -> dict:
    first = make_stage(tmp_path, "stage1", tiny_net)
    second = make_stage(tmp_path, "stage2", tiny_net, init=first)
    return {"root": tmp_path, "first": first, "second": second}


def test_stage_history_follows_initial_weights_oldest_first(chain):
    from crackseg.shipping import card_info, stage_history

    stages = stage_history(chain["second"])
    assert [s["model"] for s in stages] == [str(chain["first"]), str(chain["second"])]
    assert [s["recipe"] for s in stages] == [["recipes/stage1.py"], ["recipes/stage2.py"]]
    assert [s["epochs"] for s in stages] == [2, 2] and stages[1]["best_score"] == pytest.approx(0.27)
    assert stages[0]["initial_weights_sha256"] is None
    assert stages[1]["initial_weights_sha256"] == sha256(chain["first"]) == stages[0]["sha256"]
    assert stages[1]["run"] == str(chain["root"] / "stage2") and stages[1]["validation_strict_f1"] == 0.3
    info = card_info(chain["second"])
    assert info["stages"] == stages and info["shipped"]["sha256"] == sha256(chain["second"])
    assert "model" not in info and "sha256" not in info  # write_card adds those for the shipped file


def test_a_stage_whose_start_file_changed_ends_the_chain(chain):
    from crackseg.shipping import stage_history

    chain["first"].write_bytes(chain["first"].read_bytes() + b"later")  # overwritten after stage 2 started from it
    stages = stage_history(chain["second"])
    assert len(stages) == 2 and stages[0]["card"] is None and stages[0]["sha256"] == stages[1]["initial_weights_sha256"]


@pytest.mark.parametrize("case, words", [
    ("unfinished", "not finished (1 of 2 epochs)"),
    ("no_card", "no model card beside"),
    ("changed", "sha256 does not match"),
    ("no_state", "state.json: missing"),
    ("not_keras", "ship the deployable .keras file"),
    ("went_on", "trained to epoch 2 after this file was deployed (epoch 1)"),
])
def test_refuses_in_one_line_and_leaves_the_weights_alone(tmp_path, tiny_net, case, words):
    deploy = make_stage(tmp_path, "stage", tiny_net, done=1 if case == "unfinished" else 2,
                        card_epochs=1 if case == "went_on" else None)
    if case == "no_card":
        (tmp_path / "stage.json").unlink()
    elif case == "changed":
        deploy.write_bytes(deploy.read_bytes() + b"edited")
    elif case == "no_state":
        (tmp_path / "stage" / "state.json").unlink()
    elif case == "not_keras":
        deploy = deploy.with_suffix(".onnx")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "student.keras").write_bytes(b"old")
    result = run_script("scripts/ship.py", f"--model={deploy}", f"--weights_dir={weights}", timeout=120)
    assert result.returncode == 1
    err = result.stderr.strip()
    assert err.startswith("error:") and words in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in weights.iterdir()) == ["student.keras"]
    assert (weights / "student.keras").read_bytes() == b"old"


def test_a_run_ended_by_its_time_limit_ships(tmp_path, tiny_net, capsys):
    from crackseg.shipping import ShipError, deployed_model

    timed = make_stage(tmp_path, "timed", tiny_net, done=3, epochs=40, max_minutes=50.0)
    assert deployed_model(model=timed) == timed
    assert "ended by its limits after 3 of 40 epochs" in capsys.readouterr().out
    killed = make_stage(tmp_path, "killed", tiny_net, done=3, epochs=40)  # no time limit: interrupted
    with pytest.raises(ShipError, match="not finished"):
        deployed_model(model=killed)


def test_run_folder_ships_its_deploy_file(chain):
    from crackseg.shipping import ShipError, deployed_model

    assert deployed_model(run=chain["root"] / "stage2") == chain["second"]
    with pytest.raises(ShipError, match="give one of"):
        deployed_model()
    with pytest.raises(ShipError, match="run folder not found"):
        deployed_model(run=chain["root"] / "nothing")


def test_ablation_choice_names_the_chosen_run_and_its_gain(chain, tmp_path):
    from crackseg.shipping import ShipError, ablation_choice, card_info

    gain = {"mean": 0.012, "low": 0.004, "high": 0.020, "n": 3}
    results = {"recipe": "python Train_3_Step.py recipes/x.py", "teacher": {"path": "t.keras", "sha256": "ab" * 32,
                                                                           "val_strict_f1": 0.7, "temperature": 10.0},
               "arms": {"kd": {"runs": [{"seed": 0, "sha256": "0" * 64},
                                        {"seed": 1, "sha256": sha256(chain["second"]), "val": {"strict_f1": 0.6},
                                         "test": {"strict_f1": 0.5}}]}, "nokd": {"runs": []}},
               "ship": {"arm": "kd", "seed": 1, "model": str(chain["second"]), "rule": "kd when ...",
                        "gain_val_strict_f1": gain, "gain_test_strict_f1": {**gain, "low": -0.01}}}
    path = tmp_path / "kd_ablation.json"
    path.write_text(json.dumps(results))
    model, facts = ablation_choice(path)
    assert model == chain["second"] and facts["arm"] == "kd" and facts["seed"] == 1
    assert facts["teacher"]["sha256"] == "ab" * 32 and facts["gain_val_strict_f1"] == gain
    assert facts["val"] == {"strict_f1": 0.6} and facts["results_sha256"] == sha256(path)
    assert card_info(model, facts)["kd_ablation"] == facts and "kd_ablation" not in card_info(model)
    for change, words in ((lambda r: r["ship"].update(seed=0), "sha256 differs"),
                          (lambda r: r["ship"].update(seed=7), "not among its runs"),
                          (lambda r: r["ship"].update(model=None), "chosen no run")):
        broken = json.loads(json.dumps(results))
        change(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(ShipError, match=words):
            ablation_choice(path)
    result = run_script("scripts/ship.py", f"--ablation={path}", f"--model={chain['second']}", timeout=120)
    err = result.stderr.strip()
    assert (result.returncode == 1 and err.startswith("error:") and "without --model" in err
            and len(err.splitlines()) == 1)


def test_ship_writes_model_card_and_exports_then_skips_a_second_time(chain, synthetic_data):
    weights = chain["root"] / "weights"
    args = ("scripts/ship.py", f"--model={chain['second']}", f"--weights_dir={weights}", f"--data={synthetic_data}",
            "--lists=none", "--parity_images=2", "--no-cpu_int8")
    result = run_script(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(p.name for p in weights.iterdir())
    assert names == ["student.json", "student.keras", "student.onnx", "student_fast.json", "student_fast.onnx"]
    assert sha256(weights / "student.keras") == sha256(chain["second"])
    card = json.loads((weights / "student.json").read_text())
    assert card["model"] == "student.keras" and card["sha256"] == sha256(chain["second"])
    assert card["threshold"] == 0.4 and card["run"] == str(chain["root"] / "stage2")
    assert [s["model"] for s in card["stages"]] == [str(chain["first"]), str(chain["second"])]
    assert card["shipped"]["from"] == str(chain["second"])
    assert card["exports"]["onnx"]["parity_vs_keras"]["passed"] is True
    assert card["exports"]["onnx"]["sha256"] == sha256(weights / "student.onnx")
    fast = json.loads((weights / "student_fast.json").read_text())
    assert fast["exports"]["onnx_fast"]["sha256"] == sha256(weights / "student_fast.onnx")
    again = run_script(*args)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert sorted(p.name for p in weights.iterdir()) == names


def test_a_failed_export_check_changes_nothing(chain, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    old = {"student.keras": b"old keras", "student.onnx": b"old onnx", "student.json": b"{}"}
    for name, data in old.items():
        (weights / name).write_bytes(data)
    result = run_script("scripts/ship.py", f"--model={chain['second']}", f"--weights_dir={weights}",
                        f"--data={tmp_path / 'no_such_data'}", "--lists=none", "--no-cpu_int8", "--no-fast",
                        "--no-rule")  # the export check is under test here, not the ship rule
    assert result.returncode == 1
    assert "nothing in" in result.stderr and "was changed" in result.stderr
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == old  # staging folder gone, files untouched


# ---------------------------------------------------------------------------------------------- ship rule
def _table(shipped: float, candidate: float, **rows: tuple[float, float]) -> dict:
    """A hand-made comparison table: val_scores, and per dataset (difference, interval low); interval high = low
    + 0.1, strict F1 0.5 shipped."""
    return {"val_score": {"shipped": shipped, "candidate": candidate},
            "by_dataset": {name: {"images": 30, "shipped_f1": 0.5, "candidate_f1": 0.5 + diff, "difference": diff,
                                  "interval": [low, low + 0.1]} for name, (diff, low) in rows.items()}}


def test_ship_rule_passes_a_higher_score_worse_nowhere_beyond_noise():
    from crackseg.ship_rule import decide, format_decision

    # DeepCrack is 3 pt lower, but its interval [-0.08, +0.02] reaches 0: noise, not a loss
    d = decide(_table(0.60, 0.62, DeepCrack=(-0.03, -0.08), CRACK500=(0.2, 0.15)))
    assert d["ships"] and d["reasons"] == [] and d["worse"] == []
    assert "verdict: ships" in format_decision(d)


def test_ship_rule_refuses_a_score_that_is_not_higher():
    from crackseg.ship_rule import decide

    for candidate in (0.60, 0.59):  # equal is not higher
        d = decide(_table(0.60, candidate, DeepCrack=(0.01, -0.04), CRACK500=(0.02, -0.03)))
        assert not d["ships"] and d["worse"] == [] and len(d["reasons"]) == 1 and d["reasons"][0].startswith("(a)")


def test_ship_rule_refuses_a_dataset_worse_beyond_noise_with_the_table():
    from crackseg.ship_rule import decide, format_decision

    # the mean rose (CRACK500 +0.44) while DeepCrack fell 0.13 with its whole interval below 0: refused on (b)
    d = decide(_table(0.54, 0.64, DeepCrack=(-0.13, -0.19), CRACK500=(0.44, 0.42), AigleRN=(0.0, -0.05)))
    assert not d["ships"] and d["worse"] == ["DeepCrack"] and len(d["reasons"]) == 1
    assert d["reasons"][0] == "(b) DeepCrack: strict F1 -0.1300, interval [-0.1900, -0.0900] wholly below 0"
    table = format_decision(d)
    assert "DeepCrack          30   0.5000     0.3700  -0.1300 [-0.1900, -0.0900]  worse beyond noise" in table
    assert "AigleRN" in table and "verdict: refused" in table
    both = decide(_table(0.54, 0.50, DeepCrack=(-0.13, -0.19)))
    assert [r[:3] for r in both["reasons"]] == ["(a)", "(b)"]


def test_ship_rule_reads_compare_models_output():
    from crackseg.ship_rule import ShipRuleError, comparison_table, decide

    report = lambda f1, score: {"strict": {"f1": f1}, "threshold": 0.5, "val_score": score,  # noqa: E731
                                "by_dataset": {"DeepCrack": {"strict": {"f1": f1}}}}
    part = {"images": 30, "strict_f1": {"difference": 0.1, "interval": [0.02, 0.2], "b_better": 0.99}}
    comparison = {"a": report(0.7, 0.6), "b": report(0.8, 0.7),
                  "difference": {**part, "by_dataset": {"DeepCrack": part}}}
    table = comparison_table(comparison)
    assert table["by_dataset"]["DeepCrack"] == {"images": 30, "shipped_f1": 0.7, "candidate_f1": 0.8,
                                                "difference": 0.1, "interval": [0.02, 0.2]}
    assert decide(table)["ships"]
    with pytest.raises(ShipRuleError, match="lacks"):
        comparison_table({"a": {}, "b": {}})


def test_ship_refuses_a_candidate_no_better_than_the_shipped_student(chain, tiny_net, synthetic_data):
    """The same weights saved twice (distinct bytes): the same val_score, so (a) fails and nothing is replaced."""
    import time

    weights = chain["root"] / "weights"
    weights.mkdir()
    time.sleep(1.1)  # a .keras file records the second it was saved: a later save has other bytes, same weights
    tiny_net.save(weights / "student.keras")
    write_card(weights / "student.keras", {"threshold": 0.4})
    assert sha256(weights / "student.keras") != sha256(chain["second"])
    before = {p.name: p.read_bytes() for p in weights.iterdir()}
    result = run_script("scripts/ship.py", f"--model={chain['second']}", f"--weights_dir={weights}",
                        f"--data={synthetic_data}", "--lists=none", "--no-cpu_int8", "--no-fast")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("error: the ship rule keeps") and "(a) balanced val_score" in err
    assert "verdict: refused" in result.stdout and "candidate - shipped [interval]" in result.stdout
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == before


# ---------------------------------------------------------------------------------------------- train_shipped
def test_train_shipped_dry_run_lists_the_stages_in_order():
    result = run_script("scripts/train_shipped.py", "--dry_run", timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    order = ["Train_2_Step.py recipes/soft_labels.py", "Train_3_Step.py recipes/student_stage1_kd.py",
             "Train_3_Step.py recipes/student_stage2_gt.py", "Train_3_Step.py recipes/student_stage3_bce.py",
             "scripts/ship.py --model=runs/shipped/student_stage3_bce.keras --weights_dir=weights"]
    positions = [out.index(line) for line in order]
    assert positions == sorted(positions)
    assert "student_stage4_mixed" not in out  # the four-dataset candidate is not the shipped model
    stages = ("Train_2_Step.py:soft_labels,Train_3_Step.py:student_stage1_kd,Train_3_Step.py:student_stage2_gt,"
              "Train_3_Step.py:student_stage3_bce,Train_3_Step.py:student_stage4_mixed,"
              "Train_3_Step.py:student_stage5_sampling")
    result = run_script("scripts/train_shipped.py", "--dry_run", f"--stages={stages}", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "scripts/ship.py --model=runs/shipped/student_stage5_sampling.keras" in result.stdout


def test_train_shipped_takes_the_students_teacher_from_git_or_says_why_not(tmp_path):
    """The shipped student's teacher left weights/ for the pretrained one; make weights restores it from history,
    refusing a commit git does not have or a file whose sha256 is not the pinned one (one line, nothing left)."""
    dest = tmp_path / "teacher_mcff.keras"
    common = (f"--teacher_file={dest}", "--stages=Train_2_Step.py:soft_labels", "--no-ship")
    result = run_script("scripts/train_shipped.py", "--teacher_commit=0000000", *common, timeout=60)
    assert result.returncode == 1 and not dest.exists()
    err = result.stderr.strip()
    assert err.startswith("error: cannot take the student's teacher from git") and len(err.splitlines()) == 1
    history = subprocess.run(["git", "cat-file", "-e", "4cca5c5:weights/teacher.keras"], cwd=REPO)
    if history.returncode != 0:
        pytest.skip("a shallow clone: the commit that holds the old teacher is not here")
    result = run_script("scripts/train_shipped.py", f"--teacher_sha256={'0' * 64}", *common, timeout=60)
    assert result.returncode == 1 and not dest.exists()
    assert "is not the pinned teacher" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_shipped_recipes_chain_deploy_to_init():
    from crackseg.config import read_recipe

    names = ["student_stage1_kd", "student_stage2_gt", "student_stage3_bce", "student_stage4_mixed",
             "student_stage5_sampling"]
    recipes = {n: read_recipe(REPO / "recipes" / f"{n}.py") for n in names}
    labels = read_recipe(REPO / "recipes" / "soft_labels.py")
    assert labels["teacher"] == "runs/shipped/teacher_mcff.keras" and labels["temperature"] == 10
    assert recipes["student_stage1_kd"]["init"] == ""
    for before, after in zip(names, names[1:]):
        assert recipes[after]["init"] in (recipes[before]["deploy"], recipes[before]["out"] + "/best.keras")
        assert recipes[before]["deploy"].startswith("runs/shipped/")
    for n in names[:3]:  # trained on the two-dataset lists with per-image epochs
        r = recipes[n]
        assert (r["lists"], r["samples_per_epoch"], r["sampling"], r["augment"]) == ("datasets/splits_2set", 0, "",
                                                                                     "none")
        assert r["labels"] == labels["out"]
    assert recipes["student_stage4_mixed"]["lists"] == recipes["student_stage5_sampling"]["lists"] == "datasets/splits"
    assert recipes["student_stage5_sampling"]["init"] == "runs/shipped/student_stage4_mixed/best.keras"
    for split, count in (("train", 376), ("val", 42)):
        lines = (REPO / "datasets" / "splits_2set" / f"{split}.txt").read_text().split()
        assert len(lines) == count
        assert {line.split("/")[0] for line in lines} == {"CrackForest", "DeepCrack"}


@pytest.mark.skipif(not os.environ.get("CRACKSEG_E2E"), reason="four TensorFlow subprocesses (about 3 min on an idle "
                    "2-core CPU); CRACKSEG_E2E=1 runs it")
def test_train_shipped_end_to_end_on_synthetic_data(tmp_path, synthetic_data):
    """Soft labels, two tiny student stages chained by deploy -> init, and the ship step; a second run skips all."""
    import model as mcff

    teacher = tmp_path / "teacher.keras"
    mcff.build_model("student", None, width=4, blocks=1).save(teacher)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    common = (f"data = {str(synthetic_data)!r}\nlists = 'none'\n")
    (recipes / "labels.py").write_text(f'"""Train_2_Step.py"""\n{common}teacher = {str(teacher)!r}\n'
                                       f"temperature = 10.0\nsplits = ('train', 'val')\n"
                                       f"out = {str(tmp_path / 'labels')!r}\n")
    tiny = ("width = 4\nblocks = 1\nepochs = 1\ncrop = 64\nprofile_size = 64\nsamples_per_epoch = 0\n"
            f"labels = {str(tmp_path / 'labels')!r}\nstrategy = 'non-isothermal'\n")
    (recipes / "one.py").write_text(f'"""Train_3_Step.py"""\n{common}{tiny}alpha = 0.5\nsampling = ""\n'
                                    f"out = {str(tmp_path / 'one')!r}\ndeploy = {str(tmp_path / 'one.keras')!r}\n")
    (recipes / "two.py").write_text(f'"""Train_3_Step.py"""\n{common}{tiny}alpha = 0.0\nlr = 1e-4\n'
                                    f"init = {str(tmp_path / 'one.keras')!r}\n"
                                    f"out = {str(tmp_path / 'two')!r}\ndeploy = {str(tmp_path / 'two.keras')!r}\n")
    weights = tmp_path / "weights"
    args = ("scripts/train_shipped.py", f"--recipes={recipes}",
            "--stages=Train_2_Step.py:labels,Train_3_Step.py:one,Train_3_Step.py:two", f"--weights_dir={weights}",
            f"--ship_flags=--data={synthetic_data} --lists=none --parity_images=2 --no-cpu_int8 --no-fast")
    result = run_script(*args, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    card = json.loads((weights / "student.json").read_text())
    assert [s["recipe"] for s in card["stages"]] == [[str(recipes / "one.py")], [str(recipes / "two.py")]]
    assert card["stages"][1]["initial_weights_sha256"] == sha256(tmp_path / "one.keras")
    assert card["recipe"] == [str(recipes / "two.py")] and card["sha256"] == sha256(tmp_path / "two.keras")
    assert (weights / "student.onnx").is_file()
    again = run_script(*args, timeout=300)
    assert again.returncode == 0
    assert again.stdout.count("skipped") == 3 and "nothing to do" in again.stdout


def test_history_reaches_stages_known_only_from_cards(tmp_path, tiny_net):
    """Today's lineage: stage 4 starts from a file whose card names a run folder that is gone and records the two
    stages before it nested in its initial_weights (as weights/student.json was hand-written)."""
    from crackseg.shipping import stage_history

    old = tmp_path / "old.keras"
    tiny_net.save(old)
    nested = {"path": "runs/deploy/kd10_gt20.keras", "sha256": "16d8", "alpha": 0.0, "epochs": 20,
              "initial_weights": {"path": "runs/deploy/kd_a05_10.keras", "sha256": "7872", "alpha": 0.5, "epochs": 10}}
    write_card(old, {"run": "runs/kd_bce", "epochs": 6, "best_val_real_f1": 0.767, "threshold": 0.85,
                     "initial_weights": nested, "loss": "bce_dice"})
    new = make_stage(tmp_path, "stage4", tiny_net, init=old)
    stages = stage_history(new)
    assert [s["model"] for s in stages] == ["runs/deploy/kd_a05_10.keras", "runs/deploy/kd10_gt20.keras", str(old),
                                            str(new)]
    assert [s.get("epochs") for s in stages] == [10, 20, 6, 2]
    assert stages[0]["card"] is None and stages[1]["sha256"] == "16d8"
    assert "run folder not found" in stages[2]["run_folder"] and stages[2]["best_score"] == 0.767
    assert stages[2]["loss"] == "bce_dice" and stages[3]["initial_weights_sha256"] == sha256(old)


def test_history_goes_through_a_runs_best_checkpoint(tmp_path, tiny_net):
    """Stage 5 started from stage 4's best.keras (no card beside it): the stage is that run, read from its folder."""
    from crackseg.shipping import stage_history

    first = make_stage(tmp_path, "stage3", tiny_net)
    fourth = make_stage(tmp_path, "stage4", tiny_net, init=first, done=2, epochs=40, max_minutes=50.0)
    best = tmp_path / "stage4" / "best.keras"
    tiny_net.save(best)
    config = json.loads((tmp_path / "stage4" / "config.json").read_text())
    (tmp_path / "stage4" / "config.json").write_text(json.dumps({**config, "init_sha256": sha256(first)}))
    fifth = make_stage(tmp_path, "stage5", tiny_net, init=best)
    stages = stage_history(fifth)
    assert [s["model"] for s in stages] == [str(first), str(best), str(fifth)]
    assert (stages[1]["run"] == str(tmp_path / "stage4") and stages[1]["epochs"] == 2
            and "best.keras" in stages[1]["checkpoint"])
    assert stages[1]["sha256"] == sha256(best) == stages[2]["initial_weights_sha256"]
    assert stages[1]["initial_weights_sha256"] == sha256(first) and stages[1]["threshold"] == 0.4
    assert fourth.is_file()


# ---------------------------------------------------------------------------------------------- hand-over
# ship() in a process of its own, TensorRT.py replaced by a stand-in that writes the exports and their card entries,
# SIGKILLed right before its Nth rename (os.replace / os.rename / the folder exchange): no finally block runs, as in
# a real kill. argv: N (0: never), model, weights folder, "exchange" or "no-exchange" (a file system without one).
KILL_DRIVER = r"""
import errno, os, signal, subprocess, sys
from pathlib import Path
from crackseg import shipping
from crackseg.card import write_export_card

kill_at, model, weights, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
calls = [0]

def counted(real):
    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step

def fake_tensorrt(command, cwd=None, **kwargs):
    args = dict(a[2:].split("=", 1) for a in command[2:] if a.startswith("--") and "=" in a)
    keras, onnx = Path(args["model"]), Path(args["onnx"])
    onnx.write_bytes(b"new onnx")
    write_export_card(keras, onnx, "onnx", {})
    fast = onnx.with_name(onnx.stem + "_fast.onnx")
    fast.write_bytes(b"new fast onnx")
    write_export_card(keras, fast, "onnx_fast", {})
    return subprocess.CompletedProcess(command, 0)

def no_exchange(a, b):
    raise OSError(errno.EINVAL, "no RENAME_EXCHANGE on this file system")

shipping.subprocess.run = fake_tensorrt
os.replace, os.rename = counted(os.replace), counted(os.rename)
if hasattr(shipping, "exchange"):
    shipping.exchange = no_exchange if mode == "no-exchange" else counted(shipping.exchange)
shipping.ship(model, weights, data="unused", lists="none", parity_images=1, fast=True, cpu_int8=False)
print("SHIPPED")
"""


class _Bytes:
    """Stands in for a Keras model in ``make_stage``: ``save`` writes fixed bytes (no TensorFlow needed)."""

    def __init__(self, data: bytes):
        self.data = data

    def save(self, path) -> None:
        Path(path).write_bytes(self.data)


def _old_weights(folder: Path) -> dict[str, bytes]:
    """A shipped set as ship.py leaves it (a student, its exports and cards) plus a file of another model."""
    folder.mkdir(parents=True)
    (folder / "student.keras").write_bytes(b"old keras")
    write_card(folder / "student.keras", {"threshold": 0.3})
    from crackseg.card import write_export_card

    (folder / "student.onnx").write_bytes(b"old onnx")
    write_export_card(folder / "student.keras", folder / "student.onnx", "onnx", {})
    (folder / "student_fast.onnx").write_bytes(b"old fast onnx")
    write_export_card(folder / "student.keras", folder / "student_fast.onnx", "onnx_fast", {})
    (folder / "teacher.keras").write_bytes(b"teacher")  # not shipped here: must survive every hand-over
    return _files(folder)


def _files(folder: Path) -> dict:
    """What a folder holds: each file's bytes, a card's fields without its times (each run writes its own)."""
    def content(path: Path):
        if path.suffix != ".json":
            return path.read_bytes()
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("created", "shipped")}

    return {p.name: content(p) for p in folder.iterdir() if p.is_file()}


def _leftovers(weights: Path) -> list[str]:
    return sorted(p.name for p in list(weights.parent.glob(f".{weights.name}.ship*")) + list(weights.glob(".ship*")))


def _ship_killed_at(step: int, model: Path, weights: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", KILL_DRIVER, str(step), str(model), str(weights), mode], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_a_kill_at_any_step_of_the_hand_over_leaves_the_old_set_or_the_new_one(tmp_path, mode):
    model = make_stage(tmp_path, "stage", _Bytes(b"new keras"))
    clean = tmp_path / "clean" / "weights"
    old = _old_weights(clean)
    done = _ship_killed_at(0, model, clean, mode)
    assert done.returncode == 0 and "SHIPPED" in done.stdout, done.stdout + done.stderr
    new = _files(clean)
    assert new["student.keras"] == b"new keras" and new["teacher.keras"] == b"teacher" and new != old
    assert sorted(new) == sorted(old) and not _leftovers(clean)
    killed = 0
    for step in range(1, 60):
        weights = tmp_path / f"kill{step}" / "weights"
        assert _old_weights(weights) == old
        result = _ship_killed_at(step, model, weights, mode)
        if result.returncode == 0:  # past the last rename: nothing left to kill
            break
        assert result.returncode == -9, result.stdout + result.stderr
        killed += 1
        after = _files(weights)
        if mode == "exchange":
            assert after in (old, new), f"killed before rename {step}: a mixed set {sorted(after.items())}"
        elif after not in (old, new):  # one by one: only once the new set is committed to, completed below
            assert any((stage / "COMMIT.json").is_file() for stage in weights.parent.glob(f".{weights.name}.ship*"))
        # the next run sweeps what the killed one left and ends with the new set
        again = _ship_killed_at(0, model, weights, mode)
        assert again.returncode == 0, again.stdout + again.stderr
        assert _files(weights) == new and not _leftovers(weights), (step, _leftovers(weights))
    assert killed >= 5, f"only {killed} kill points"


def test_a_live_runs_staging_folder_is_left_alone(tmp_path):
    from crackseg.shipping import sweep

    weights = tmp_path / "weights"
    weights.mkdir()
    dead = tmp_path / ".weights.ship-dead"
    (dead / "export").mkdir(parents=True)
    live = tmp_path / ".weights.ship-live"
    live.mkdir()
    import fcntl

    with open(live / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code = ("import sys; from crackseg.shipping import sweep; "
                f"print(sorted(p.name for p in sweep({str(weights)!r})))")  # another process, as a second run is
        swept = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert swept.stdout.strip() == "['.weights.ship-dead']", swept.stdout + swept.stderr
        assert live.is_dir() and not dead.exists()
    assert [p.name for p in sweep(weights)] == [".weights.ship-live"]
