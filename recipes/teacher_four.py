"""The four-dataset MCFF-L teacher (Train_1_Step.py; shipped as weights/teacher_four.keras until commit 4cca5c5,
replaced by the pretrained recipes/teacher_lite0.py): the shipped teacher_cpu fine-tuned on DeepCrack, CrackForest,
CRACK500 and AigleRN with the student's four-dataset recipe (sqrt sampling, full augmentation, BCE + Dice), for
distillation on all four sets (docs/distillation.md, "A teacher fine-tuned on the four datasets").

    python Train_1_Step.py recipes/teacher_four.py --max_minutes=110        # resumes; re-run to go on
    python Train_1_Step.py recipes/teacher_four.py --epochs=22 --deploy=weights/teacher_four.keras   # as shipped

An epoch of 500 tiles with its balanced validation over the 980 validation images took 336-413 s on the
AVX-512 EPYC and 850-930 s on the AMX Xeon (2 cores, nothing else running).
"""
# data
data = "../shared/datasets"
lists = "datasets/splits"             # the four datasets
seed = 0
sampling = "sqrt"
samples_per_epoch = 500
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
# model
preset = "teacher_cpu"
init = "runs/shipped/teacher_mcff.keras"  # the two-dataset teacher_cpu (git show 4cca5c5:weights/teacher.keras)
# training
out = "runs/teacher4"
epochs = 40
batch_size = 4
crop = 256
optimizer = "adam"
lr = 1e-4
loss = "bce_dice"
pos_weight = 10.0
lr_patience = 2
stop_patience = 15
