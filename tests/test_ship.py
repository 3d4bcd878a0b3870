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
              "alpha": 0.0, "loss": "bce_dice", "optimizer": "adam", "lr": 1e-4, "lists": "none", "init": str(init or ""),
              "max_minutes": max_minutes}
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
    assert result.returncode == 1 and err.startswith("error:") and "without --model" in err and len(err.splitlines()) == 1


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
                        f"--data={tmp_path / 'no_such_data'}", "--lists=none", "--no-cpu_int8", "--no-fast")
    assert result.returncode == 1
    assert "nothing in" in result.stderr and "was changed" in result.stderr
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == old  # staging folder gone, files untouched


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


def test_the_shipped_recipes_chain_deploy_to_init():
    from crackseg.config import read_recipe

    names = ["student_stage1_kd", "student_stage2_gt", "student_stage3_bce", "student_stage4_mixed",
             "student_stage5_sampling"]
    recipes = {n: read_recipe(REPO / "recipes" / f"{n}.py") for n in names}
    labels = read_recipe(REPO / "recipes" / "soft_labels.py")
    assert labels["teacher"] == "weights/teacher.keras" and labels["temperature"] == 10
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
    assert stages[1]["run"] == str(tmp_path / "stage4") and stages[1]["epochs"] == 2 and "best.keras" in stages[1]["checkpoint"]
    assert stages[1]["sha256"] == sha256(best) == stages[2]["initial_weights_sha256"]
    assert stages[1]["initial_weights_sha256"] == sha256(first) and stages[1]["threshold"] == 0.4
    assert fourth.is_file()
