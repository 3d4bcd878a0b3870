"""scripts/aug_ablation.py: the arms of an augmentation, the verdict rule on hand-made per-image counts, and a real
two-arm ablation on two tiny synthetic datasets (train, score, cache, resume)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import aug_ablation  # noqa: E402

FULL = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
TINY = ("--width=4", "--blocks=1", "--epochs=1", "--crop=64", "--batch_size=4", "--profile_size=64",
        "--samples_per_epoch=0", "--strategy=none", "--alpha=0")


# ---------------------------------------------------------------------------------------------- arms and flags
def test_arms_of_the_full_augmentation():
    runs = aug_ablation.plan_arms(FULL, "", seed=0, replicate_seeds=[1, 0])
    assert [r["name"] for r in runs] == ["full", "no_scale", "no_blur", "no_jpeg", "no_shadow", "no_stripe",
                                         "no_grey", "none", "full_seed1"]  # seed 0 is full itself: not twice
    by_name = {r["name"]: r for r in runs}
    assert by_name["no_scale"]["augment"] == "blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
    assert by_name["no_grey"]["augment"] == "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2"
    assert by_name["none"]["augment"] == "none" and by_name["full_seed1"] == {
        "name": "full_seed1", "arm": "full", "augment": FULL, "seed": 1}
    chosen = aug_ablation.plan_arms(FULL, "no_stripe,none,full,no_scale", seed=3)
    assert [(r["name"], r["seed"]) for r in chosen] == [("full", 3), ("no_stripe", 3), ("none", 3), ("no_scale", 3)]
    one = aug_ablation.plan_arms("grey=0.5", "", replicate_seeds=[2, 2])  # no_grey is none: trained once
    assert [(r["name"], r["augment"]) for r in one] == [("full", "grey=0.5"), ("no_grey", "none"),
                                                        ("full_seed2", "grey=0.5")]
    with pytest.raises(SystemExit, match="unknown arm 'no_fog'.*no_grey, none"):
        aug_ablation.plan_arms(FULL, "no_fog")
    with pytest.raises(SystemExit, match="augmentation 'fog=1'"):
        aug_ablation.plan_arms("fog=1")


def test_arguments():
    own, passthrough = aug_ablation.parse_args([f"--augment={FULL}", "--epochs=2", "--arms=none"])
    assert own["augment"] == FULL and own["arms"] == "none"
    assert passthrough == ["--epochs=2", "--data=../shared/datasets", "--lists=datasets/splits"]
    for bad, why in (("--seed", "needs a value"), ("--deploy=x.keras", "set by aug"), ("stray", "unexpected argument")):
        with pytest.raises(SystemExit, match=why):
            aug_ablation.parse_args([f"--augment={FULL}", bad])
    with pytest.raises(SystemExit, match="must name the full augmentation"):
        aug_ablation.parse_args(["--augment=none"])
    with pytest.raises(SystemExit, match="must name the full augmentation"):
        aug_ablation.parse_args([])  # no recipe, no --augment
    own, passthrough = aug_ablation.parse_args(["recipes/aug_ablation_four.py"])  # the recipe sets the full arm
    assert own["augment"] == FULL and passthrough[0] == "recipes/aug_ablation_four.py"
    with pytest.raises(SystemExit, match="--lists=none: no val.txt there"):  # before any training
        aug_ablation.parse_args([f"--augment={FULL}", "--lists=none"])


# ---------------------------------------------------------------------------------------------- the verdicts
def report(per_dataset: dict[str, tuple[int, int, int] | list[tuple[int, int, int]]], images: int = 20) -> dict:
    """A validation report from per-image (tp, fp, fn) counts (tolerant = strict): one triple for all ``images``
    images of a dataset, or a list with one triple per image."""
    parts = {}
    for name, counts in per_dataset.items():
        rows = counts if isinstance(counts, list) else [counts] * images
        tp, fp, fn = (sum(r[i] for r in rows) for i in range(3))
        f1 = 2 * tp / (2 * tp + fp + fn)
        parts[name] = {"images": len(rows), "strict": {"f1": f1}, "tolerant": {"f1": f1},
                       "image_counts": [[a, b, c, a, b, a, a + c] for a, b, c in rows]}
    return {"threshold": 0.5, "model": "m.keras", "sha256": "0" * 64, "by_dataset": parts}


def test_verdicts_on_hand_made_counts():
    """Dataset A: without the component every image loses half its crack pixels (F1 1 -> 2/3): it helped. B: the
    same counts: not resolved. C: better without it (F1 2/3 -> 1): it hurt. A seed replicate of full that lands
    0.4 away on A makes A's -1/3 unresolved too."""
    full = report({"A": (10, 0, 0), "B": (5, 5, 0), "C": (5, 0, 5)})
    arm = report({"A": (5, 0, 5), "B": (5, 5, 0), "C": (10, 0, 0)})
    runs = [{"name": "full", "arm": "full", "augment": "grey=0.5", "seed": 0},
            {"name": "no_grey", "arm": "no_grey", "augment": "none", "seed": 0}]
    r = aug_ablation.ablation_results(runs, {"full": full, "no_grey": arm}, ["--epochs=1"])
    row = r["runs"][1]
    assert row["minus_full"]["A"]["strict_f1"]["difference"] == pytest.approx(2 / 3 - 1)
    assert row["minus_full"]["A"]["strict_f1"]["interval"] == pytest.approx([2 / 3 - 1, 2 / 3 - 1])
    assert row["verdict"] == {"A": "helped", "B": "not resolved", "C": "hurt"}
    assert row["mean_strict_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3) and r["runs"][0]["threshold"] == 0.5
    assert "verdict" not in r["runs"][0] and r["replicate_spread"] == {} and "--augment=ARM" in r["recipe"]

    replicate = report({"A": (6, 0, 4), "B": (5, 5, 0), "C": (5, 0, 5)})  # A: F1 0.75, 0.25 below full
    runs.append({"name": "full_seed1", "arm": "full", "augment": "grey=0.5", "seed": 1})
    r = aug_ablation.ablation_results(runs, {"full": full, "no_grey": arm, "full_seed1": replicate}, [])
    assert r["replicates"] == ["full_seed1"] and r["replicate_spread"]["A"] == pytest.approx(0.25)
    assert r["runs"][1]["verdict"]["A"] == "helped"  # -0.333 is beyond the replicate's 0.25
    wide = report({"A": (4, 0, 6), "B": (5, 5, 0), "C": (5, 0, 5)})  # A: F1 4/7, 0.43 below full
    r = aug_ablation.ablation_results(runs, {"full": full, "no_grey": arm, "full_seed1": wide}, [])
    assert r["runs"][1]["verdict"] == {"A": "not resolved", "B": "not resolved", "C": "hurt"}
    table = aug_ablation.format_table(r)
    assert "no_grey" in table and "-0.333 [-0.333,-0.333]" in table and "A not resolved" in table
    assert "verdicts" not in aug_ablation.format_table(aug_ablation.ablation_results(runs[:1], {"full": full}, []))

    pending = aug_ablation.ablation_results(runs, {"full": full, "no_grey": arm}, [])  # full_seed1 not finished
    assert pending["runs"][1]["verdict"] == {"A": "pending", "B": "pending", "C": "pending"}
    assert pending["replicates"] == [] and pending["replicates_pending"] == ["full_seed1"]


def test_a_lower_point_whose_interval_crosses_zero_is_not_resolved():
    """A: without the component every other image loses its crack and the rest gain 8 of 10 crack pixels, so the
    point difference is below 0 (2/3 -> 4/7) but resampling the images moves it to either side: not resolved. B:
    every image loses 2 of 10 pixels (F1 1 -> 8/9): the interval is that one point, so it helped."""
    full = report({"A": [(10, 0, 0), (0, 0, 10)] * 5, "B": [(10, 0, 0)] * 10})
    arm = report({"A": [(0, 0, 10), (8, 0, 2)] * 5, "B": [(8, 0, 2)] * 10})
    diff = aug_ablation.differences(full, arm)
    a, b = diff["A"]["strict_f1"], diff["B"]["strict_f1"]
    assert a["difference"] == pytest.approx(4 / 7 - 2 / 3) and a["interval"][0] < 0 < a["interval"][1]
    assert b["interval"] == pytest.approx([8 / 9 - 1, 8 / 9 - 1])
    assert aug_ablation.verdict(diff["A"], None) == "not resolved" and aug_ablation.verdict(diff["B"], None) == "helped"
    with pytest.raises(SystemExit, match="3 validation images against full's 10"):
        aug_ablation.differences(full, report({"A": [(1, 0, 0)] * 3}))


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def two_roads(tmp_path_factory) -> dict:
    """Two tiny synthetic datasets (RoadA, RoadB) under one root, with train / val lists spanning both."""
    from crackseg.data import find_samples, write_list
    from datasets.synthetic import make_dataset

    root = tmp_path_factory.mktemp("aug_ablation")
    data = root / "data"
    make_dataset(data / "RoadA", 6, (96, 128), seed=0)
    make_dataset(data / "RoadB", 6, (96, 128), seed=1)
    for path in (data / "RoadB").rglob("*.png"):  # stems must be unique across datasets
        path.rename(path.with_name("b" + path.name))
    samples = sorted(find_samples(str(data)), key=lambda s: s.id)
    lists = root / "lists"
    lists.mkdir()
    write_list(lists / "train.txt", samples[:4] + samples[6:10])
    write_list(lists / "val.txt", samples[4:6] + samples[10:])
    return {"root": root, "data": str(data), "lists": str(lists)}


def test_two_arms_with_the_real_train3_then_resume(two_roads, monkeypatch, capsys, train3_in_process):
    calls = train3_in_process
    monkeypatch.chdir(REPO)
    out, results = two_roads["root"] / "runs", two_roads["root"] / "aug_ablation.json"
    recipe = two_roads["root"] / "tiny_recipe.py"
    recipe.write_text('"""A recipe for every arm."""\nlr = 0.001\n')
    args = [str(recipe), "--augment=scale=0.8:1.25,grey=0.5", "--arms=none", "--replicate_seeds=",
            f"--data={two_roads['data']}", f"--lists={two_roads['lists']}", f"--out={out}", f"--results={results}",
            *TINY]
    aug_ablation.main(args)
    printed = capsys.readouterr().out
    assert [c[-4:] for c in calls] == [
        ["--augment=scale=0.8:1.25,grey=0.5", "--seed=0", f"--out={out / 'full'}",
         f"--deploy={out / 'full' / 'student.keras'}"],
        ["--augment=none", "--seed=0", f"--out={out / 'none'}", f"--deploy={out / 'none' / 'student.keras'}"]]
    assert json.loads((out / "none" / "student.json").read_text())["augment"] == "none"
    r = json.loads(results.read_text())
    assert [x["name"] for x in r["runs"]] == ["full", "none"]
    none = r["runs"][1]
    assert set(none["by_dataset"]) == {"RoadA", "RoadB"} and none["by_dataset"]["RoadA"]["images"] == 2
    assert set(none["verdict"]) == {"RoadA", "RoadB"} and none["minus_full"]["RoadB"]["images"] == 2
    assert "results:" in printed and "none" in printed.split("verdicts")[0]

    cached = (out / "none" / "eval_val.json").stat().st_mtime_ns
    calls.clear()
    aug_ablation.main(args)  # everything finished: nothing trained or scored again
    assert calls == [] and (out / "none" / "eval_val.json").stat().st_mtime_ns == cached
    assert "finished, not trained again" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="made by .*use another --out"):
        aug_ablation.main([a.replace("--epochs=1", "--epochs=2") for a in args])
    recipe.write_text(recipe.read_text() + "# a comment: the runs used every value still written\n")
    aug_ablation.main(args)
    assert calls == [] and "finished, not trained again" in capsys.readouterr().out
    recipe.write_text(recipe.read_text().replace("lr = 0.001", "lr = 0.002"))
    with pytest.raises(SystemExit, match="tiny_recipe.py changed since this run was started"):
        aug_ablation.main(args)

    one = two_roads["root"] / "one_dataset"  # a validation list of one dataset is reported as that dataset
    one.mkdir()
    (one / "val.txt").write_text("".join(line + "\n" for line in (Path(two_roads["lists"]) / "val.txt")
                                         .read_text().split() if line.startswith("RoadA/")))
    single = aug_ablation.evaluate(out / "none", {"data": two_roads["data"], "lists": str(one), "distance": "2"})
    assert list(single["by_dataset"]) == ["RoadA"] and len(single["by_dataset"]["RoadA"]["image_counts"]) == 2
    assert aug_ablation.dataset_scores(single)["mean_strict_f1"] == single["strict"]["f1"]
