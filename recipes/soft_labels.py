"""Shipped model, step 0 (Train_2_Step.py): the teacher's soft labels at T = 10 for the first three student stages.

    python Train_2_Step.py recipes/soft_labels.py

The teacher is the MCFF-L teacher_cpu (3.6 M) that shipped as weights/teacher.keras until the pretrained
lite0_unet replaced it; scripts/train_shipped.py (`make weights`) takes it from git history into
runs/shipped/teacher_mcff.keras (by hand: git show 4cca5c5:weights/teacher.keras > runs/shipped/teacher_mcff.keras).
The split is the two-dataset one the early stages used (DeepCrack + CrackForest: 376 train / 42 val images).
"""
teacher = "runs/shipped/teacher_mcff.keras"
temperature = 10.0                    # Train_3's T1 (non-isothermal: 10)
data = "../shared/datasets"
lists = "datasets/splits_2set"        # DeepCrack + CrackForest lines of datasets/splits
seed = 0
splits = ("train", "val")
out = "runs/shipped/soft_labels"
rebuild = False
