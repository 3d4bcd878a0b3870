"""Shipped model, stage 2 (Train_3_Step.py): ground truth only (alpha 0) from stage 1, 20 epochs, rate halved after 2
epochs without a new best.

    python Train_3_Step.py recipes/student_stage2_gt.py

Same split and per-image epochs as stage 1. Its deployable file is stage 3's --init.
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
alpha = 0.0                           # the real-label head only
t1_squared = True
# model
preset = "student"
# training
out = "runs/shipped/student_stage2_gt"
deploy = "runs/shipped/student_stage2_gt.keras"
init = "runs/shipped/student_stage1_kd.keras"   # stage 1's deployable student
epochs = 20
batch_size = 4
crop = 256
optimizer = "adam"
lr = 1e-3
loss = "asymmetric"
crack_weight = 200.0
lr_patience = 2
stop_patience = 15
