"""Train_2_Step: distillation labels -- the teacher's four heads (h, x, y, mix) softened at temperature T.

    python Train_2_Step.py                                          # the constants below
    python Train_2_Step.py --teacher=runs/teacher/best.keras --temperature=5 --out=runs/soft_labels_t5
    python Train_2_Step.py --teacher=A.keras,B.keras --tta --out=runs/soft_labels_ens   # ensemble + TTA

Writes OUT/<split>/<sample id>.npz (crack probability per head, --dtype) + OUT/<split>/manifest.json for the
train / val (/ test) splits. Re-running resumes; labels from another teacher (or ensemble), T, TTA or dtype are
refused unless --rebuild. Train_3_Step reads only the train split's labels. The val labels are then scored against
the ground truth by the model card's rule (mean of the datasets' strict F1 at one threshold; kept in the val
manifest as "quality"): the teacher as the student sees it, ensemble and TTA included.
Use the same data / lists / val_fraction / seed as Train_1_Step and Train_3_Step.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

# teacher --------------------------------------------------------------------------------------------------------
teacher = "runs/teacher/best.keras"   # a Train_1_Step checkpoint; A.keras,B.keras: an ensemble (logits averaged)
tta = False                           # average the logits over the 8 flips / 90-degree rotations (8x the time)
temperature = 10.0                    # T: the paper's settings are 5, 10 and 15 (Train_3 re-softens to its T1)
# data -----------------------------------------------------------------------------------------------------------
data = "../shared/datasets"           # one or more dataset roots, comma-separated
lists = "datasets/splits"             # folder with train.txt / val.txt (/ test.txt); "none": seeded split
val_fraction = 0.1                    # seeded split only
seed = 0
splits = ("train", "val", "test")     # splits without images are skipped
# output ---------------------------------------------------------------------------------------------------------
out = "runs/soft_labels"
dtype = "float16"                     # label storage: float16 (half the disk; see docs/distillation.md) | float32
rebuild = False                       # replace labels made with another teacher, temperature, TTA or dtype

config = configure(globals(), __doc__)

from crackseg.data import DataError  # noqa: E402
from crackseg.train_steps import make_soft_labels  # noqa: E402  (imports TensorFlow)
from crackseg.training import TrainingError  # noqa: E402

if __name__ == "__main__":
    try:
        make_soft_labels(config)
    except (DataError, TrainingError) as exc:  # bad input: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
