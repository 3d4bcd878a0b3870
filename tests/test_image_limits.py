"""Issue 29, rows 1, 2 and 5 and the CSV cells: a pixel bomb beside good photos (skipped undecoded, one line, the run
goes on), a 4000 x 1 strip with --max_side, two files with one stem (two outputs, nothing replaced), and CSV cells a
spreadsheet would run as formulas."""
from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from crackseg.data import (MAX_PIXELS, DataError, ImageTooLargeError, image_size, load_training_data, read_image,
                           read_mask)
from crackseg.measure import MeasureSettings
from crackseg.pipeline import shrink
from crackseg.report import SurveyReport, csv_cell, mask_frames, predict_mask
from crackseg.sources import FrameSource, OverlaySaver, SourceError, frame_names

BOMB_SIDE = 30000
SHIPPED = REPO / "weights" / "student.onnx"
# Address space of the scripts below: well over what a survey of small photos takes (about 1.3 GB with OpenVINO),
# well under what decoding the bomb would reserve (2.7 GB for its BGR pixels alone, then as much for the RGB copy).
ADDRESS_SPACE = 3 << 30
# Runs a script under that cap and prints its peak RSS last (the cap is set in the child only).
CAPPED = ("import resource, subprocess, sys\n"
          "cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))\n"
          "rc = subprocess.run([sys.executable, *sys.argv[2:]], preexec_fn=cap).returncode\n"
          "print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', flush=True)\n"
          "sys.exit(rc)\n")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid side x side grey PNG (every row filter 0, all black): 875 KB on disk, 0.9 GB of pixels."""
    assert side % 1000 == 0
    z = zlib.compressobj(9)
    block = b"\0" * ((side + 1) * 1000)  # 1000 rows: a filter byte and side black pixels each
    idat = b"".join([z.compress(block) for _ in range(side // 1000)] + [z.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return write_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


@pytest.fixture
def no_bomb_decoding(monkeypatch, bomb):
    """cv2.imdecode that refuses the bomb's bytes (so code that would decode it fails here instead of taking
    gigabytes); returns the sizes of everything it was asked to decode."""
    real, asked = cv2.imdecode, []
    bomb_bytes = bomb.stat().st_size

    def imdecode(buf, flags):
        asked.append(len(buf))
        if len(buf) == bomb_bytes:
            raise AssertionError("the pixel bomb reached cv2.imdecode")
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    return asked


def photo(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A grey pavement-like BGR photo with one dark horizontal crack."""
    image = np.random.default_rng(seed).normal(130, 8, (h, w, 3)).clip(0, 255).astype(np.uint8)
    image[h // 2 - 2:h // 2 + 2, 10:w - 10] = 40
    return image


def run_capped(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """A script run under ADDRESS_SPACE; (its process, its peak RSS in bytes)."""
    proc = subprocess.run([sys.executable, "-c", CAPPED, str(ADDRESS_SPACE), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    peak = int(proc.stdout.strip().splitlines()[-1].split("=")[1]) * 1024
    return proc, peak


def skip_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("skip:")]


# ---------------------------------------------------------------------------------------------- headers
@pytest.mark.parametrize("ext, params", [
    (".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []), (".tif", []),
    (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 1]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]), (".gif", []),
])
def test_header_size_matches_what_opencv_decodes(tmp_path, ext, params):
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), photo(1, 37, 53), params)
    assert image_size(path) == (53, 37)
    assert read_image(path).shape == (37, 53, 3)


def test_jpeg_size_skips_an_exif_thumbnail_and_bad_headers_name_the_file(tmp_path):
    ok, jpeg = cv2.imencode(".jpg", photo(2, 40, 60))
    jpeg = jpeg.tobytes()
    # an APP1 segment holding a thumbnail's own frame header (SOF0 of 9000 x 9000) before the real one
    fake = b"Exif\0\0" + b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 9000, 9000) + b"\0" * 10
    path = tmp_path / "exif.jpg"
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(fake) + 2) + fake + jpeg[2:])
    assert image_size(path) == (60, 40) and read_image(path).shape == (40, 60, 3)
    for name, data in [("cut.jpg", jpeg[:20]), ("cut.png", b"\x89PNG\r\n\x1a\n\0\0"), ("text.png", b"not a png")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}: cannot read image"):
            read_image(tmp_path / name)


# ---------------------------------------------------------------------------------------------- row 1: the bomb
def test_the_bomb_is_refused_from_its_header_before_any_pixel_is_decoded(bomb, no_bomb_decoding):
    assert bomb.stat().st_size < 1 << 20 and image_size(bomb) == (BOMB_SIDE, BOMB_SIDE)
    for read in (read_image, read_mask):
        with pytest.raises(ImageTooLargeError, match=r"bomb\.png: \w+ is 30000x30000 \(900\.0 MP\), over the"):
            read(bomb)
    assert no_bomb_decoding == []
    assert BOMB_SIDE ** 2 > MAX_PIXELS >= 9248 * 6936  # a 64 MP phone photo still reads


def test_folder_source_skips_the_bomb_and_any_failing_file_with_one_line_each(tmp_path, bomb, no_bomb_decoding,
                                                                              monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.jpg"), photo(i))
    (folder / "2_bomb.png").write_bytes(bomb.read_bytes())
    (folder / "3_broken.png").write_bytes(b"not a png")
    # a failure of another kind than DataError (the decoder running out of memory) on one file
    real = cv2.imdecode
    memory = np.fromfile(folder / "1.jpg", np.uint8)

    def imdecode(buf, flags):
        if np.array_equal(buf, memory):
            raise MemoryError()
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    lines: list[str] = []
    source = FrameSource(str(folder), on_skip=lines.append)
    names = [name for name, image in source.frames()]
    assert names == ["0", "2", "3"] and source.skipped == 3
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert "1.jpg: MemoryError" in lines[0]
    assert "2_bomb.png: image is 30000x30000 (900.0 MP)" in lines[1] and "3_broken.png: cannot read" in lines[2]


def test_training_readers_leave_the_bomb_out_with_one_line(tmp_path, bomb, no_bomb_decoding, capsys):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(4):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), photo(i, 32, 48))
        cv2.imwrite(str(tmp_path / "masks" / f"{i}.png"), np.zeros((32, 48), np.uint8))
    (tmp_path / "images" / "9.png").write_bytes(bomb.read_bytes())
    cv2.imwrite(str(tmp_path / "masks" / "9.png"), np.zeros((32, 48), np.uint8))
    data = load_training_data(str(tmp_path), None, val_fraction=0.25, workers=1)
    assert len(data["train"][0]) + len(data["val"][0]) == 4
    assert "9.png" not in {s.image.name for part in data["splits"].values() for s in part}
    skips = skip_lines(capsys.readouterr().out)
    assert len(skips) == 1 and "9.png: image is 30000x30000" in skips[0]
    assert len(no_bomb_decoding) == 8 and bomb.stat().st_size not in no_bomb_decoding  # 4 images, 4 masks


def test_report_from_masks_finishes_beside_the_bomb_in_little_memory(tmp_path, bomb):
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in (1, 3):
        mask = np.zeros((96, 128), np.uint8)
        mask[46:50, 10:118] = 255
        cv2.imwrite(str(masks / f"000{i}.png"), mask)
    (masks / "0002_bomb.png").write_bytes(bomb.read_bytes())
    (masks / "0004_broken.png").write_bytes(b"not a png")
    out = tmp_path / "report"
    proc, peak = run_capped("report.py", f"--masks={masks}", f"--out={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skips = skip_lines(proc.stdout)
    assert len(skips) == 2 and "0002_bomb.png: mask is 30000x30000" in skips[0] and "0004_broken.png" in skips[1]
    assert "2 images" in proc.stdout and "2 skipped" in proc.stdout
    with open(out / "images.csv", newline="") as f:
        assert [row["image"] for row in csv.DictReader(f)] == ["0001", "0003"]
    assert len(json.loads((out / "report.json").read_text())["skipped"]) == 2
    assert peak < 1 << 30, f"peak RSS {peak / 2 ** 20:.0f} MiB"


def shipped_model() -> Path:
    if not SHIPPED.is_file():
        pytest.skip("no shipped weights/student.onnx in this checkout")
    return SHIPPED


@pytest.fixture
def survey_folder(tmp_path, bomb) -> Path:
    """Good photos (two of them sharing the stem ``a``), the bomb, a broken file and a 4000 x 1 strip."""
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), photo(1))
    cv2.imwrite(str(folder / "a.png"), photo(2))
    cv2.imwrite(str(folder / "b.jpg"), photo(3))
    (folder / "c_bomb.png").write_bytes(bomb.read_bytes())
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8 not really")
    cv2.imwrite(str(folder / "e_strip.png"), np.random.default_rng(4).integers(0, 255, (1, 4000, 3), np.uint8))
    return folder


def test_report_from_photos_reports_every_good_photo_once(tmp_path, survey_folder):
    """Rows 1, 2 and 5 through report.py on the shipped model: the bomb and the broken file are one line each,
    the strip is inferred at 1024 x 1 and reported at 4000 x 1, a.jpg and a.png are two rows."""
    model = shipped_model()
    out = tmp_path / "report"
    proc, peak = run_capped("report.py", f"--source={survey_folder}", f"--model={model}", "--max_side=1024",
                            f"--out={out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    skips = skip_lines(proc.stdout)
    assert len(skips) == 2 and "c_bomb.png: image is 30000x30000" in skips[0] and "d_broken.jpg" in skips[1]
    assert "4 images" in proc.stdout and "2 skipped" in proc.stdout
    with open(out / "images.csv", newline="") as f:
        rows = {row["image"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["a.jpg", "a.png", "b", "e_strip"]
    assert (rows["e_strip"]["width"], rows["e_strip"]["height"]) == ("4000", "1")
    assert peak < 1 << 30, f"peak RSS {peak / 2 ** 20:.0f} MiB"


def test_camera_on_a_folder_saves_one_overlay_per_good_photo_and_keeps_the_users_files(tmp_path, survey_folder):
    model = shipped_model()
    saved = tmp_path / "overlays"
    saved.mkdir()
    (saved / "b.jpg").write_bytes(b"the user's own file")
    proc, peak = run_capped("camera.py", f"--source={survey_folder}", f"--model={model}", "--max_side=1024",
                            "--headless", f"--save={saved}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    skips = skip_lines(proc.stdout)
    assert len(skips) == 2 and "c_bomb.png: image is 30000x30000" in skips[0] and "d_broken.jpg" in skips[1]
    assert "done: 4 frames" in proc.stdout and "2 skipped" in proc.stdout
    assert sorted(p.name for p in saved.iterdir()) == ["a.jpg.jpg", "a.png.jpg", "b-1.jpg", "b.jpg", "e_strip.jpg"]
    assert (saved / "b.jpg").read_bytes() == b"the user's own file"
    assert cv2.imread(str(saved / "e_strip.jpg")).shape[:2] == (1, 1024)
    assert peak < 1 << 30, f"peak RSS {peak / 2 ** 20:.0f} MiB"


# ---------------------------------------------------------------------------------------------- row 2: 4000 x 1
class MeanEngine:
    """Stands in for a model: crack probability 0.9 everywhere, at whatever size it is given."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        assert min(image.shape[:2]) >= 1
        return np.full(image.shape[:2], 0.9, np.float32)

    def mask(self, prob: np.ndarray) -> np.ndarray:
        return prob > 0.5


@pytest.mark.parametrize("h, w", [(1, 4000), (4000, 1), (2, 5000)])
def test_max_side_keeps_every_side_at_least_one_pixel(h, w):
    strip = np.zeros((h, w, 3), np.uint8)
    small = shrink(strip, 1024)
    assert max(small.shape[:2]) == 1024 and min(small.shape[:2]) == 1
    mask = predict_mask(MeanEngine(), strip, max_side=1024)
    assert mask.shape == (h, w) and mask.all()


# ---------------------------------------------------------------------------------------------- row 5: one stem
def test_frame_names_are_distinct_and_stems_where_they_are_unique():
    paths = [Path(n) for n in ("a.jpg", "a.png", "a.png.jpg", "b.jpg", "c.tif")]
    assert frame_names(paths) == ["a.jpg", "a.png", "a.png~2", "b", "c"]
    assert frame_names([Path("x/0001.png"), Path("x/0002.png")]) == ["0001", "0002"]


def test_two_files_with_one_stem_are_two_frames_and_two_rows(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("a.jpg", "a.png", "b.png")):
        cv2.imwrite(str(folder / name), photo(i))
    source = FrameSource(str(folder))
    assert [name for name, _ in source.frames()] == ["a.jpg", "a.png", "b"]
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a.png", "a.bmp", "b.png"):
        cv2.imwrite(str(masks / name), np.zeros((96, 128), np.uint8))
    count, frames = mask_frames(masks)
    assert count == 3 and [name for name, _, _ in frames] == ["a.bmp", "a.png", "b"]


def test_overlay_saver_never_replaces_a_file(tmp_path):
    out = tmp_path / "overlays"
    out.mkdir()
    (out / "0001.jpg").write_bytes(b"mine")
    saver = OverlaySaver(str(out), 10)
    image = photo(5)
    first, second = saver.write("0001", image), saver.write("0001", image)
    assert (first.name, second.name) == ("0001-1.jpg", "0001-2.jpg")
    assert (out / "0001.jpg").read_bytes() == b"mine" and cv2.imread(str(first)).shape == image.shape
    assert sorted(p.name for p in out.iterdir()) == ["0001-1.jpg", "0001-2.jpg", "0001.jpg"]  # no temporary left
    video = tmp_path / "drive.avi"
    video.write_bytes(b"my video")
    with pytest.raises(SourceError, match="drive.avi: exists"):
        OverlaySaver(str(video), 10)
    with pytest.raises(SourceError, match="not a folder"):
        OverlaySaver(str(out / "0001.jpg"), 10)
    assert video.read_bytes() == b"my video"


# ---------------------------------------------------------------------------------------------- CSV cells
def test_csv_cells_that_start_a_formula_are_escaped(tmp_path):
    names = ['=HYPERLINK("http://example.invalid","x")', "+1", "-2", "@SUM(A1)", "plain"]
    report = SurveyReport(tmp_path / "r", MeasureSettings())
    mask = np.zeros((40, 60), bool)
    mask[18:21, 5:55] = True
    for name in names:
        report.add(name, None, mask)
    paths = report.write()
    for table in ("cracks.csv", "images.csv"):
        with open(paths[table], newline="") as f:
            rows = list(csv.DictReader(f))
        assert [row["image"] for row in rows] == ["'" + n for n in names[:4]] + ["plain"], table
        for row in rows:  # numbers are never escaped
            float(row["length_px"])
    assert json.loads(paths["report.json"].read_text())["images"][0]["image"] == names[0]  # JSON keeps the name
    assert csv_cell(-2.5) == -2.5 and csv_cell("-2.5") == "'-2.5" and csv_cell("a=b") == "a=b"
