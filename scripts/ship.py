"""ship.py: put a finished, deployed student into weights/ with its card and its exports, checked.

    python scripts/ship.py --model=runs/shipped/student_stage5_sampling.keras   # the deployable file Train_3 wrote
    python scripts/ship.py --run=runs/shipped/student_stage5_sampling            # or the run folder (its --deploy)
    python scripts/ship.py --model=... --weights_dir=/tmp/w --no-cpu_int8        # elsewhere; ONNX + fast only
    python scripts/ship.py --ablation=results/kd_ablation.json --name=student_four  # the arm a KD ablation chose
    python scripts/ship.py --model=... --no-rule                                  # replace without the ship rule

A candidate replaces a student already in --weights_dir only under the ship rule (``crackseg.ship_rule``): (a) its
balanced val_score (mean over datasets of strict F1 at one threshold) is higher, and (b) on no dataset is the paired
95 % bootstrap interval of (candidate - shipped) strict F1, each model at its card threshold, wholly below 0; both
scored here on the validation split of --data / --lists. Otherwise it refuses, printing the per-dataset table.
--no-rule skips the comparison (say why in the commit).

Refuses, in one line, a run that is not finished (every epoch, early stopping, or its --max_minutes limit with
nothing trained after the deploy) or a file without the card Train_3 writes beside it. The card of
weights/student.keras is written entirely here: the deployed student's card, ``stages`` (each stage's recipe, run
folder, epochs, best score and initial weights' sha256, read from the run folders and the cards beside each
stage's deployable file) and ``shipped``; with --ablation, the run scripts/kd_ablation.py chose (its ``ship``) and
``kd_ablation`` in the card: the arm, seed, teacher hash and the measured gain with its 95 % interval. The exports
(student.onnx, student_fast.onnx, student_int8.xml) are TensorRT.py's, each parity-checked against Keras, and are
made in a staging folder beside --weights_dir (``.weights.ship-*``): nothing there is replaced unless every check
passed, and then the whole set changes at once (crackseg.shipping: one swap of folders, or a commit record that the
next run completes); a staging folder left by a killed run is swept by the next one.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crackseg.config import configure

model = ""                        # the deployable .keras Train_3 wrote (its card beside it); or give --run
run = ""                          # a Train_3 run folder: ships the deploy file its config.json names
ablation = ""                     # or: scripts/kd_ablation.py's results JSON: ships the run it chose, gain in the card
weights_dir = "weights"           # where the shipped files go
name = "student"                  # file stem there: student.keras, student.json, student.onnx, ...
data = "../shared/datasets"       # real images for the parity checks (val split) and int8 calibration (train split)
lists = "datasets/splits"         # folder with train.txt / val.txt; "none": seeded split
parity_images = 8
fast = True                       # also student_fast.onnx (the clean fast-CPU export), checked on OpenVINO
cpu_int8 = True                   # also student_int8.xml/.bin (full int8 for VNNI / AMX / AVX2 CPUs), checked against
                                  # Keras and on validation F1 (within 0.5 pt of fp32)
force = False                     # ship again even when weights/ already holds these bytes with every export
rule = True                       # replace a shipped student only under the ship rule (above); --no-rule: skip it
rule_backend = "auto"             # engine of the rule's comparison (auto: Keras for .keras files; onnx: faster)

config = configure(globals(), __doc__)

from crackseg.card import CardError  # noqa: E402
from crackseg.data import DataError, load_split  # noqa: E402
from crackseg.engines import EngineError  # noqa: E402
from crackseg.evaluation import sample_pairs  # noqa: E402
from crackseg.io import sha256  # noqa: E402
from crackseg.ship_rule import ShipRuleError, format_decision, judge  # noqa: E402
from crackseg.shipping import ShipError, ablation_choice, deployed_model, ship  # noqa: E402

if __name__ == "__main__":
    try:
        if ablation and (model or run):
            raise ShipError("--ablation names the run to ship; give it without --model / --run")
        chosen, facts = ablation_choice(ablation) if ablation else (deployed_model(model=model, run=run), None)
        current = Path(weights_dir) / f"{name}.keras"
        if rule and current.is_file() and sha256(current) != sha256(chosen):
            pairs = sample_pairs(load_split(data, None if lists == "none" else lists)["val"])
            print(f"ship rule: {current} (shipped) against {chosen} (candidate) on {len(pairs)} validation images",
                  flush=True)
            decision = judge(str(current), str(chosen), pairs, rule_backend)
            print(format_decision(decision), flush=True)
            if not decision["ships"]:
                raise ShipError(f"the ship rule keeps {current}: " + "; ".join(decision["reasons"]))
        ship(chosen, weights_dir, name, data=data, lists=lists, parity_images=parity_images, fast=fast,
             cpu_int8=cpu_int8, force=force, ablation=facts)
    except (ShipError, ShipRuleError, CardError, DataError, EngineError, OSError) as exc:
        sys.exit(f"error: {exc}")
