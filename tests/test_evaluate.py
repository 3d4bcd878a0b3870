"""evaluate.py on hand-made predictions (numbers computed by hand below), its refusals, and the --model path."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

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
