"""The ship rule: when a candidate student may replace the shipped one (scripts/ship.py applies it).

A candidate ships only if

(a) its balanced validation score is higher: the mean over datasets of strict F1 at the one threshold that
    maximises that mean (``metrics.balanced_threshold``, the ``val_score`` training selects by), both models scored
    on the same validation images; and
(b) on no dataset is it worse beyond noise: the paired 95 % bootstrap interval of (candidate - shipped) strict F1 on
    that dataset's validation images, each model at its own card threshold (``evaluation.compare_models``,
    ``metrics.paired_f1_difference``), does not lie wholly below 0.

(b) replaces a fixed per-dataset floor (e.g. DeepCrack >= 0.80): a floor on 30 images is a point inside a +-9 pt
interval, while the paired interval asks the question a floor meant -- "did it get worse there?" -- with the noise
of that dataset's size in it.

The rule reads a comparison table (``comparison_table``) so it can be checked on hand-made tables without a model.
"""
from __future__ import annotations

from typing import Any


class ShipRuleError(ValueError):
    """A comparison table the rule cannot read (one line)."""


RULE = ("ships only if (a) its balanced val_score (mean over datasets of strict F1 at one threshold) is higher and "
        "(b) on no dataset the paired 95 % bootstrap interval of (candidate - shipped) strict F1, each at its card "
        "threshold, lies wholly below 0")


def comparison_table(comparison: dict) -> dict:
    """The rule's input from ``evaluation.compare_models(shipped, candidate, validation pairs)`` (A = shipped,
    B = candidate): ``{"val_score": {"shipped", "candidate"}, "thresholds": {...}, "by_dataset": {name:
    {"images", "shipped_f1", "candidate_f1", "difference", "interval": [low, high]}}}``. With one dataset only,
    its row is the overall comparison."""
    try:
        a, b, diff = comparison["a"], comparison["b"], comparison["difference"]
        parts = diff.get("by_dataset") or {a.get("dataset", "all"): diff}
        reports = ({name: (a["by_dataset"][name], b["by_dataset"][name]) for name in parts}
                   if diff.get("by_dataset") else {name: (a, b) for name in parts})
        rows = {name: {"images": int(part["images"]), "shipped_f1": float(reports[name][0]["strict"]["f1"]),
                       "candidate_f1": float(reports[name][1]["strict"]["f1"]),
                       "difference": float(part["strict_f1"]["difference"]),
                       "interval": [float(x) for x in part["strict_f1"]["interval"]]}
                for name, part in parts.items()}
        return {"val_score": {"shipped": float(a["val_score"]), "candidate": float(b["val_score"])},
                "thresholds": {"shipped": float(a["threshold"]), "candidate": float(b["threshold"])},
                "level": float(diff.get("level", 0.95)), "by_dataset": rows}
    except (KeyError, TypeError, ValueError) as exc:
        raise ShipRuleError(f"comparison lacks what the ship rule reads: {exc!r}") from None


def decide(table: dict) -> dict[str, Any]:
    """Apply the rule to a ``comparison_table``. Returns ``{"ships": bool, "reasons": [why not, one per failed
    part], "worse": [datasets worse beyond noise], "table": table, "rule": RULE}``."""
    try:
        score = table["val_score"]
        shipped, candidate = float(score["shipped"]), float(score["candidate"])
        rows = table["by_dataset"]
        worse = sorted(name for name, row in rows.items() if float(row["interval"][1]) < 0)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ShipRuleError(f"comparison table lacks what the ship rule reads: {exc!r}") from None
    if not rows:
        raise ShipRuleError("comparison table has no dataset rows")
    reasons = []
    if not candidate > shipped:
        reasons.append(f"(a) balanced val_score {candidate:.4f} is not above the shipped {shipped:.4f}")
    for name in worse:
        low, high = rows[name]["interval"]
        reasons.append(f"(b) {name}: strict F1 {rows[name]['difference']:+.4f}, interval [{low:+.4f}, {high:+.4f}] "
                       f"wholly below 0")
    return {"ships": not reasons, "reasons": reasons, "worse": worse, "table": table, "rule": RULE}


def format_decision(decision: dict) -> str:
    """The per-dataset table and the verdict, as ship.py prints it."""
    t = decision["table"]
    lines = [f"ship rule: a candidate {RULE}",
             f"val_score (balanced): shipped {t['val_score']['shipped']:.4f}, "
             f"candidate {t['val_score']['candidate']:.4f}",
             f"{'dataset':<14}{'images':>7}{'shipped':>9}{'candidate':>11}  {'candidate - shipped [interval]':<32}"]
    for name, row in t["by_dataset"].items():
        low, high = row["interval"]
        mark = "  worse beyond noise" if name in decision["worse"] else ""
        lines.append(f"{name:<14}{row['images']:>7}{row['shipped_f1']:>9.4f}{row['candidate_f1']:>11.4f}  "
                     f"{row['difference']:+.4f} [{low:+.4f}, {high:+.4f}]{mark}")
    lines.append("verdict: ships" if decision["ships"] else "verdict: refused -- " + "; ".join(decision["reasons"]))
    return "\n".join(lines)


def judge(shipped: str, candidate: str, pairs: list, backend: str = "auto", precision: str = "fp32") -> dict:
    """Score both model files on the same validation ``pairs`` (``evaluation.compare_models``: each at its card
    threshold, paired intervals per dataset, both val_scores) and ``decide``."""
    from .evaluation import compare_models

    comparison = compare_models(shipped, candidate, pairs, None, 2, backend, precision)
    return decide(comparison_table(comparison))
