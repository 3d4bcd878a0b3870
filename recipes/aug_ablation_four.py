"""The augmentation ablation's shared student recipe (scripts/aug_ablation.py passes it to Train_3_Step.py for every
arm, adding --augment, --seed, --out and --deploy): the shipped student fine-tuned on the four datasets for one epoch
of 500 tiles, without a teacher, at the shipped student's temperature (T1 = T2 = 10), the deployed head alone
(alpha 0), 43 % of the tiles from DeepCrack. These are the settings of the last fine-tune in RESULTS.md ("At the
shipped student's temperature", run a0_dc3), whose first epoch lost DeepCrack least, without its DeepCrack floor
(the card threshold here is the plain balanced one, so the arms compare on the rule itself).

    python scripts/aug_ablation.py recipes/aug_ablation_four.py                   # results/aug_ablation.json

`augment` is the full arm; the other arms switch one of its components off, or all of them.
"""
# data
data = "../shared/datasets"
lists = "datasets/splits"             # the four datasets
dilate = 0
sampling = "DeepCrack=3,CrackForest=1,CRACK500=2,AigleRN=1"
samples_per_epoch = 500
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
# distillation
strategy = "none"                     # no teacher: the ground truth only
t1 = 10.0                             # the shipped student's temperature (a fine-tune at T2 = 1 rescales its logits)
t2 = 10.0
alpha = 0.0                           # the deployed head alone (RESULTS.md: alpha 0.9 costs DeepCrack more)
# model
preset = "student"
init = "weights/student.keras"
# training
epochs = 1
batch_size = 4
crop = 256
optimizer = "adam"
lr = 5e-5
loss = "bce_dice"
pos_weight = 10.0
lr_patience = 2
stop_patience = 15
