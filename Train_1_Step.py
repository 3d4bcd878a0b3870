"""Train_1_Step: train the teacher (or any preset) on crack images.

    python Train_1_Step.py                                   # the constants below
    python Train_1_Step.py --epochs=5 --data=DIR --preset=student --out=runs/try

Edit the constants or override any of them as --key=value. Re-running the same command resumes the run in --out.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

# data -----------------------------------------------------------------------------------------------------------
data = "../shared/datasets"       # one or more dataset roots, comma-separated (CrackForest, DeepCrack, images/+masks/)
lists = "datasets/splits"         # folder with train.txt / val.txt of sample ids; "none": seeded split
val_fraction = 0.1                # seeded split only
seed = 0
dilate = 0                        # k x k dilation of training labels (0 = off)
sampling = "sqrt"                 # each dataset's share of the tiles: size | sqrt | equal | NAME=WEIGHT,...
samples_per_epoch = 2000          # training tiles per epoch (0: one per training image, as before)
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"  # beyond crop/flip/turn/colour; "none"
floor = ""                        # checkpoint guard, e.g. "DeepCrack=0.80": epochs under it cannot be best
# model ----------------------------------------------------------------------------------------------------------
preset = "auto"                   # teacher | teacher_cpu | student | lite0_unet | lite2_unet (pretrained encoders);
                                  # auto: teacher with a GPU, teacher_cpu without
width = None                      # override the preset's width / residual blocks / block type ("MCL", "MCLD")
blocks = None
block = None
# training -------------------------------------------------------------------------------------------------------
out = "runs/teacher"
epochs = 100
batch_size = 4
crop = 256                        # square training tiles (multiple of 4)
init = ""                         # fine-tune from this .keras (same architecture; a deployed model works); "": random
                                  # (a pretrained teacher's encoder starts from its ImageNet weights)
encoder_lr_scale = 0.1            # pretrained teachers: the encoder learns at this share of lr (optimizer adam)
encoder_warmup = 0.0              # pretrained teachers: epochs with the encoder fixed while the decoder starts
lr = 5e-5                         # the paper's RMSprop rate
optimizer = "rmsprop"             # rmsprop | adam
loss = "asymmetric"               # asymmetric (the paper's) | bce_dice
crack_weight = 200.0              # asymmetric loss weight of the crack channel
pos_weight = 10.0                 # bce_dice: weight of crack pixels in the BCE term
threshold = 0.5                   # for the training-batch metrics only; validation sweeps every threshold
distance = 2                      # tolerance of the tolerant F1 (Chebyshev pixels)
lr_patience = 5
stop_patience = 15
max_minutes = 0.0                 # stop after the epoch that passes this many minutes (0: no limit); re-run to go on
deploy = ""                       # also copy best.keras here with a model card, e.g. weights/teacher.keras ("": no)
profile_size = 448                # FLOPs are reported at this input size

config = configure(globals(), __doc__)

from crackseg.data import DataError  # noqa: E402
from crackseg.distill import LabelError  # noqa: E402
from crackseg.train_steps import train_teacher  # noqa: E402  (imports Keras)
from crackseg.training import TrainingError  # noqa: E402

if __name__ == "__main__":
    try:
        train_teacher(config)
    except (DataError, LabelError, TrainingError) as exc:  # bad input or run state: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
