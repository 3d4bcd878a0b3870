"""Shipped model, stage 3 (Train_3_Step.py): ground truth with BCE + Dice (Adam 1e-4) from stage 2, 6 epochs.

    python Train_3_Step.py recipes/student_stage3_bce.py

Same split and per-image epochs as stages 1 and 2. The training-batch metrics are logged at 0.8 (BCE with a crack
weight moves the best threshold up); the card's threshold is chosen on validation. Its deployable file is stage 4's
--init.
"""
# data
data = "../shared/datasets"
lists = "datasets/splits_2set"
seed = 0
dilate = 0
labels = "runs/shipped/soft_labels"
sampling = ""
samples_per_epoch = 0
augment = "none"
# distillation
strategy = "non-isothermal"
alpha = 0.0
t1_squared = True
# model
preset = "student"
# training
out = "runs/shipped/student_stage3_bce"
deploy = "runs/shipped/student_stage3_bce.keras"
init = "runs/shipped/student_stage2_gt.keras"   # stage 2's deployable student
epochs = 6
batch_size = 4
crop = 256
optimizer = "adam"
lr = 1e-4
loss = "bce_dice"
pos_weight = 10.0                     # the BCE crack weight of the time
threshold = 0.8
lr_patience = 2
stop_patience = 15
