"""Shipped model, stage 1 (Train_3_Step.py): non-isothermal KD at alpha 0.5 from random weights, 10 epochs.

    python Train_3_Step.py recipes/student_stage1_kd.py

Two-dataset split (DeepCrack + CrackForest, 376 / 42) and per-image epochs (every training image once, no sampling,
no extra augmentation), as this stage was trained. Its deployable file is stage 2's --init.
"""
# data
data = "../shared/datasets"
lists = "datasets/splits_2set"
seed = 0
dilate = 0
labels = "runs/shipped/soft_labels"   # recipes/soft_labels.py's out
sampling = ""                         # "": every training image once per epoch (the behaviour of the time)
samples_per_epoch = 0
augment = "none"                      # crop / flip / turn / colour only
# distillation
strategy = "non-isothermal"           # T0 / T1 / T2 = 0 / 10 / 10
alpha = 0.5
t1_squared = True
# model
preset = "student"
# training
out = "runs/shipped/student_stage1_kd"
deploy = "runs/shipped/student_stage1_kd.keras"
init = ""                             # random weights
epochs = 10
batch_size = 4
crop = 256
optimizer = "adam"
lr = 1e-3
loss = "asymmetric"
crack_weight = 200.0
lr_patience = 5
stop_patience = 15
