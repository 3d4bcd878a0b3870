"""Make docs/report.png: a report.py survey of synthetic pavement photos, opened in headless Chromium.

    python scripts/report_screenshot.py            # -> demo_out/report_screenshot/{photos,report}/ + docs/report.png

The photos come from datasets/synthetic.py; the masks from the shipped weights/student.onnx (or, without it, the
synthetic ground truth through report.py --masks). Needs Chromium (/usr/bin/chromium) and selenium (the browser
test's). The page is captured at 1280 px wide, scaled to 960 px and written as a PNG under 300 KB.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crackseg.io import atomic_write_bytes  # noqa: E402
from datasets.synthetic import sample  # noqa: E402

OUT = ROOT / "demo_out" / "report_screenshot"
SHOT = ROOT / "docs" / "report.png"
IMAGES, SIZE, SEED, MM_PER_PX = 6, (256, 320), 11, 2.0
WINDOW, WIDTH, MAX_BYTES = (1280, 1500), 960, 300_000


def make_photos() -> tuple[Path, Path]:
    photos, masks = OUT / "photos", OUT / "masks"
    photos.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(SEED)
    for i in range(IMAGES):
        image, mask = sample(rng, *SIZE)
        cv2.imwrite(str(photos / f"road_{i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(masks / f"road_{i:02d}.png"), mask.astype(np.uint8) * 255)
    return photos, masks


def screenshot(page: Path) -> bytes:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = next(p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists())
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(arg)
    driver_path = shutil.which("chromedriver")  # the system driver: no download attempt by selenium's manager
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path)) \
        if driver_path else webdriver.Chrome(options=options)
    try:
        driver.get(page.as_uri())
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (WIDTH, round(image.shape[0] * WIDTH / image.shape[1])), interpolation=cv2.INTER_AREA)
    for colours in (256, 128, 64):  # fewer grey levels until it fits (the page is mostly flat colour)
        step = 256 // colours
        small = (image // step) * step + step // 2 if colours < 256 else image
        ok, buf = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if ok and buf.size <= MAX_BYTES:
            return buf.tobytes()
    raise SystemExit(f"error: the screenshot does not fit in {MAX_BYTES} bytes")


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)  # this script's own folder from an earlier run
    photos, masks = make_photos()
    model = ROOT / "weights" / "student.onnx"
    source = [f"--source={photos}", f"--model={model}"] if model.is_file() else [f"--masks={masks}",
                                                                                  f"--images={photos}"]
    report = OUT / "report"
    cmd = [sys.executable, "report.py", *source, f"--mm_per_px={MM_PER_PX}", f"--out={report}",
           "--title=Crack survey (synthetic pavement, report.py)"]
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    atomic_write_bytes(SHOT, screenshot(report / "index.html"))
    print(f"wrote {SHOT.relative_to(ROOT)} ({SHOT.stat().st_size // 1024} KB) from {report / 'index.html'}")


if __name__ == "__main__":
    main()
