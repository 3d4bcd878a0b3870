"""Which augmentation component helps, per dataset: leave-one-out Train_3 runs of one recipe.

    python scripts/aug_ablation.py recipes/aug_ablation_four.py                 # results/aug_ablation.json
    python scripts/aug_ablation.py recipes/aug_ablation_four.py --arms=full,none --replicate_seeds=

Arms: "full" (the recipe's --augment), one "no_COMPONENT" per component of it (that component off, the others kept)
and "none" (crop / flips / turns / colour jitter only). Every arm is one Train_3_Step.py run with the same recipe,
flags and --seed; the tile plan and each tile's random stream come from (seed, epoch, tile), so the arms differ by
the augmentation alone (and by the draws an active component makes). "full" is trained again with each
--replicate_seeds seed (another tile plan): how far two seeds of the same recipe land apart is the yardstick for the
arms' differences, which the image resampling below does not cover.

Each deployed student (Train_3 chooses its card threshold on the validation list by the balanced rule) is scored on
the validation list, per dataset, and compared with "full" at the first seed image by image: arm - full strict F1
with a paired bootstrap 95 % interval (``crackseg.metrics.paired_f1_difference``). Per dataset, a component
"helped" when removing it lowers strict F1 with the whole interval below 0 and by more than the seed replicates
differ; "hurt" the same way above 0; otherwise "not resolved". The test list is not scored (nothing here may be
chosen on it).

One run folder per arm under --out (``full/``, ``no_scale/``, ``full_seed1/``, ...): Train_3's --out with the deployed
student ``student.keras`` + card inside, and ``eval_val.json`` (cached per model file). Re-run the same command after
a kill: finished runs are not trained again, unfinished ones resume inside Train_3, only missing evaluations are done,
and the results file is rewritten atomically after each run. The run helpers are scripts/kd_ablation.py's.
Relative paths (recipe files, --data, --lists, --out, --results) are taken from the repository root, where the
script and Train_3 run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kd_ablation  # noqa: E402  (scripts/, beside this file: its run helpers)
from kd_ablation import AblationError  # noqa: E402

DEFAULTS = {
    "augment": "",                      # the full arm's augmentation; "": the recipe files' augment
    "arms": "",                         # comma-separated subset of the arms; "": full, every no_COMPONENT, none
    "seed": "0",                        # every arm's Train_3 --seed
    "replicate_seeds": "1",             # the full arm again at these seeds (comma-separated; "" for none)
    "data": "../shared/datasets",       # passed to Train_3 and used for the evaluation
    "lists": "datasets/splits",         # passed to Train_3; its val.txt is the evaluation list
    "out": "runs/aug_ablation",
    "results": "results/aug_ablation.json",
    "distance": "2",                    # tolerant F1 distance (pixels), as evaluate.py
}
OWNED_BY_SCRIPT = ("deploy",)  # a Train_3 flag set per run (--augment, --seed and --out are this script's own)
RULE = ("per dataset: arm - full strict F1 on the same validation images, paired bootstrap 95 % interval "
        "(1000 resamples); removing a component 'helped' when the interval lies below 0 and the drop exceeds "
        "the largest |replicate - full| of that dataset (0 without replicates), 'hurt' when it lies above 0 by "
        "more than that, else 'not resolved'; 'pending' while a planned replicate is not finished")


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """(this script's options, the recipe files and flags passed through to Train_3_Step.py)."""
    from crackseg.config import split_recipes

    recipes, argv = split_recipes(argv)
    own = {**DEFAULTS, **kd_ablation.recipe_defaults(recipes, keys=("augment", "data", "lists", "seed"))}
    passthrough = list(recipes)
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = key.replace("-", "_")
        if not arg.startswith("--"):
            raise AblationError(f"unexpected argument {arg!r} (flags are --key=value)")
        if key in DEFAULTS:
            if not eq:
                raise AblationError(f"--{key} needs a value (--{key}=...)")
            own[key] = value
        elif key in OWNED_BY_SCRIPT:
            raise AblationError(f"--{key} is set by aug_ablation.py for each run; it cannot be passed through")
        else:
            passthrough.append(arg)
    passthrough += [f"--data={own['data']}", f"--lists={own['lists']}"]
    if not own["augment"] or own["augment"].strip().lower() in ("none", "off"):
        raise AblationError("--augment (or a recipe's augment) must name the full augmentation, e.g. "
                            "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2")
    if not Path(REPO, own["lists"], "val.txt").is_file():  # checked before hours of training, not after
        raise AblationError(f"--lists={own['lists']}: no val.txt there (the arms are scored on that list; "
                            f"the seeded split of --lists=none is not supported here)")
    return own, passthrough


def plan_arms(augment: str, arms: str = "", seed: int = 0, replicate_seeds: list[int] | None = None) -> list[dict]:
    """The runs, in training order: ``[{"name", "arm", "augment", "seed"}]``; full first (every comparison needs
    it), then the chosen arms in the order given (default: each leave-one-out arm, then none), then the full arm's
    replicate seeds."""
    from crackseg.data import Augmentation, DataError

    try:
        full = Augmentation.parse(augment)
    except DataError as exc:
        raise AblationError(str(exc)) from None
    specs = {"full": full.spec(), **{f"no_{c}": full.without(c).spec() for c in full.components}, "none": "none"}
    chosen = [a.strip() for a in arms.split(",") if a.strip()] or list(specs)
    unknown = [a for a in chosen if a not in specs]
    if unknown:
        raise AblationError(f"--arms: unknown arm {unknown[0]!r}; the arms of {full.spec()} are {', '.join(specs)}")
    runs, trained = [], set()
    for arm in ["full", *chosen]:
        if specs[arm] not in trained:  # one component: no_X is none, trained once
            runs.append({"name": arm, "arm": arm, "augment": specs[arm], "seed": seed})
            trained.add(specs[arm])
    runs += [{"name": f"full_seed{s}", "arm": "full", "augment": specs["full"], "seed": s}
             for s in dict.fromkeys(replicate_seeds or []) if s != seed]
    return runs


# ---------------------------------------------------------------------------------------------- runs
def train(folder: Path, run: dict, passthrough: list[str]) -> None:
    """Train_3 for one arm (resuming inside Train_3 after a kill), unless its deployed student is there;
    ``folder`` relative to the repository root."""
    from crackseg.config import split_recipes

    recipes, flags = split_recipes(passthrough)  # recipe files first: Train_3 reads them before any flag
    kd_ablation.train_run(Path(REPO, folder), ["Train_3_Step.py", *recipes, *flags, f"--augment={run['augment']}",
                                               f"--seed={run['seed']}", f"--out={folder}",
                                               f"--deploy={folder / 'student.keras'}"])


def evaluate(folder: Path, own: dict) -> dict:
    """The deployed student's validation report at its card threshold, per dataset with per-image counts (a list
    of one dataset is reported as that dataset), plus its ``model`` and ``sha256``; cached in ``eval_val.json``
    while the model file, the validation list, the data folder and --distance are the same."""
    from crackseg.evaluation import dataset_pairs, evaluate_model
    from crackseg.io import atomic_write_json, sha256

    model, path = Path(REPO, folder, "student.keras"), Path(REPO, folder, "eval_val.json")
    subset = Path(REPO, own["lists"], "val.txt")
    key = {"sha256": sha256(model), "val_list_sha256": sha256(subset), "data": own["data"],
           "distance": int(own["distance"])}
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("key") == key:
        return cached["report"]
    pairs = dataset_pairs(own["data"], subset=subset)
    report = evaluate_model(model, pairs, distance=key["distance"], image_counts=True)
    if "by_dataset" not in report:
        report["by_dataset"] = {pairs[0].dataset: {k: v for k, v in report.items() if k != "model"}}
    report.update({"model": str(folder / "student.keras"), "sha256": key["sha256"]})
    atomic_write_json(path, {"key": key, "report": report})
    return report


# ---------------------------------------------------------------------------------------------- results
def dataset_scores(report: dict) -> dict:
    """``{dataset: {"strict_f1", "tolerant_f1", "images"}}`` and the balanced rule's mean of the strict F1s."""
    parts = {name: {"strict_f1": p["strict"]["f1"], "tolerant_f1": p["tolerant"]["f1"], "images": p["images"]}
             for name, p in report["by_dataset"].items()}
    return {"threshold": report["threshold"],
            "mean_strict_f1": sum(p["strict_f1"] for p in parts.values()) / len(parts), "by_dataset": parts}


def differences(base: dict, other: dict) -> dict:
    """``{dataset: paired_f1_difference(base, other)}`` (other - base) on the same validation images."""
    from crackseg.metrics import paired_f1_difference

    out = {}
    for name, part in other["by_dataset"].items():
        rows = base["by_dataset"].get(name, {}).get("image_counts", [])
        if len(rows) != len(part["image_counts"]):
            raise AblationError(f"{name}: {len(part['image_counts'])} validation images against full's {len(rows)}; "
                                f"the arms were scored on different lists (use another --out)")
        out[name] = paired_f1_difference(rows, part["image_counts"])
    return out


def verdict(difference: dict, replicate_spread: float | None) -> str:
    """What removing the component did to one dataset (see RULE)."""
    strict = difference["strict_f1"]
    low, high = strict["interval"]
    margin = replicate_spread or 0.0
    if high < 0 and strict["difference"] < -margin:
        return "helped"
    if low > 0 and strict["difference"] > margin:
        return "hurt"
    return "not resolved"


def ablation_results(runs: list[dict], reports: dict[str, dict], passthrough: list[str]) -> dict:
    """The results file: each finished run's scores, its paired difference from full, and the verdicts ("pending"
    while a planned replicate of full is not finished: its spread could still change them)."""
    base = reports.get("full")
    planned = [r["name"] for r in runs if r["arm"] == "full" and r["name"] != "full"]
    replicates = [name for name in planned if name in reports]
    spread: dict[str, float] = {}
    out_runs = []
    for run in runs:
        if run["name"] not in reports:
            continue
        report = reports[run["name"]]
        entry = {**run, "model": report["model"], "sha256": report["sha256"], **dataset_scores(report)}
        if base is not None and run["name"] != "full":
            diff = differences(base, reports[run["name"]])
            entry["minus_full"] = diff
            if run["arm"] == "full":
                for name, d in diff.items():
                    spread[name] = max(spread.get(name, 0.0), abs(d["strict_f1"]["difference"]))
        out_runs.append(entry)
    for entry in out_runs:
        if entry["arm"] != "full" and "minus_full" in entry:
            entry["verdict"] = {name: verdict(d, spread.get(name)) if len(replicates) == len(planned) else "pending"
                                for name, d in entry["minus_full"].items()}
    return {"recipe": "python Train_3_Step.py " + " ".join(passthrough) + " --augment=ARM --seed=SEED",
            "rule": RULE, "replicates": replicates, "replicates_pending": [n for n in planned if n not in replicates],
            "replicate_spread": spread, "runs": out_runs}


def format_table(results: dict) -> str:
    """One row per run: the card threshold, mean and per-dataset strict F1 with arm - full [its paired interval],
    then the verdicts."""
    runs = results["runs"]
    if not runs:
        return "no finished runs"
    names = sorted(runs[0]["by_dataset"])
    lines = [f"{'run':<14}{'threshold':>10}{'mean':>8}" + "".join(f"  {n:>31}" for n in names)]
    for r in runs:
        cells = []
        for n in names:
            cell = f"{r['by_dataset'][n]['strict_f1']:.3f}"
            if "minus_full" in r:
                d = r["minus_full"][n]["strict_f1"]
                cell += f" {d['difference']:+.3f} [{d['interval'][0]:+.3f},{d['interval'][1]:+.3f}]"
            cells.append(f"  {cell:>31}")
        lines.append(f"{r['name']:<14}{r['threshold']:>10.2f}{r['mean_strict_f1']:>8.3f}" + "".join(cells))
    judged = [r for r in runs if "verdict" in r]
    if judged:
        lines.append("verdicts (removing the component): " + "; ".join(
            f"{r['name']}: " + ", ".join(f"{n} {v}" for n, v in r["verdict"].items()) for r in judged))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    import signal

    from crackseg.data import DataError
    from crackseg.engines import EngineError
    from crackseg.io import atomic_write_json

    own, passthrough = parse_args(list(sys.argv[1:] if argv is None else argv))
    seed = kd_ablation.int_list(own["seed"], "seed")
    if len(seed) != 1:
        raise AblationError(f"--seed expects one integer, got {own['seed']!r}")
    runs = plan_arms(own["augment"], own["arms"], seed[0],
                     kd_ablation.int_list(own["replicate_seeds"], "replicate_seeds", allow_empty=True))
    os.chdir(REPO)  # relative paths (--data, --out, ...) mean the same here and in Train_3
    if argv is None:  # as a script: SIGTERM ends like Ctrl+C (the running Train_3 is stopped, see run_train3)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reports: dict[str, dict] = {}
    results: dict = {}
    Path(own["results"]).parent.mkdir(parents=True, exist_ok=True)
    try:
        for run in runs:
            folder = Path(own["out"], run["name"])
            train(folder, run, passthrough)
            reports[run["name"]] = evaluate(folder, own)
            results = ablation_results(runs, reports, passthrough)
            atomic_write_json(Path(own["results"]), results)
            print(format_table(results), flush=True)
    except (DataError, EngineError) as exc:
        raise AblationError(str(exc)) from None
    print(f"results: {own['results']}")
    return results


if __name__ == "__main__":
    main()
