"""Train_3_Step: train the student by knowledge distillation from Train_2_Step's soft labels.

    python Train_3_Step.py                                          # the constants below
    python Train_3_Step.py --strategy=non-isothermal --block=MCLD --out=runs/student_mcld
    python Train_3_Step.py --strategy=none --out=runs/student_nokd --deploy=weights/student_nokd.keras

Five outputs: h, x, y, mix at T1 (targets: the teacher's soft labels) + real = mix at T2 (target: the ground truth
at T0); loss = alpha * T1^2 * mean soft loss + (1 - alpha) * real loss.
Strategies (T0 / T1 / T2): standard 0 / 10 / 1, hyperthermal 10 / 10 / 10, non-isothermal 0 / 10 / 10;
none = no teacher (the four heads learn the ground truth), the baseline that measures the KD gain.
Ends by writing the deployable student (mix head at T2 only) and its model card beside it.
Re-running the same command resumes the run in --out.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

# data -----------------------------------------------------------------------------------------------------------
data = "../shared/datasets"       # the data, lists, val_fraction and seed Train_2_Step used
lists = "datasets/splits"         # folder with train.txt / val.txt; "none": seeded split
val_fraction = 0.1
seed = 0
dilate = 0                        # k x k dilation of the training ground truth (0 = off)
labels = "runs/soft_labels"       # Train_2_Step's --out (labels made at another T are re-softened to T1)
label_shift = 0.0                 # logits added to the teacher's (crack - background) before softening at T1: moves
                                  # the labels' boundary onto the --init student's, e.g. its card boundary minus the
                                  # teacher's (crackseg.distill.decision_logit; docs/distillation.md)
sampling = "sqrt"                 # each dataset's share of the tiles: size | sqrt | equal | NAME=WEIGHT,...
samples_per_epoch = 2000          # training tiles per epoch (0: one per training image, as before)
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"  # beyond crop/flip/turn/colour; "none"
floor = ""                        # checkpoint guard, e.g. "DeepCrack=0.80": epochs under it cannot be best
# distillation ---------------------------------------------------------------------------------------------------
strategy = "standard"             # standard | hyperthermal | non-isothermal | none (no teacher)
t0 = None                         # None: the strategy's temperatures; a number overrides it
t1 = None
t2 = None
alpha = 0.9                       # weight of the soft (teacher) loss; 1 - alpha goes to the real-label head
                                  # (fine-tuning a deployed student without a teacher: 0, see RESULTS.md)
t1_squared = True                 # scale the soft loss by T1^2 (Hinton) so its gradients do not shrink as 1/T1^2
# model ----------------------------------------------------------------------------------------------------------
preset = "student"
width = None                      # override the preset's width / residual blocks / block type ("MCL", "MCLD")
blocks = None
block = None
# training -------------------------------------------------------------------------------------------------------
out = "runs/student"
deploy = "weights/student.keras"  # the deployable student; its model card goes beside it (student.json)
epochs = 100
batch_size = 4
crop = 256                        # square training tiles (multiple of 4)
init = ""                         # fine-tune from this .keras (same architecture; a deployed model works); "": random
interpolate = "1"                 # deploy (1 - a) * init + a * trained: "1" the trained weights; "auto": the a of 0,
                                  # .25, .5, .75, 1 with the best val_score (WiSE-FT: keeps what --init knew)
lr = 5e-5
optimizer = "rmsprop"             # rmsprop | adam
loss = "asymmetric"               # asymmetric | bce_dice | bce, for every output
soft_loss = ""                    # the four soft heads' loss instead ("" = loss): bce is minimised at the soft target
                                  # itself (Dice and pos_weight are not; docs/distillation.md, "The KD ablation")
crack_weight = 200.0              # asymmetric loss weight of the crack channel
pos_weight = 10.0                 # bce_dice: weight of crack pixels in the BCE term
threshold = 0.5                   # for the training-batch metrics only; validation sweeps every threshold
distance = 2
lr_patience = 5
stop_patience = 15
max_minutes = 0.0                 # stop after the epoch that passes this many minutes (0: no limit); re-run to go on
profile_size = 448                # FLOPs are reported (and written to the card) at this input size

config = configure(globals(), __doc__)

from crackseg.data import DataError  # noqa: E402
from crackseg.distill import LabelError  # noqa: E402
from crackseg.train_steps import train_student  # noqa: E402  (imports Keras)
from crackseg.training import TrainingError  # noqa: E402

if __name__ == "__main__":
    try:
        train_student(config)
    except (DataError, LabelError, TrainingError) as exc:  # bad input or run state: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
