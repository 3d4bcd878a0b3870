"""Four-dataset candidate (measured, not shipped: it loses DeepCrack), stage 4 (Train_3_Step.py): all four datasets
(datasets/splits: AigleRN, CRACK500, CrackForest, DeepCrack), tiles drawn per dataset by the square root of its size,
the full augmentation, from stage 3; 2 epochs of 1000 tiles, no teacher, BCE + Dice with crack weight 3.

    python Train_3_Step.py recipes/student_stage4_mixed.py

As run (RESULTS.md, "Four-dataset student"): the "aug" arm (runs/mix_aug, from weights/student.keras as shipped before =
stage 3's bytes), which won its A/B against augment = "none" after 2 epochs and stopped there. Its best.keras is
stage 5's --init. It ran at strategy none's T2 = 1 while stage 3 was trained at T2 = 10, which scales the start's
logits tenfold (Train_3 now warns); a rerun should add t1 = 10, t2 = 10 (RESULTS.md, "At the shipped student's
temperature").
"""
# data
data = "../shared/datasets"
lists = "datasets/splits"             # the four datasets
seed = 0
dilate = 0
sampling = "sqrt"
samples_per_epoch = 1000
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
# distillation
strategy = "none"                     # no teacher: every head learns the ground truth
alpha = 0.9                           # the default: 0.9 of the loss on the four heads (ground truth here), 0.1 on real
# model
preset = "student"
# training
out = "runs/shipped/student_stage4_mixed"
deploy = "runs/shipped/student_stage4_mixed.keras"
init = "runs/shipped/student_stage3_bce.keras"  # stage 3's deployable student
epochs = 2                            # as run: 2 epochs of 1000 tiles
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
