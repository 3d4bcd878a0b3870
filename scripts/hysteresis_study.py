"""hysteresis_study.py: does hysteresis thresholding (high seeds, low extends along connected pixels) beat the
single threshold of the model card, on validation?

    nice -n 15 python scripts/hysteresis_study.py                      # weights/student.onnx on datasets/splits/val.txt
    python scripts/hysteresis_study.py --highs=0.8,0.85,0.9 --lows=0.3,0.5   # a smaller grid, same cache

The model runs once: its probabilities on the list are cached in --cache (git-ignored runs/, keyed on the model's
sha256, the list and the data root), and every rule is then scored from the cache
(``crackseg.hysteresis.score_rule``): strict, tolerant and centreline F1 per dataset and the crack pieces per image
(8-connected regions, as report.py's masks are split). Rules compared, all chosen on this list only:

* ``card``: the single threshold of the model card;
* ``single``: the best single threshold by the card's rule (mean over datasets of strict F1,
  ``metrics.balanced_threshold``), so hysteresis is not credited with what re-choosing one threshold gives;
* ``hysteresis``: the (low, high) of the grid (low < high) with the highest mean over datasets of strict F1;
* ``fewest_pieces``: the grid's rule with the fewest crack pieces per image (mean over datasets) among those within
  --f1_margin of ``single``'s mean strict F1 (masks that hold cracks together at almost no F1 cost).

Each rule's difference to ``single`` has a paired 95 % bootstrap interval per dataset. Writes --json.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crackseg.config import configure

model = "weights/student.onnx"             # the shipped student (its ONNX export: the fast CPU engines run it)
backend = "auto"                           # auto | onnx | openvino | keras
precision = "fp32"                         # the card's threshold was chosen on fp32 outputs
data = "../shared/datasets"
subset = "datasets/splits/val.txt"         # the validation list: thresholds are chosen here, never on test
cache = "runs/hysteresis/val_probs.npz"    # per-image probabilities (made once; remade when model / list differ)
highs = "0.3,0.4,0.5,0.6,0.7,0.8,0.9"            # seed thresholds of the grid
lows = "0.05,0.1,0.15,0.2,0.3,0.4,0.5"         # extension thresholds (pairs with low >= high are skipped)
connectivity = 8                           # neighbours that extend a crack (8: diagonal cracks stay whole)
distance = 2                               # tolerant / centreline matching distance (pixels)
f1_margin = 0.005                          # fewest_pieces: a rule within this much of single's mean strict F1
json_out = "results/hysteresis.json"

config = configure(globals(), __doc__)

from crackseg.data import DataError  # noqa: E402
from crackseg.engines import EngineError  # noqa: E402
from crackseg.hysteresis import HysteresisError  # noqa: E402


def _verdict(rule: dict, single: dict) -> str:
    """One line: the mean strict F1 change against the best single threshold, the datasets worse or better beyond
    noise (paired interval wholly below / above 0, as the ship rule reads it) and the pieces per image."""
    diff = rule["minus_single"]
    worse = [n for n, d in diff.items() if d["strict_f1"]["interval"][1] < 0]
    better = [n for n, d in diff.items() if d["strict_f1"]["interval"][0] > 0]
    change = rule["mean_strict_f1"] - single["mean_strict_f1"]
    helps = change > 0 and not worse
    return (f"{'helps' if helps else 'does not help'} by the ship rule's reading: mean strict F1 {change:+.4f} "
            f"against the best single threshold; worse beyond noise: {', '.join(worse) or 'none'}; better beyond "
            f"noise: {', '.join(better) or 'none'}; pieces per image (mean over datasets) {_mean_pieces(rule):.2f} "
            f"against {_mean_pieces(single):.2f} (ground truth {_mean_pieces(single, 'truth'):.2f})")


def _mean_pieces(report: dict, which: str = "predicted") -> float:
    return float(sum(p["pieces"][which] for p in report["by_dataset"].values()) / len(report["by_dataset"]))


def _values(text: str, name: str) -> list[float]:
    try:
        values = sorted({round(float(v), 4) for v in text.split(",") if v.strip()})
    except ValueError:
        raise HysteresisError(f"--{name}={text!r}: comma-separated numbers expected") from None
    if not values or not all(0 < v < 1 for v in values):
        raise HysteresisError(f"--{name}={text!r}: thresholds in (0, 1) expected")
    return values


def probabilities(meta: dict):
    """The cached probabilities of --model on --subset, made now when the cache is missing or for another model."""
    from crackseg.engines import open_engine
    from crackseg.evaluation import dataset_pairs, read_labelled
    from crackseg.hysteresis import ProbabilityCache

    path = Path(cache)
    if path.is_file():
        try:
            return ProbabilityCache.load(path, meta)
        except HysteresisError as exc:
            print(f"cache not used: {exc}")
    pairs = dataset_pairs(data, None, subset)
    stems, names, probs, truths = [], [], [], []
    with open_engine(model, backend, None, precision) as engine:
        print(f"model: {engine.describe()}")
        for pair, item in zip(pairs, read_labelled(pairs, "probabilities")):
            stems.append(pair.stem)
            names.append(item.dataset)
            probs.append(engine.predict(item.image).astype("float16"))
            truths.append(item.truth)
    made = ProbabilityCache(stems, names, probs, truths)
    made.save(path, meta)
    return made


def main() -> int:
    import numpy as np

    from crackseg.engines import open_engine, read_model_card
    from crackseg.hysteresis import hysteresis_mask, score_rule
    from crackseg.io import atomic_write_json, sha256
    from crackseg.metrics import balanced_threshold, paired_f1_difference, threshold_counts

    high_values, low_values = _values(highs, "highs"), _values(lows, "lows")
    card_threshold = float(read_model_card(model).get("threshold", 0.5))
    meta = {"model_sha256": sha256(model), "subset": str(subset), "data": str(Path(data).resolve()),
            "backend": backend, "precision": precision}
    probs = probabilities(meta)
    with open_engine(model, backend, None, precision) as engine:  # what ran (e.g. OpenVINO on the fast export)
        described = engine.describe()

    curves: dict = {}
    for prob, truth, name in zip(probs.probs, probs.truths, probs.datasets):
        curves[name] = curves.get(name, 0) + threshold_counts(prob.astype(np.float32), truth)
    single_threshold = balanced_threshold(curves)["threshold"]

    def balanced(report: dict) -> float:
        return float(np.mean([part["strict"]["f1"] for part in report["by_dataset"].values()]))

    def scored(low: float, high: float) -> dict:
        report = score_rule(probs, lambda p: hysteresis_mask(p, low, high, connectivity), distance)
        report.update(low=low, high=high, mean_strict_f1=balanced(report))
        print(f"low {low:.2f} high {high:.2f}: mean strict F1 {report['mean_strict_f1']:.4f}", flush=True)
        return report

    card = scored(card_threshold, card_threshold)
    single = scored(single_threshold, single_threshold)
    # the single threshold's own value is a low of the grid too: hysteresis from there can only drop faint pieces
    low_values = sorted({*low_values, single_threshold})
    grid = [scored(low, high) for high in high_values for low in low_values if low < high]
    best = max(grid, key=lambda r: (r["mean_strict_f1"], r["high"], r["low"]))
    # the rule that holds cracks together most at (nearly) no F1 cost: fewest pieces per image (mean over datasets)
    # among grid rules within --f1_margin of the best single threshold's mean strict F1
    near = [r for r in grid if r["mean_strict_f1"] >= single["mean_strict_f1"] - f1_margin] or [best]
    whole = min(near, key=lambda r: (_mean_pieces(r), -r["mean_strict_f1"]))

    def against_single(report: dict) -> dict:
        return {name: paired_f1_difference(single["by_dataset"][name]["image_counts"], part["image_counts"])
                for name, part in report["by_dataset"].items()}

    def summary(report: dict) -> dict:
        keep = ("images", "strict", "tolerant", "centreline", "pieces", "interval")
        return {"low": report["low"], "high": report["high"], "mean_strict_f1": report["mean_strict_f1"],
                **{k: report[k] for k in keep},
                "by_dataset": {n: {k: p[k] for k in keep} for n, p in report["by_dataset"].items()}}

    rules = {"card": summary(card), "single": summary(single), "hysteresis": summary(best),
             "fewest_pieces": summary(whole)}
    for name, report in (("card", card), ("hysteresis", best), ("fewest_pieces", whole)):
        rules[name]["minus_single"] = against_single(report)
    verdict = {name: _verdict(rules[name], rules["single"]) for name in ("hysteresis", "fewest_pieces")}
    command = " ".join(["python scripts/hysteresis_study.py", *sys.argv[1:]])
    out = {"command": command, "model": {"path": model, "sha256": meta["model_sha256"], "backend": backend,
                                         "precision": precision, "engine": described,
                                         "card_threshold": card_threshold},
           "subset": subset, "images": len(probs.stems), "connectivity": connectivity, "distance": distance,
           "choice": "single: the threshold of 0.01..0.99 maximising the mean over datasets of strict F1 on this "
                     "list (the card's balanced rule); hysteresis: the grid's (low, high) maximising the same mean; "
                     f"fewest_pieces: the grid's rule with the fewest pieces per image (mean over datasets) among "
                     f"those within {f1_margin} of single's mean strict F1",
           "verdict": verdict, "rules": rules,
           "grid": [{"low": r["low"], "high": r["high"], "mean_strict_f1": r["mean_strict_f1"],
                     "by_dataset": {n: {"strict_f1": p["strict"]["f1"], "tolerant_f1": p["tolerant"]["f1"],
                                        "centreline_f1": p["centreline"]["f1"], "pieces": p["pieces"]["predicted"]}
                                    for n, p in r["by_dataset"].items()}} for r in grid]}
    print(format_study(out))
    for name, text in verdict.items():
        print(f"{name}: {text}")
    if json_out:
        atomic_write_json(json_out, out)
        print(f"written: {json_out}")
    return 0


def format_study(out: dict) -> str:
    """Per dataset and rule: strict / tolerant / centreline F1 and pieces per image (predicted / true)."""
    lines = [f"{'dataset':<12}{'rule':<14}{'low':>5}{'high':>6}{'strict':>8}{'tol':>8}{'centre':>8}"
             f"{'pieces':>8}{'true':>6}  strict - single [95% paired]"]
    names = list(out["rules"]["single"]["by_dataset"])
    for name in names:
        for rule, r in out["rules"].items():
            p = r["by_dataset"][name]
            diff = r.get("minus_single", {}).get(name, {}).get("strict_f1")
            span = (f"{diff['difference']:+.4f} [{diff['interval'][0]:+.4f}, {diff['interval'][1]:+.4f}]"
                    if diff else "")
            lines.append(f"{name:<12}{rule:<14}{r['low']:>5.2f}{r['high']:>6.2f}{p['strict']['f1']:>8.4f}"
                         f"{p['tolerant']['f1']:>8.4f}{p['centreline']['f1']:>8.4f}{p['pieces']['predicted']:>8.2f}"
                         f"{p['pieces']['truth']:>6.2f}  {span}")
    for rule, r in out["rules"].items():
        lines.append(f"mean over datasets, {rule}: strict F1 {r['mean_strict_f1']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DataError, EngineError, HysteresisError, OSError) as exc:
        sys.exit(f"error: {exc}")
