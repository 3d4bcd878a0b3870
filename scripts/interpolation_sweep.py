"""interpolation_sweep.py: how a fine-tuned student scores between its start and its end, on validation.

    python scripts/interpolation_sweep.py --trained=runs/ft/best.keras                 # start: weights/student.keras
    python scripts/interpolation_sweep.py --trained=runs/ft/best.keras --alphas=0,0.2,0.5 --floor=DeepCrack=0.80

For each ``a`` of ``--alphas`` the deployable student ``(1 - a) * start + a * trained`` (WiSE-FT weight
interpolation; a = 0 is the start itself) is scored on the validation list by the model card's threshold rule
(mean over datasets of strict F1 at one threshold, among the thresholds that keep ``--floor``): the same sweep as
``Train_3_Step.py --interpolate``, here for any two checkpoints, without deploying anything. Writes ``--json``.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crackseg.config import configure

start = "weights/student.keras"   # a = 0: the model the fine-tune started from (deployed or a run's checkpoint)
trained = ""                      # a = 1: the fine-tune's best.keras (or a deployed student)
temperature = 10.0                # T2 of the deployed mix head (the shipped student's: 10)
alphas = "0,0.25,0.5,0.75,1"
floor = "DeepCrack=0.80"          # the card rule's floors ("" = none)
data = "../shared/datasets"
lists = "datasets/splits"
json_out = "results/interpolation_sweep.json"

config = configure(globals(), __doc__)

from crackseg.data import DataError  # noqa: E402
from crackseg.training import TrainingError  # noqa: E402


def main() -> int:
    from crackseg.data import dataset_of, load_arrays, load_split
    from crackseg.io import atomic_write_json, sha256
    from crackseg.keras_io import load_keras_model
    from crackseg.train_steps import interpolation_alphas, interpolation_sweep
    from crackseg.training import parse_floors
    from model import deploy_model

    for name, path in (("--start", start), ("--trained", trained)):
        if not path or not Path(path).is_file():
            raise TrainingError(f"{name}={path}: model file not found")
    values = interpolation_alphas(alphas, start)
    floors = parse_floors(floor)
    val = load_split(data, lists)["val"]
    images, masks = load_arrays(val)
    names = [dataset_of(s) for s in val]
    begin, end = load_keras_model(start), load_keras_model(trained)
    # the model the sweep sets: a deployable of the trained architecture (a run's checkpoint has the mix head;
    # a deployed student is one already, loaded a second time so ``end`` keeps its weights)
    target = (deploy_model(end, head="mix", temperature=temperature) if "mix" in end.output_names
              else load_keras_model(trained))
    rows = interpolation_sweep(begin, end, target, values, images, masks, names, floors)
    best = max(rows, key=lambda row: (row["score"], row["alpha"]))
    print(f"best: a = {best['alpha']:.2f} (score {best['score']:.4f} at t={best['threshold']:.2f})")
    if json_out:
        atomic_write_json(json_out, {
            "command": " ".join(["python scripts/interpolation_sweep.py", *sys.argv[1:]]),
            "start": {"path": start, "sha256": sha256(start)}, "trained": {"path": trained, "sha256": sha256(trained)},
            "temperature": temperature, "floor": floors, "validation_images": len(val), "sweep": rows,
            "best_alpha": best["alpha"]})
        print(f"written: {json_out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DataError, TrainingError, OSError, ValueError) as exc:  # ValueError: a --floor dataset not in val
        sys.exit(f"error: {exc}")
