"""Shipped model, step 0 (Train_2_Step.py): the teacher's soft labels at T = 10 for the first three student stages.

    python Train_2_Step.py recipes/soft_labels.py

The teacher is the shipped one (weights/teacher.keras); the split is the two-dataset one the early stages used
(DeepCrack + CrackForest: 376 train / 42 val images).
"""
teacher = "weights/teacher.keras"
temperature = 10.0                    # Train_3's T1 (non-isothermal: 10)
data = "../shared/datasets"
lists = "datasets/splits_2set"        # DeepCrack + CrackForest lines of datasets/splits
seed = 0
splits = ("train", "val")
out = "runs/shipped/soft_labels"
rebuild = False
