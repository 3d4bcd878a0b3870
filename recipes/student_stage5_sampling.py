"""Four-dataset candidate (measured, not shipped: it loses DeepCrack), stage 5 (Train_3_Step.py): one more epoch of 1000
tiles on the four datasets from stage 4's best checkpoint (all five heads), with the sampling that won the sampling A/B
(sqrt vs equal).

    python Train_3_Step.py recipes/student_stage5_sampling.py

As run (RESULTS.md, "Four-dataset student"): two arms, --sampling=sqrt | equal, --init=runs/mix_aug/best.keras, 40
epochs under a 1-minute limit (= one epoch); here epochs = 1. Ship it with
scripts/ship.py only if it passes the DeepCrack guard.
"""
# data
data = "../shared/datasets"
lists = "datasets/splits"             # the four datasets
seed = 0
dilate = 0
sampling = "sqrt"                     # the A/B winner (sqrt | equal); the lead sets it
samples_per_epoch = 1000
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
# distillation
strategy = "none"                     # no teacher: every head learns the ground truth
alpha = 0.9                           # the default: 0.9 of the loss on the four heads (ground truth here), 0.1 on real
# model
preset = "student"
# training
out = "runs/shipped/student_stage5_sampling"
deploy = "runs/shipped/student_stage5_sampling.keras"
init = "runs/shipped/student_stage4_mixed/best.keras"  # stage 4's best checkpoint (all heads, as run)
epochs = 1                            # as run: one epoch of 1000 tiles
batch_size = 4
crop = 256
optimizer = "adam"
lr = 1e-4
loss = "bce_dice"
pos_weight = 3.0
threshold = 0.5
lr_patience = 2
stop_patience = 15
max_minutes = 0.0
