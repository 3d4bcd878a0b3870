"""crackseg.report + report.py: a survey of drawn cracks of known size, the files it writes, refusals, and the page in
headless Chromium (when the browser test's chromium + selenium are installed)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from crackseg.measure import MeasureSettings
from crackseg.report import GENERATOR, ReportError, SurveyReport, check_out_dir, mask_frames, severity_colours
from test_measure import polyline_length, segment, tube

SHAPE = (240, 320)
MM_PER_PX = 1.5
# image -> drawn cracks: (polylines, width px, expected type, expected LTPP severity at 1.5 mm / px); the widths keep
# clear of the table's edges by more than the 1 px the width may be off
SURVEY = {
    "0001_longitudinal": [([[(160, 20), (160, 220)]], 3, "longitudinal", "low")],                       # 4.5 mm
    "0002_transverse": [([[(20, 120), (300, 120)]], 5, "transverse", "moderate")],                     # 7.5 mm
    "0003_two": [([segment(45, 180, (100, 120))], 3, "diagonal", "low"),
                 ([[(250, 10), (262, 110), (250, 230)]], 15, "longitudinal", "high")],                 # 22.5 mm
    "0004_clean": [],
    "0005_block": [([[(x, 20), (x, 220)] for x in (60, 130, 200, 270)]
                    + [[(40, y), (290, y)] for y in (40, 110, 180)], 3, "network", "low")],
}


def draw(cracks) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    for polylines, width, _, _ in cracks:
        mask |= tube(SHAPE, polylines, width)
    return mask


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """A folder of masks (0/255 PNG) and matching grey 'photos' with the cracks darker."""
    root = tmp_path_factory.mktemp("survey")
    (root / "masks").mkdir()
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for name, cracks in SURVEY.items():
        mask = draw(cracks)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
        photo = rng.normal(130, 8, SHAPE + (3,)).clip(0, 255).astype(np.uint8)
        photo[mask] = 50
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), photo)
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "report.py", *args], cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def made(survey, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("made") / "report"
    proc = run_report(f"--masks={survey / 'masks'}", f"--images={survey / 'images'}", f"--mm_per_px={MM_PER_PX}",
                      f"--out={out}", "--title=Drawn survey")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "5 images, 5 cracks" in proc.stdout
    return out


def test_csv_rows_match_the_drawn_cracks(made):
    rows = read_csv(made / "cracks.csv")
    assert list(rows[0]) == ["image", "crack_id", "type", "severity", "length_mm", "mean_width_mm", "max_width_mm",
                             "p90_width_mm", "area_mm2", "orientation_deg", "x", "y", "w", "h"]
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    assert set(by_image) == {name for name, cracks in SURVEY.items() if cracks}
    for name, cracks in SURVEY.items():
        got = sorted(by_image.get(name, []), key=lambda r: -float(r["length_mm"]))
        want = sorted(cracks, key=lambda c: -sum(polyline_length(p) for p in c[0]))
        assert len(got) == len(want), name
        for row, (polylines, width, kind, severity) in zip(got, want):
            length = sum(polyline_length(p) for p in polylines) * MM_PER_PX
            assert float(row["length_mm"]) == pytest.approx(length, rel=0.03), name
            assert float(row["mean_width_mm"]) == pytest.approx(width * MM_PER_PX, abs=1.0 * MM_PER_PX), name
            assert row["type"] == kind and row["severity"] == severity, name
            mask = draw([(polylines, width, kind, severity)])
            ys, xs = np.nonzero(mask)
            assert (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])) == (
                xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert float(row["area_mm2"]) == pytest.approx(mask.sum() * MM_PER_PX ** 2, rel=0.001)
        assert [int(r["crack_id"]) for r in by_image.get(name, [])] == list(range(1, len(want) + 1))


def test_images_csv_and_json_totals(made):
    images = {r["image"]: r for r in read_csv(made / "images.csv")}
    assert list(images) == sorted(SURVEY)
    assert images["0004_clean"]["cracks"] == "0" and images["0004_clean"]["worst_severity"] == ""
    two = images["0003_two"]
    assert (two["cracks"], two["diagonal_count"], two["longitudinal_count"], two["high_count"]) == ("2", "1", "1", "1")
    assert two["worst_severity"] == "high"
    assert float(two["length_mm"]) == pytest.approx(float(two["diagonal_length_mm"])
                                                    + float(two["longitudinal_length_mm"]), abs=0.02)
    assert float(two["crack_ratio"]) == pytest.approx(draw(SURVEY["0003_two"]).mean(), abs=1e-6)
    doc = json.loads((made / "report.json").read_text())
    assert doc["generator"] == GENERATOR and doc["unit"] == "mm"
    assert doc["settings"]["mm_per_px"] == MM_PER_PX and doc["settings"]["severity_table"] == "ltpp"
    assert doc["settings"]["title"] == "Drawn survey"
    totals = doc["totals"]
    assert totals["images"] == 5 and totals["images_with_cracks"] == 4 and totals["cracks"] == 5
    assert totals["by_type_and_severity"]["network"]["low"]["count"] == 1
    assert totals["by_type_and_severity"]["longitudinal"]["high"]["count"] == 1
    assert sum(len(i["cracks"]) for i in doc["images"]) == 5


def test_html_is_self_contained_with_summary_thumbnails_and_units(made):
    page = (made / "index.html").read_text()
    assert page.count('<img class="thumb"') == len(SURVEY)
    assert page.count("data:image/jpeg;base64,") == len(SURVEY)
    assert "<script" not in page and "<link" not in page and 'src="http' not in page and "url(" not in page
    assert 'id="summary"' in page and "Units: millimetres (1.5 mm per pixel)" in page
    assert page.count("<svg") == 2 and "mean width per crack" in page
    for name in SURVEY:
        assert f'id="img-{name}"' in page


def test_pixels_when_no_scale_said_in_every_output(survey, tmp_path):
    out = tmp_path / "px"
    proc = run_report(f"--masks={survey / 'masks'}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert "(pixels: no --mm_per_px)" in proc.stdout
    header = (out / "cracks.csv").read_text().splitlines()[0]
    assert "length_px" in header and "area_px2" in header and "_mm" not in header
    assert "length_px" in (out / "images.csv").read_text().splitlines()[0]
    doc = json.loads((out / "report.json").read_text())
    assert doc["unit"] == "px" and "pixels" in doc["unit_note"]
    assert {c["severity"] for i in doc["images"] for c in i["cracks"]} == {"n/a"}
    assert "Units: pixels" in (out / "index.html").read_text()


def test_refuses_to_overwrite_a_users_files(survey, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    proc = run_report(f"--masks={survey / 'masks'}", f"--out={out}")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "notes.txt" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # a file named like a report file, but not written by report.py, is not ours either
    other = tmp_path / "other"
    other.mkdir()
    (other / "cracks.csv").write_text("someone else's table")
    with pytest.raises(ReportError, match="no report.json"):
        check_out_dir(other)
    with pytest.raises(ReportError, match="not a folder"):
        check_out_dir(other / "cracks.csv")


def test_an_earlier_report_is_replaced(survey, tmp_path):
    out = tmp_path / "again"
    for severity in ("ltpp", "astm"):
        proc = run_report(f"--masks={survey / 'masks'}", "--mm_per_px=1.5", f"--severity={severity}", f"--out={out}")
        assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "report.json").read_text())["settings"]["severity_table"] == "astm"
    assert sorted(p.name for p in out.iterdir()) == sorted(["cracks.csv", "images.csv", "report.json", "index.html"])


@pytest.mark.parametrize("args, words", [
    ([], "--source"),
    (["--masks=masks", "--source=x"], "one of them"),
    (["--source={images}", "--images={images}"], "--images goes with --masks"),
    (["--source=/nonexistent/folder"], "not a camera index"),
    (["--masks=/nonexistent/masks"], "not a folder"),
    (["--masks={masks}", "--severity=iso"], "severity"),
    (["--masks={masks}", "--mm_per_px=-1"], "mm_per_px"),
    (["--masks={masks}", "--travel=up"], "travel"),
    (["--source={images}", "--model=weights/none.onnx"], "not found"),
])
def test_bad_input_is_one_line(survey, tmp_path, args, words):
    args = [a.format(masks=survey / "masks", images=survey / "images") for a in args]
    proc = run_report(*args, f"--out={tmp_path / 'r'}")
    assert proc.returncode in (1, 2)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], proc.stderr
    assert not (tmp_path / "r").exists()


def test_library_survey_without_photos_and_colours(survey, tmp_path):
    count, frames = mask_frames(survey / "masks", every=2)
    assert count == 3
    report = SurveyReport(tmp_path / "lib", MeasureSettings(mm_per_px=1.0, severity="2,4"), {"model": "drawn"})
    for name, image, mask in frames:
        assert image is None
        report.add(name, image, mask)
    assert [r.name for r in report.records] == ["0001_longitudinal", "0003_two", "0005_block"]
    paths = report.write()
    assert all(p.is_file() for p in paths.values())
    assert {r["severity"] for r in report.crack_rows()} <= {"low", "moderate", "high"}
    colours = severity_colours(("low", "moderate", "high"))
    assert colours["low"][1] > colours["low"][0] and colours["high"][0] > colours["high"][1]   # green .. red
    with pytest.raises(ReportError, match="differ in size"):
        report.add("bad", np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10), bool))


def test_video_with_the_shipped_model_every_nth_frame(tmp_path):
    """report.py --source=VIDEO --every=N on the shipped model (three tiny frames)."""
    model = REPO / "weights" / "student.onnx"
    if not model.is_file():
        pytest.skip("no shipped weights/student.onnx in this checkout")
    from datasets.synthetic import sample

    rng = np.random.default_rng(5)
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for _ in range(6):
        writer.write(cv2.cvtColor(sample(rng, 96, 128)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "video_report"
    proc = run_report(f"--source={video}", f"--model={model}", "--every=2", "--mm_per_px=1.5", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    names = [r["image"] for r in read_csv(out / "images.csv")]
    assert names == ["000000", "000002", "000004"]
    doc = json.loads((out / "report.json").read_text())
    assert doc["settings"]["model"] == str(model) and 0 < doc["settings"]["threshold"] < 1
    assert doc["settings"]["every"] == 2
    assert "auto: " in doc["settings"]["model_description"]  # --precision=auto by default, with its reason


# ---------------------------------------------------------------------------------------------- browser
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


def _selenium():
    try:
        import selenium  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.skipif(CHROMIUM is None or not _selenium(),
                    reason="headless Chromium (/usr/bin/chromium) and selenium are not installed here")
def test_page_in_headless_chromium(made, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.common.by import By

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(arg)
    driver_path = shutil.which("chromedriver")
    service = webdriver.ChromeService(executable_path=driver_path) if driver_path else None
    driver = webdriver.Chrome(options=options, service=service) if service else webdriver.Chrome(options=options)
    try:
        driver.get((made / "index.html").as_uri())
        summary = driver.find_element(By.CSS_SELECTOR, "table.summary")
        assert "network" in summary.text and "longitudinal" in summary.text
        thumbs = driver.find_elements(By.CSS_SELECTOR, "img.thumb")
        assert len(thumbs) == len(SURVEY)
        # every thumbnail decoded (an embedded image that failed would have no natural size)
        assert all(driver.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        image = cv2.imread(str(shot))
        assert image is not None and image.shape[0] > 400 and image.std() > 10  # not a blank page
    finally:
        driver.quit()


def test_report_side_never_imports_tensorflow():
    code = ("import sys; import crackseg.report, crackseg.measure, crackseg.pipeline; "
            "bad = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
