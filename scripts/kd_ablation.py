"""The KD gain as a measurement: one student recipe trained with and without the teacher over several seeds.

    python scripts/kd_ablation.py --seeds=0,1,2                                   # results/kd_ablation.json
    python scripts/kd_ablation.py --seeds=0,1,2 --epochs=20 --samples_per_epoch=2000   # a shorter shared recipe
    python scripts/kd_ablation.py recipes/kd_ablation_four.py                           # a recipe file for both arms
    python scripts/kd_ablation.py --strategies=standard,hyperthermal,non-isothermal --temperatures=10
                                                                                  # results/kd_strategies.json

Ablation: for every seed, Train_3_Step.py --strategy=STRATEGY (the "kd" arm, soft labels from --labels) and
--strategy=none (the "nokd" arm: the four heads learn the ground truth), with the same data, lists, sampling,
schedule, augmentation and seed: every flag this script does not know goes to both Train_3 runs unchanged, and so do
leading Train_3 recipe files (``recipes/*.py``; their data / lists / val_fraction / labels / strategy also set this
script's defaults, so the evaluation reads the lists the runs trained on). One run
folder per (arm, seed) under --out (``kd_seed0/``: Train_3's run in ``run/``, the deployed student ``student.keras``
+ its card, ``eval.json``). Each deployed student is scored by evaluate.py's library function
(``crackseg.evaluation.evaluate_model``, the card's threshold) on the validation and test lists, overall and per
dataset. ``gain`` = KD - no-KD strict F1 paired by seed: the mean and a 95 % t-interval over the paired
differences (scipy.stats.t; no interval with one seed). ``ship`` names the arm to ship: kd only when the lower end
of the validation interval is above 0 (the test list is reported, never used to choose), and its best run by
validation strict F1.

Strategies (--strategies): one seed (--seed) per (strategy, temperature); T replaces every temperature the
strategy softens (standard: T1; hyperthermal: T0, T1, T2; non-isothermal: T1, T2); "none" runs once, at the
recipe's temperatures, as the no-teacher reference. One set of labels serves every T (Train_3 re-softens them to
T1); ``--labels=runs/soft_labels_t{t:g}`` formats T into the path for labels made per T. Writes
results/kd_strategies.json.

Resume: re-run the same command after a kill. Finished runs (a deployed student whose card matches its file) are
not trained again, unfinished ones resume inside Train_3 (same --out), and only missing evaluations are done. A
run folder made with other Train_3 flags is refused (choose another --out). The results file is rewritten
atomically after every evaluation, so it always holds what is finished. Relative paths are taken from the
repository root (the script and Train_3 run there).
"""
from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULTS = {
    "seeds": "0,1,2",                   # ablation seeds, comma-separated (>= 3 for an interval worth the name)
    "strategy": "standard",             # the kd arm's Train_3 strategy
    "strategies": "",                   # comma-separated: the strategies table instead of the ablation
    "temperatures": "10",               # strategies table: T values, comma-separated
    "seed": "0",                        # strategies table: the one seed
    "labels": "runs/soft_labels",       # Train_2_Step's --out ({t:g} is formatted with T in the strategies table)
    "data": "../shared/datasets",       # passed to Train_3 and used for the evaluation
    "lists": "datasets/splits",         # passed to Train_3; val.txt / test.txt are the evaluation lists
    "val_fraction": "0.1",              # passed to Train_3; the seeded split when --lists=none
    "out": "",                          # default runs/kd_ablation (strategies: runs/kd_strategies)
    "results": "",                      # default results/kd_ablation.json (strategies: results/kd_strategies.json)
    "teacher_eval": "true",             # also score the teacher file(s) of the labels on the validation list
    "distance": "2",                    # tolerant F1 distance (pixels), as evaluate.py
}
OWNED_BY_SCRIPT = ("strategy", "seed", "out", "deploy", "labels", "t0", "t1", "t2")  # Train_3 flags set per run
METHOD = ("paired by seed: d_i = KD - no-KD strict F1 of seed i; mean of d_i and the 95 % t-interval "
          "mean +- t(0.975, n-1) * sd(d) / sqrt(n), sd with n-1 (scipy.stats.t); null bounds with n < 2")


class AblationError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"error: {message}")


# ---------------------------------------------------------------------------------------------- arguments
RECIPE_SETS_DEFAULT = ("data", "lists", "val_fraction", "labels", "strategy")  # recipe values this script reads too


def recipe_defaults(recipes: list[str], keys: tuple[str, ...] = RECIPE_SETS_DEFAULT) -> dict[str, str]:
    """The values of ``keys`` that the Train_3 recipe files set (later files win), as this script's defaults; a
    recipe's strategy "none" is the other arm, so it does not become the kd arm's strategy."""
    from crackseg.config import ConfigError, read_recipe

    values: dict[str, str] = {}
    for recipe in recipes:
        try:
            written = read_recipe(Path(REPO, recipe))
        except ConfigError as exc:
            raise AblationError(str(exc)) from None
        values.update({k: str(v) for k, v in written.items() if k in keys})
    if values.get("strategy") == "none":
        del values["strategy"]
    return values


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """(this script's options, the recipe files and flags passed through to Train_3_Step.py)."""
    from crackseg.config import split_recipes

    recipes, argv = split_recipes(argv)
    own, passthrough = {**DEFAULTS, **recipe_defaults(recipes)}, list(recipes)
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = key.replace("-", "_")
        if key in DEFAULTS:
            if not eq:
                if isinstance(DEFAULTS[key], str) and DEFAULTS[key] in ("true", "false"):
                    value = "true"
                else:
                    raise AblationError(f"--{key} needs a value (--{key}=...)")
            own[key] = value
            if key in ("data", "lists", "val_fraction"):
                passthrough.append(f"--{key}={value}")
        elif key.startswith("no_") and key[3:] in DEFAULTS and DEFAULTS[key[3:]] in ("true", "false"):
            own[key[3:]] = "false"
        elif key in OWNED_BY_SCRIPT:
            raise AblationError(f"--{key} is set by kd_ablation.py for each run; it cannot be passed through")
        elif not arg.startswith("--"):
            raise AblationError(f"unexpected argument {arg!r} (flags are --key=value)")
        else:
            passthrough.append(arg)
    for key in ("data", "lists", "val_fraction"):
        if f"--{key}={own[key]}" not in passthrough:
            passthrough.append(f"--{key}={own[key]}")
    return own, passthrough


def int_list(text: str, what: str, allow_empty: bool = False) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise AblationError(f"--{what} expects integers, comma-separated, got {text!r}") from None
    if (not values and not allow_empty) or len(set(values)) != len(values):
        raise AblationError(f"--{what} needs distinct values, got {text!r}")
    return values


def float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise AblationError(f"--{what} expects numbers, comma-separated, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise AblationError(f"--{what} needs positive values, got {text!r}")
    return values


# ---------------------------------------------------------------------------------------------- statistics
def paired_interval(kd: dict[int, float], nokd: dict[int, float], confidence: float = 0.95) -> dict:
    """``{"mean", "low", "high", "n", "seeds", "differences"}`` of KD - no-KD over the seeds both arms have: the
    mean difference and its two-sided t-interval (``low`` / ``high`` None with fewer than two pairs)."""
    seeds = sorted(set(kd) & set(nokd))
    diffs = [kd[s] - nokd[s] for s in seeds]
    n = len(diffs)
    out = {"mean": None, "low": None, "high": None, "n": n, "seeds": seeds, "differences": diffs,
           "confidence": confidence}
    if n == 0:
        return out
    mean = sum(diffs) / n
    out["mean"] = mean
    if n >= 2:
        from scipy import stats

        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        out["low"], out["high"] = mean - half, mean + half
    return out


# ---------------------------------------------------------------------------------------------- runs
def run_finished(folder: Path) -> bool:
    """Whether the run's deployed student and its card exist and agree (Train_3 writes the card last)."""
    from crackseg.card import CardError, read_card

    model = folder / "student.keras"
    if not model.is_file():
        return False
    try:
        read_card(model, verify=True)
    except CardError:
        return False
    return True


def check_recipe(folder: Path, command: list[str]) -> None:
    """The Train_3 command a run folder was made with (and the sha256 of each recipe file in it); another command
    for the same folder is refused, and so is an edited recipe file unless the edit left every value the run used
    as it was (a comment or docstring, say: ``recipe_values_used``)."""
    from crackseg.config import split_recipes
    from crackseg.io import atomic_write_json, sha256

    recipes = {r: sha256(Path(REPO, r)) for r in split_recipes(command[1:])[0]}
    path = folder / "command.json"
    if path.is_file():
        made = json.loads(path.read_text())
        old = made["train3"]
        if old != command:
            raise AblationError(f"{folder}: made by `{shlex.join(old)}`, not `{shlex.join(command)}`; "
                                f"use another --out for another recipe")
        edited = [r for r, digest in recipes.items() if made.get("recipes", {}).get(r, digest) != digest]
        changed = [r for r in edited if not recipe_values_used(r, command)]
        if changed:
            raise AblationError(f"{folder}: recipe file {changed[0]} changed since this run was started; "
                                f"use another --out for another recipe")
        if edited:
            atomic_write_json(path, {"train3": command, "recipes": recipes})
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"train3": command, "recipes": recipes})


def recipe_values_used(recipe: str, command: list[str]) -> bool:
    """Whether the Train_3 run of ``command`` (its --out's config.json) used every value ``recipe`` sets now, apart
    from those a flag of the command overrides; False when the run has no config yet."""
    from crackseg.config import ConfigError, read_recipe

    flags = dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)
    config = Path(REPO, flags.get("out", ""), "config.json")
    if "out" not in flags or not config.is_file():
        return False
    try:
        values = read_recipe(Path(REPO, recipe))
    except ConfigError:
        return False
    used = json.loads(config.read_text())
    return all(used.get(key) == value for key, value in values.items() if key.replace("_", "-") not in flags
               and key not in flags)


def run_train3(command: list[str]) -> int:
    """Run ``python Train_3_Step.py ...`` in the repository root; its exit status. A SIGTERM / Ctrl+C of this
    script stops the child too (Train_3 resumes from its last epoch next time), so no orphan trains on."""
    child = subprocess.Popen([sys.executable, *command], cwd=REPO)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


def train(folder: Path, strategy: str, seed: int, labels: str, passthrough: list[str],
          temps: tuple[float, float, float] | None = None) -> None:
    """Train_3 for one run (resuming inside Train_3 when a previous attempt was killed), unless finished."""
    from crackseg.config import split_recipes

    recipes, flags = split_recipes(passthrough)  # recipe files first: Train_3 reads them before any flag
    command = ["Train_3_Step.py", *recipes, f"--strategy={strategy}", f"--seed={seed}", f"--out={folder / 'run'}",
               f"--deploy={folder / 'student.keras'}", f"--labels={labels}"]
    if temps is not None:
        command += [f"--t0={temps[0]:g}", f"--t1={temps[1]:g}", f"--t2={temps[2]:g}"]
    command += flags
    train_run(folder, command)


def train_run(folder: Path, command: list[str]) -> None:
    """Run one Train_3 ``command`` whose deployed student goes to ``folder``/student.keras, unless it is there;
    a killed run resumes inside Train_3. The folder is refused to another command (``check_recipe``)."""
    check_recipe(folder, command)
    if run_finished(folder):
        print(f"{folder.name}: finished, not trained again", flush=True)
        return
    print(f"{folder.name}: python {shlex.join(command)}", flush=True)
    status = run_train3(command)
    if status != 0:
        raise AblationError(f"{folder.name}: Train_3_Step.py exited with status {status}; "
                            f"fix the cause and re-run the same command (it resumes)")
    if not run_finished(folder):
        raise AblationError(f"{folder}: Train_3_Step.py ended without a deployed student and card")


def split_lists(own: dict, seed: int, folder: Path) -> dict[str, Path | None]:
    """The validation and test list files: ``--lists``' val.txt / test.txt, or with --lists=none the seeded split
    Train_3 made (written into the run folder). None for a split without images."""
    lists = own["lists"]
    if lists not in ("", "none", "None") and Path(REPO, lists, "train.txt").is_file():
        return {s: (Path(REPO, lists, f"{s}.txt") if Path(REPO, lists, f"{s}.txt").is_file() else None)
                for s in ("val", "test")}
    from crackseg.data import load_split
    from crackseg.io import atomic_write_text

    splits = load_split(own["data"], None if lists in ("", "none", "None") else lists, float(own["val_fraction"]),
                        seed)
    out = {}
    for s in ("val", "test"):
        if splits[s]:
            out[s] = folder / f"{s}.txt"
            atomic_write_text(out[s], "".join(f"{x.id}\n" for x in splits[s]))
        else:
            out[s] = None
    return out


def scores(report: dict) -> dict:
    return {"strict_f1": report["strict"]["f1"], "tolerant_f1": report["tolerant"]["f1"], "images": report["images"],
            "threshold": report.get("threshold")}


def evaluate(folder: Path, model: Path, own: dict, seed: int) -> dict:
    """``{"model", "sha256", "val", "test"}`` of a run's deployed student, cached in ``eval.json`` per split (a
    split is scored again only when missing or when the model file changed)."""
    from crackseg.evaluation import dataset_pairs, evaluate_model
    from crackseg.io import atomic_write_json, sha256

    path = folder / "eval.json"
    digest = sha256(model)
    cached = json.loads(path.read_text()) if path.is_file() else {}
    if cached.get("sha256") != digest:
        cached = {}
    shown = model.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown  # the results file travels with the repo
    cached.update({"model": str(shown), "sha256": digest})
    for split, subset in split_lists(own, seed, folder).items():
        if split in cached:
            continue
        if subset is None:
            cached[split] = None
        else:
            pairs = dataset_pairs(own["data"], subset=subset)
            report = evaluate_model(model, pairs, distance=int(own["distance"]))
            cached[split] = {**scores(report), "by_dataset": {name: scores(part) for name, part in
                                                             report.get("by_dataset", {}).items()}}
            print(f"{folder.name}: {split} strict F1 {cached[split]['strict_f1']:.4f} on {len(pairs)} images",
                  flush=True)
        atomic_write_json(path, cached)
    return cached


def run_entry(seed: int, evaluation: dict, **extra) -> dict:
    entry = {**extra, "seed": seed, "model": evaluation["model"], "sha256": evaluation["sha256"]}
    for split in ("val", "test"):
        part = evaluation.get(split)
        entry[split] = None if part is None else {k: part[k] for k in ("strict_f1", "tolerant_f1", "images")}
    entry["by_dataset"] = {split: (evaluation[split] or {}).get("by_dataset", {}) for split in ("val", "test")}
    return entry


# ---------------------------------------------------------------------------------------------- teacher
def teacher_facts(labels: str, own: dict, out: Path) -> dict | None:
    """The teacher of the soft labels (from the train split's manifest) and, with --teacher_eval, each teacher
    file's validation strict F1 (mix head, its card's threshold), cached in OUT/teacher_eval.json."""
    from crackseg.distill import read_manifest
    from crackseg.io import atomic_write_json

    manifest = read_manifest(Path(REPO, labels, "train"))
    if manifest is None:
        return None
    facts = {"path": manifest["teacher"], "sha256": manifest["teacher_sha256"],
             "teachers": manifest.get("teachers") or [{"path": manifest["teacher"],
                                                       "sha256": manifest["teacher_sha256"]}],
             "tta": manifest.get("tta", "none"), "label_dtype": manifest.get("dtype", "float32"),
             "temperature": manifest["temperature"], "labels": labels, "val_strict_f1": None}
    val_manifest = read_manifest(Path(REPO, labels, "val"))
    quality = (val_manifest or {}).get("quality")
    if quality:  # Train_2's score of the val labels themselves: ensemble and TTA included, the card's rule
        facts["labels_val"] = {"mean_f1": quality["mean_f1"], "threshold": quality["threshold"],
                               "by_dataset": {n: p["f1"] for n, p in quality["by_dataset"].items()}}
    if own["teacher_eval"] != "true":
        return facts
    cache_path = out / "teacher_eval.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    subset = split_lists(own, int(own["seed"]), out).get("val")
    for member in facts["teachers"]:
        model = Path(REPO, member["path"])
        if member["sha256"] not in cache and model.is_file() and subset is not None:
            from crackseg.evaluation import dataset_pairs, evaluate_model
            from crackseg.io import sha256

            if sha256(model) != member["sha256"]:
                continue  # the file changed since the labels were made: its score would not be the labels' teacher
            report = evaluate_model(model, dataset_pairs(own["data"], subset=subset), distance=int(own["distance"]))
            cache[member["sha256"]] = {**scores(report), "by_dataset": {n: scores(p) for n, p in
                                                                       report.get("by_dataset", {}).items()}}
            atomic_write_json(cache_path, cache)
        member["val"] = cache.get(member["sha256"])
    if len(facts["teachers"]) == 1 and facts["teachers"][0].get("val"):
        facts["val_strict_f1"] = facts["teachers"][0]["val"]["strict_f1"]
    facts["val_note"] = ("each teacher file scored alone at its card's threshold, without TTA"
                         if facts["tta"] != "none" or len(facts["teachers"]) > 1 else "mix head, card threshold")
    return facts


# ---------------------------------------------------------------------------------------------- results
def recipe_line(passthrough: list[str]) -> str:
    return ("python Train_3_Step.py" + (" " + " ".join(passthrough) if passthrough else " (its defaults)")
            + "; identical for both arms except --strategy (and --labels, unused by none)")


def ablation_results(own: dict, passthrough: list[str], runs: dict[str, list[dict]], teacher: dict | None) -> dict:
    gain = {}
    for split in ("val", "test"):
        per_arm = {arm: {r["seed"]: r[split]["strict_f1"] for r in runs[arm] if r.get(split)} for arm in runs}
        gain[f"{split}_strict_f1"] = paired_interval(per_arm["kd"], per_arm["nokd"])
    gain["method"] = METHOD
    return {"recipe": recipe_line(passthrough), "kd_strategy": own["strategy"], "teacher": teacher,
            "arms": {arm: {"runs": runs[arm]} for arm in ("kd", "nokd")}, "gain": gain,
            "ship": ship_choice(runs, gain)}


def ship_choice(runs: dict[str, list[dict]], gain: dict) -> dict:
    """The arm to ship (kd only when the validation gain's lower 95 % bound is above 0) and its best run by
    validation strict F1 (never by test)."""
    val = gain["val_strict_f1"]
    arm = "kd" if val["low"] is not None and val["low"] > 0 else "nokd"
    candidates = [r for r in runs[arm] if r.get("val")]
    best = max(candidates, key=lambda r: r["val"]["strict_f1"]) if candidates else None
    return {"arm": arm, "rule": "kd when the lower end of the 95 % interval of the validation gain is above 0, "
                                "else nokd; the arm's run with the best validation strict F1",
            "seed": best["seed"] if best else None, "model": best["model"] if best else None,
            "gain_val_strict_f1": val, "gain_test_strict_f1": gain["test_strict_f1"]}


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_interval(g: dict) -> str:
    if g["mean"] is None:
        return "-"
    if g["low"] is None:
        return f"{fmt(g['mean'], True)} (n={g['n']}, no interval)"
    return f"{fmt(g['mean'], True)} [{fmt(g['low'], True)}, {fmt(g['high'], True)}] (n={g['n']})"


def format_table(rows: list[tuple[str, dict]]) -> str:
    lines = [f"{'run':<28} {'seed':>4} {'val strict':>10} {'val tol':>8} {'test strict':>11} {'test tol':>8}"]
    for name, r in rows:
        v, t = r.get("val") or {}, r.get("test") or {}
        lines.append(f"{name:<28} {r['seed']:>4} {fmt(v.get('strict_f1')):>10} {fmt(v.get('tolerant_f1')):>8} "
                     f"{fmt(t.get('strict_f1')):>11} {fmt(t.get('tolerant_f1')):>8}")
    return "\n".join(lines)


def format_ablation(results: dict) -> str:
    rows = [(arm, r) for arm in ("kd", "nokd") for r in results["arms"][arm]["runs"]]
    g = results["gain"]
    labels_val = (results.get("teacher") or {}).get("labels_val")
    teacher = ("" if not labels_val else f"teacher's val labels (the card's rule): mean strict F1 "
               f"{labels_val['mean_f1']:.4f} at t={labels_val['threshold']:.2f}\n")
    return (teacher + format_table(rows) + "\n"
            + f"gain KD - no-KD (paired by seed, 95 % t-interval): val strict F1 {format_interval(g['val_strict_f1'])}"
            + f"; test strict F1 {format_interval(g['test_strict_f1'])}\n"
            + f"ship: {results['ship']['arm']} (seed {results['ship']['seed']})")


def strategy_temperatures(strategy: str, t: float) -> tuple[float, float, float]:
    """The strategy's (T0, T1, T2) with T in place of every temperature it softens (those above 1 at T = 10)."""
    from crackseg.distill import STRATEGIES

    if strategy not in STRATEGIES:
        raise AblationError(f"--strategies: unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    return tuple(t if base > 1 else base for base in STRATEGIES[strategy])


def strategy_row(run: dict) -> str:
    """A strategies-table row name: "standard T=10", or "none" for the no-teacher reference."""
    return run["strategy"] if run.get("temperature") is None else f"{run['strategy']} T={run['temperature']:g}"


# ---------------------------------------------------------------------------------------------- main
def main_ablation(own: dict, passthrough: list[str]) -> dict:
    from crackseg.io import atomic_write_json

    seeds = int_list(own["seeds"], "seeds")
    out = Path(REPO, own["out"] or "runs/kd_ablation")
    results_path = Path(REPO, own["results"] or "results/kd_ablation.json")
    if own["strategy"] == "none":
        raise AblationError("--strategy is the kd arm's strategy; none is the other arm")
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher_facts(own["labels"], own, out)
    runs: dict[str, list[dict]] = {"kd": [], "nokd": []}
    results = None
    for seed in seeds:
        for arm, strategy in (("kd", own["strategy"]), ("nokd", "none")):
            folder = out / f"{arm}_seed{seed}"
            train(folder, strategy, seed, own["labels"], passthrough)
            runs[arm].append(run_entry(seed, evaluate(folder, folder / "student.keras", own, seed),
                                       strategy=strategy))
            results = ablation_results(own, passthrough, runs, teacher)
            atomic_write_json(results_path, results)
    print(format_ablation(results))
    print(f"results: {results_path}")
    return results


def main_strategies(own: dict, passthrough: list[str]) -> dict:
    from crackseg.io import atomic_write_json

    strategies = [s.strip() for s in own["strategies"].split(",") if s.strip()]
    temperatures = float_list(own["temperatures"], "temperatures")
    seed = int_list(own["seed"], "seed")[0]
    out = Path(REPO, own["out"] or "runs/kd_strategies")
    results_path = Path(REPO, own["results"] or "results/kd_strategies.json")
    out.mkdir(parents=True, exist_ok=True)
    runs, teachers = [], {}
    results = None
    for strategy in strategies:
        # no teacher, no temperature to vary: "none" runs once, at the recipe's own temperatures, as the reference
        for t in (None,) if strategy == "none" else temperatures:
            temps = None if t is None else strategy_temperatures(strategy, t)
            labels = own["labels"].format(t=10.0 if t is None else t)
            if t is not None and labels not in teachers:
                teachers[labels] = teacher_facts(labels, own, out)
            folder = out / (f"none_seed{seed}" if t is None else f"{strategy}_T{t:g}_seed{seed}")
            train(folder, strategy, seed, labels, passthrough, temps)
            entry = run_entry(seed, evaluate(folder, folder / "student.keras", own, seed), strategy=strategy,
                              temperature=t, **(dict(t0=temps[0], t1=temps[1], t2=temps[2]) if temps else {}),
                              labels=labels if t is not None else None)
            runs.append(entry)
            scored = [r for r in runs if r.get("val")]
            best = max(scored, key=lambda r: r["val"]["strict_f1"]) if scored else None
            results = {"recipe": recipe_line(passthrough), "seed": seed,
                       "temperature_rule": "T replaces every temperature the strategy softens: standard T1, "
                                           "hyperthermal T0 T1 T2, non-isothermal T1 T2; none (no teacher) runs once "
                                           "at the recipe's temperatures",
                       "teachers": teachers, "runs": runs,
                       "best_by_val": None if best is None else {k: best[k] for k in ("strategy", "temperature")}}
            atomic_write_json(results_path, results)
    print(format_table([(strategy_row(r), r) for r in runs]))
    if results and results["best_by_val"]:
        print(f"best by validation strict F1: {strategy_row(results['best_by_val'])}")
    print(f"results: {results_path}")
    return results


def main(argv: list[str] | None = None) -> dict:
    from crackseg.data import DataError
    from crackseg.engines import EngineError

    import signal

    own, passthrough = parse_args(list(sys.argv[1:] if argv is None else argv))
    os.chdir(REPO)  # relative paths (--data, --labels, --out, ...) mean the same here and in Train_3
    if argv is None:  # as a script: SIGTERM ends like Ctrl+C (the running Train_3 is stopped, see run_train3)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return main_strategies(own, passthrough) if own["strategies"] else main_ablation(own, passthrough)
    except (DataError, EngineError) as exc:
        raise AblationError(str(exc)) from None


if __name__ == "__main__":
    main()
