"""evaluate.py on hand-made predictions (numbers computed by hand below), its refusals, the --model path, and
reports per dataset (crackseg.evaluation) on two fake dataset roots."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from crackseg.engines import Engine
from crackseg import evaluation
from crackseg.evaluation import (compare_models, dataset_pairs, evaluate_engine, format_comparison,
                                 read_labelled)

REPO = Path(__file__).resolve().parents[1]


def run_evaluate(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "evaluate.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture()
def hand_made(tmp_path: Path) -> Path:
    """Three 8x8 images, each prediction in another format:

    a (8-bit probabilities, 0/255 mask): truth row 2, cols 1-4; pred 255, 255, 128 (0.502), 100 (0.392) on it and
      255 at (6, 6), 4 px from the nearest crack.            strict@0.5: tp 3 fp 1 fn 1; tolerant: tp 3 fp 1 hit 4/4
    b (16-bit, 0/255 mask): truth (5, 5); pred 65535 at (5, 6).  strict: tp 0 fp 1 fn 1; tolerant: tp 1 fp 0 hit 1/1
    c (0/1 binary pred, 0/1 mask): truth (0, 0); pred 1 at (0, 0).  strict: tp 1; tolerant: tp 1 hit 1/1
    """
    a_truth = np.zeros((8, 8), np.uint8)
    a_truth[2, 1:5] = 255
    a_pred = np.zeros((8, 8), np.uint8)
    a_pred[2, 1:5] = [255, 255, 128, 100]
    a_pred[6, 6] = 255
    b_truth = np.zeros((8, 8), np.uint8)
    b_truth[5, 5] = 255
    b_pred = np.zeros((8, 8), np.uint16)
    b_pred[5, 6] = 65535
    c_truth = np.zeros((8, 8), np.uint8)
    c_truth[0, 0] = 1
    c_pred = c_truth.copy()
    for name, truth, pred in (("a", a_truth, a_pred), ("b", b_truth, b_pred), ("c", c_truth, c_pred)):
        write_png(tmp_path / "masks" / f"{name}.png", truth)
        write_png(tmp_path / "pred" / f"{name}.png", pred)
    return tmp_path


def test_hand_computed_numbers(hand_made):
    out = hand_made / "report.json"
    result = run_evaluate("--pred", hand_made / "pred", "--masks", hand_made / "masks", "--json", out)
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert r["images"] == 3 and r["threshold"] == 0.5 and "fps" not in r
    # strict: tp 4, fp 2, fn 2
    assert r["strict"] == pytest.approx({"precision": 4 / 6, "recall": 4 / 6, "f1": 4 / 6, "iou": 4 / 8})
    # tolerant (d = 2): tp 5, fp 1, truth pixels hit 6 of 6, fn 0
    assert r["tolerant"] == pytest.approx({"precision": 5 / 6, "recall": 1.0, "f1": 10 / 11, "iou": 5 / 6,
                                           "distance": 2})
    # background: tn = (64-4-4+3) + (64-1-1+0) + (64-1-1+1) = 184
    assert r["miou"] == pytest.approx((4 / 8 + 184 / (184 + 2 + 2)) / 2)
    # ODS: at t <= 0.39 the 100/255 pixel counts too: tp 5 fp 2 fn 1 -> F1 10/13 (best, first at 0.01)
    assert r["ods_f1"] == pytest.approx(10 / 13) and r["ods_threshold"] == 0.01
    # OIS: a best 8/9 (tp 4 fp 1 fn 0), b never a tp -> 0, c exact -> 1
    assert r["ois_f1"] == pytest.approx((8 / 9 + 0 + 1) / 3)
    assert "ODS F1 0.7692" in result.stdout
    # centreline (d = 2): 1-px lines are their own skeletons. a: 3 of the 4 predicted skeleton pixels near the
    # truth, 4 of 4 true ones hit; b and c: 1 of 1 each way. P 5/6, R 6/6, F1 10/11
    assert r["centreline"] == pytest.approx({"precision": 5 / 6, "recall": 1.0, "f1": 10 / 11, "distance": 2})
    assert "cl(d=2)" in result.stdout and "centreline F1" in result.stdout


def test_threshold_override(hand_made):
    result = run_evaluate("--pred", hand_made / "pred", "--masks", hand_made / "masks", "--threshold=0.3",
                          "--json", hand_made / "r.json")
    assert result.returncode == 0, result.stderr
    r = json.loads((hand_made / "r.json").read_text())
    assert r["threshold"] == 0.3 and r["strict"]["f1"] == pytest.approx(10 / 13)


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line, line


def test_refuses_unpaired_mismatched_and_unreadable(hand_made):
    pred, masks = hand_made / "pred", hand_made / "masks"
    write_png(pred / "extra.png", np.zeros((8, 8), np.uint8))  # a prediction without a mask
    _one_line_error(run_evaluate("--pred", pred, "--masks", masks), "extra.png", "no mask")
    (pred / "extra.png").unlink()

    write_png(masks / "lonely.png", np.zeros((8, 8), np.uint8))  # a mask without a prediction
    _one_line_error(run_evaluate("--pred", pred, "--masks", masks), "lonely.png", "no prediction")
    (masks / "lonely.png").unlink()

    write_png(pred / "b.png", np.zeros((8, 9), np.uint8))  # wrong size
    _one_line_error(run_evaluate("--pred", pred, "--masks", masks), "b.png", "does not match")

    (pred / "b.png").write_bytes(b"not a png")  # unreadable
    _one_line_error(run_evaluate("--pred", pred, "--masks", masks), "b.png", "cannot read")

    write_png(pred / "b.png", np.zeros((8, 8), np.uint8))
    write_png(masks / "b.png", np.full((8, 8), 7, np.uint8))  # not a binary mask
    _one_line_error(run_evaluate("--pred", pred, "--masks", masks), "b.png", "not binary")

    _one_line_error(run_evaluate("--pred", pred), "--masks")
    _one_line_error(run_evaluate("--pred", hand_made / "nowhere", "--masks", masks), "nowhere", "not found")


def test_subset_list_and_crackforest_mat(hand_made, tmp_path):
    from scipy.io import savemat

    masks = tmp_path / "mat_masks"
    masks.mkdir()
    for stem in ("a", "b", "c"):
        truth = cv2.imread(str(hand_made / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED) > 0
        seg = np.where(truth, 2, 1).astype(np.uint16)
        savemat(masks / f"{stem}.mat", {"groundTruth": {"Segmentation": seg}})  # a 1x1 struct, as CrackForest
    (tmp_path / "val.txt").write_text("Other/images/a.png\nc\n")
    result = run_evaluate("--pred", hand_made / "pred", "--masks", masks, "--subset", tmp_path / "val.txt",
                          "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    # a + c only: strict tp 3 + 1, fp 1, fn 1
    assert r["images"] == 2 and r["strict"]["precision"] == pytest.approx(4 / 5)


def test_subset_ids_pick_one_of_two_samples_with_one_stem(tmp_path):
    # DeepCrack's official test images reuse train stems: a list naming ids picks the one it names; a bare stem,
    # or no list, is ambiguous
    for split, row in (("train", 1), ("test", 6)):
        truth = np.zeros((8, 8), np.uint8)
        truth[row, 1:5] = 255
        write_png(tmp_path / "DeepCrack" / f"{split}_img" / "11289-1.png", np.full((8, 8, 3), 128, np.uint8))
        write_png(tmp_path / "DeepCrack" / f"{split}_lab" / "11289-1.png", truth)
    listing = tmp_path / "test.txt"
    listing.write_text("DeepCrack/test_img/11289-1.png\n")
    (pair,) = dataset_pairs(str(tmp_path), subset=listing)
    assert pair.source == tmp_path / "DeepCrack" / "test_img" / "11289-1.png" and pair.dataset == "DeepCrack"
    assert "test_lab" in str(pair.mask)
    for text in ("11289-1\n", None):
        if text:
            listing.write_text(text)
        with pytest.raises(evaluation.DataError, match="two samples with stem"):
            dataset_pairs(str(tmp_path), subset=listing if text else None)


@pytest.fixture(scope="module")
def tiny_student_file(tmp_path_factory) -> Path:
    """An untrained deployable network saved as .keras with a card whose threshold is 0.3."""
    import model
    from crackseg.card import write_card

    folder = tmp_path_factory.mktemp("weights")
    net = model.deploy_model(model.build_model("student", None, width=2, blocks=0))
    net.save(folder / "tiny.keras")
    write_card(folder / "tiny.keras", {"threshold": 0.3})
    return folder / "tiny.keras"


def test_model_mode_reports_fps_and_uses_the_card_threshold(tiny_student_file, synthetic_data, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synthetic_data / "images", images)
    for extra in sorted(images.iterdir())[4:]:  # four images are enough
        extra.unlink()
    result = run_evaluate("--model", tiny_student_file, "--images", images, "--masks", synthetic_data / "masks",
                          "--subset", _stems(tmp_path, images), "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["images"] == 4 and r["threshold"] == 0.3 and r["fps"] > 0 and r["backend"] == "keras"
    assert set(r) >= {"strict", "tolerant", "ods_f1", "ois_f1", "miou"}
    # without the subset, the masks of the removed images are unpaired
    _one_line_error(run_evaluate("--model", tiny_student_file, "--images", images, "--masks",
                                 synthetic_data / "masks"), "0004.png", "no image")


def _stems(tmp_path: Path, folder: Path) -> Path:
    listing = tmp_path / "subset.txt"
    listing.write_text("".join(f"{p.stem}\n" for p in sorted(folder.iterdir())))
    return listing


# ---------------------------------------------------------------------------------------------- per dataset
@pytest.fixture()
def two_datasets(tmp_path: Path) -> dict:
    """Two fake dataset roots of 8x8 PNG images (dark where the mask is crack, mid grey elsewhere):

    CrackForest (image/ + groundTruth/*.mat, crack where Segmentation == 2): 001 thin crack row 2 cols 1-4 (4 px),
      002 one pixel (5, 5): 5 crack pixels, thin as the real annotations;
    DeepCrack (train_img/ + train_lab/ 0/255 PNG): 11111, a wide 3x4 block rows 2-4 cols 2-5 (12 px).
    ``pred/``: each CrackForest mask exactly (F1 1), an empty map for DeepCrack (F1 0).
    """
    from scipy.io import savemat

    crackforest, deepcrack, pred = tmp_path / "CrackForest", tmp_path / "DeepCrack", tmp_path / "pred"
    truths = {"001": np.zeros((8, 8), bool), "002": np.zeros((8, 8), bool), "11111": np.zeros((8, 8), bool)}
    truths["001"][2, 1:5] = True
    truths["002"][5, 5] = True
    truths["11111"][2:5, 2:6] = True
    for stem, truth in truths.items():
        image = np.where(truth[..., None], 20, 128).astype(np.uint8).repeat(3, axis=2)
        if stem == "11111":
            write_png(deepcrack / "train_img" / f"{stem}.png", image)
            write_png(deepcrack / "train_lab" / f"{stem}.png", truth.astype(np.uint8) * 255)
            write_png(pred / f"{stem}.png", np.zeros((8, 8), np.uint8))
        else:
            write_png(crackforest / "image" / f"{stem}.png", image)
            (crackforest / "groundTruth").mkdir(exist_ok=True)
            savemat(crackforest / "groundTruth" / f"{stem}.mat",
                    {"groundTruth": {"Segmentation": np.where(truth, 2, 1).astype(np.uint16)}})
            write_png(pred / f"{stem}.png", truth.astype(np.uint8) * 255)
    return {"roots": f"{crackforest},{deepcrack}", "parent": tmp_path, "pred": pred}


def _check_by_dataset(r: dict) -> None:
    # overall strict: tp 5 (CrackForest), fp 0, fn 12 (DeepCrack) -> P 1, R 5/17, F1 2*5/(2*5+12) = 10/22
    assert r["images"] == 3 and r["strict"] == pytest.approx({"precision": 1.0, "recall": 5 / 17, "f1": 10 / 22,
                                                              "iou": 5 / 17})
    assert list(r["by_dataset"]) == ["CrackForest", "DeepCrack"]
    crackforest, deepcrack = r["by_dataset"]["CrackForest"], r["by_dataset"]["DeepCrack"]
    assert crackforest["images"] == 2 and crackforest["strict"]["f1"] == 1.0 and crackforest["tolerant"]["f1"] == 1.0
    assert deepcrack["images"] == 1 and deepcrack["strict"]["f1"] == 0.0 and deepcrack["tolerant"]["f1"] == 0.0
    assert set(crackforest) == set(deepcrack) == set(r) - {"by_dataset", "model", "backend"}


@pytest.mark.parametrize("layout", ["two roots", "one parent root"])
def test_predictions_reported_per_dataset(two_datasets, tmp_path, layout):
    data = two_datasets["roots"] if layout == "two roots" else two_datasets["parent"]
    out = tmp_path / "r.json"
    result = run_evaluate("--pred", two_datasets["pred"], "--data", data, "--json", out)
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    _check_by_dataset(r)
    assert "fps" not in r and "CrackForest:\nimages 2" in result.stdout and "DeepCrack:\nimages 1" in result.stdout

    # a subset of one dataset (ids as in datasets/splits) is one report, without by_dataset
    (tmp_path / "val.txt").write_text("CrackForest/image/001.png\n")
    result = run_evaluate("--pred", two_datasets["pred"], "--data", data, "--subset", tmp_path / "val.txt",
                          "--json", out)
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert r["images"] == 1 and r["strict"]["f1"] == 1.0 and "by_dataset" not in r


def test_data_refusals(two_datasets):
    pred = two_datasets["pred"]
    (pred / "11111.png").unlink()  # a DeepCrack image without a prediction
    _one_line_error(run_evaluate("--pred", pred, "--data", two_datasets["roots"]), "11111.png", "no prediction")
    _one_line_error(run_evaluate("--pred", pred, "--data", two_datasets["roots"], "--masks", pred),
                    "--data replaces")
    (two_datasets["parent"] / "DeepCrack" / "train_img" / "001.png").write_bytes(b"")  # a stem in both datasets
    (two_datasets["parent"] / "DeepCrack" / "train_lab" / "001.png").write_bytes(b"")
    _one_line_error(run_evaluate("--pred", pred, "--data", two_datasets["parent"]), "001.png", "two samples")


class DarkPixelEngine(Engine):
    """Stand-in for a model: crack where the image is dark, so its masks are the fixture's masks exactly."""

    backend = "fake"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return (batch.mean(axis=-1) < 0).astype(np.float32)  # prepared pixels are in [-1, 1]


def test_engine_reported_per_dataset(two_datasets):
    # DeepCrack's image turned mid grey: the engine finds nothing there, as the empty prediction above
    deepcrack_image = two_datasets["parent"] / "DeepCrack" / "train_img" / "11111.png"
    write_png(deepcrack_image, np.full((8, 8, 3), 128, np.uint8))
    pairs = dataset_pairs(two_datasets["roots"])
    assert [(p.stem, p.dataset) for p in pairs] == [("001", "CrackForest"), ("002", "CrackForest"),
                                                    ("11111", "DeepCrack")]
    seen = []
    r = evaluate_engine(DarkPixelEngine("dark", 0.5), read_labelled(pairs), by_dataset=True,
                        on_prediction=seen.append)
    _check_by_dataset(r)
    assert len(seen) == 3 and r["fps"] > 0 and r["by_dataset"]["CrackForest"]["fps"] > 0


class BlindEngine(Engine):
    """Stand-in for a model that finds no crack anywhere."""

    backend = "fake"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros(batch.shape[:-1], np.float32)


def test_compare_models_pairs_the_same_images_per_dataset(two_datasets, monkeypatch):
    # DeepCrack's image turned mid grey: the dark-pixel engine (B) finds CrackForest's cracks exactly and misses
    # DeepCrack's 12 pixels, as the blind engine (A) misses everything. B - A: overall 10/22 (B's F1, as in
    # _check_by_dataset), CrackForest 1 on both resamplable images, DeepCrack 0 (one image, both F1 0).
    write_png(two_datasets["parent"] / "DeepCrack" / "train_img" / "11111.png", np.full((8, 8, 3), 128, np.uint8))
    engines = {"blind": BlindEngine("blind", 0.5), "dark": DarkPixelEngine("dark", 0.4)}
    monkeypatch.setattr(evaluation, "open_engine", lambda model, *args: engines[str(model)])
    c = compare_models("blind", "dark", dataset_pairs(two_datasets["roots"]))
    assert c["a"]["strict"]["f1"] == 0.0 and c["b"]["threshold"] == 0.4 and c["b"]["model"] == "dark"
    _check_by_dataset({k: v for k, v in c["b"].items() if k not in ("precision", "precision_choice", "described",
                                                                    "val_score", "val_score_threshold")})
    d = c["difference"]
    assert d["images"] == 3 and d["strict_f1"]["difference"] == pytest.approx(10 / 22)
    assert d["strict_f1"]["interval"][0] == 0.0 and d["strict_f1"]["interval"][1] == 1.0  # resample DeepCrack only
    cf, dc = d["by_dataset"]["CrackForest"], d["by_dataset"]["DeepCrack"]
    assert cf["strict_f1"] == {"difference": 1.0, "interval": [1.0, 1.0], "b_better": 1.0}
    assert dc["strict_f1"] == {"difference": 0.0, "interval": [0.0, 0.0], "b_better": 0.0}
    # val_score, training's balanced rule: A finds nothing at any threshold (0, 0); B: CrackForest 1, DeepCrack 0
    assert c["a"]["val_score"] == 0.0 and c["b"]["val_score"] == pytest.approx(0.5)
    assert cf["centreline_f1"]["difference"] == 1.0 and dc["centreline_f1"]["difference"] == 0.0
    table = format_comparison(c)
    assert "balanced val_score (mean over datasets of strict F1 at one threshold): A 0.0000" in table
    assert "centreline B - A [interval]" in table
    assert "B - A, paired over the same images (95% bootstrap interval, 1000 resamples)" in table
    assert "CrackForest         2    0.0000   1.0000  +1.0000 [+1.0000, +1.0000]" in table


def test_compare_on_the_command_line(tiny_student_file, synthetic_data, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synthetic_data / "images", images)
    for extra in sorted(images.iterdir())[3:]:
        extra.unlink()
    other = tmp_path / "other.keras"
    shutil.copyfile(tiny_student_file, other)
    from crackseg.card import write_card

    write_card(other, {"threshold": 0.6})  # the same network at another threshold: another model
    result = run_evaluate("--model", tiny_student_file, "--compare", other, "--images", images, "--masks",
                          synthetic_data / "masks", "--subset", _stems(tmp_path, images), "--json", tmp_path / "c.json")
    assert result.returncode == 0, result.stderr
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["a"]["threshold"] == 0.3 and c["b"]["threshold"] == 0.6 and c["a"]["images"] == c["b"]["images"] == 3
    d = c["difference"]["strict_f1"]
    assert d["difference"] == pytest.approx(c["b"]["strict"]["f1"] - c["a"]["strict"]["f1"])
    assert d["interval"][0] <= d["difference"] <= d["interval"][1]
    assert "model A: " in result.stdout and "model B: " in result.stdout and "B - A, paired" in result.stdout
    _one_line_error(run_evaluate("--compare", other, "--images", images, "--masks", synthetic_data / "masks"),
                    "--compare needs --model")
    _one_line_error(run_evaluate("--model", tiny_student_file, "--compare", tmp_path / "missing.keras", "--images",
                                 images, "--masks", synthetic_data / "masks", "--subset", _stems(tmp_path, images)),
                    "missing.keras")
