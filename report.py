"""report.py: a crack survey as a record inspectors can open -- every crack measured, typed and graded.

    python report.py --source=photos/ --model=weights/student.onnx --mm_per_px=0.8 --out=report/
    python report.py --source=drive.mp4 --every=15 --mm_per_px=0.8 --out=report/     # every 15th video frame
    python report.py --masks=masks/ --images=photos/ --mm_per_px=0.8 --out=report/   # masks made elsewhere

Writes cracks.csv (one row per crack: type, severity, length, mean / max / p90 width, area, orientation, bounding
box in pixels), images.csv (per image: counts and lengths by type and severity, crack ratio), report.json (the same
plus the settings) and index.html (one self-contained page: summary, histograms, each image's thumbnail with its
cracks outlined and numbered in their severity colour). Lengths and widths are in millimetres with --mm_per_px,
in pixels without it (every file says which); docs/measure.md says how to find --mm_per_px and how each number is
measured. --out must be new, empty or an earlier report: other files there are never overwritten.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

source = ""                       # folder of images or a video file to run the model on
masks = ""                        # or: a folder of crack masks made elsewhere (PNG 0/255 or 0/1, CrackForest .mat)
images = ""                       # with --masks: the photos (same stems) for the thumbnails; "": the masks are drawn
model = "weights/student.onnx"    # .onnx | .engine | .keras | preset name (with --source)
backend = "auto"                  # auto | openvino | onnx | tensorrt | keras
precision = "auto"                # auto (the fastest accurate one for this CPU) | fp32 | bf16 | int8 (see camera.py)
threshold = None                  # None: from the model card
max_side = 0                      # infer at most this long side (the mask is scaled back to the photo; 0: as read)
mm_per_px = 0.0                   # millimetres per pixel of the photos (0: report in pixels, severity not graded)
travel = "vertical"               # direction of travel in the image: vertical (up the image) | horizontal
severity = "ltpp"                 # ltpp (<=6, 6-19, >19 mm) | astm (<10, 10-76, >76 mm) | edges, e.g. 3,10
gap_px = 10.0                     # pieces whose end comes this close to another piece are one crack
min_length_px = 10.0              # shorter cracks are specks: left out (they still count in the crack ratio)
every = 1                         # every N-th video frame (or image of a folder)
max_images = 0                    # stop after this many images / frames (0: all)
max_pixels = 64 << 20             # skip (one line, undecoded) an image whose header declares more pixels (0: no limit)
out = "report"                    # output folder: new, empty or an earlier report
thumb_px = 360                    # thumbnail size (longer side) in index.html
title = ""                        # page title ("": "Crack survey" and the source)

config = configure(globals(), __doc__)

from itertools import islice  # noqa: E402

from crackseg.data import DataError, error_line  # noqa: E402
from crackseg.engines import EngineError, open_engine  # noqa: E402
from crackseg.measure import MeasureError, MeasureSettings  # noqa: E402
from crackseg.report import ReportError, SurveyReport, mask_frames, model_masks, source_frames  # noqa: E402
from crackseg.sources import SourceError  # noqa: E402


def progress(items, total: int | None, unit: str):
    try:
        from tqdm import tqdm
    except ImportError:  # edge installs without tqdm: a line every 10 items
        def plain():
            for i, item in enumerate(items, 1):
                if i % 10 == 0 or i == total:
                    print(f"{i}/{total or '?'} {unit}", flush=True)
                yield item
        return plain()
    return tqdm(items, total=total, unit=unit, dynamic_ncols=True)


def run() -> int:
    if bool(source) == bool(masks):
        print("error: give --source=DIR|VIDEO (with --model) or --masks=DIR, one of them", file=sys.stderr)
        return 2
    if images and not masks:
        print("error: --images goes with --masks (with --source the photos are the source)", file=sys.stderr)
        return 2
    if max_pixels < 0:
        print(f"error: --max_pixels={max_pixels}: expected a pixel count, or 0 for no limit", file=sys.stderr)
        return 2
    engine = frames = None
    skipped: list[str] = []

    def skip(line: str) -> None:  # one input that cannot be used: one line, and the survey goes on
        skipped.append(line)
        print(f"skip: {line}", flush=True)

    try:
        settings = MeasureSettings(mm_per_px=mm_per_px or None, travel=travel, severity=severity, gap_px=gap_px,
                                   min_length_px=min_length_px)
        meta = {"title": title or f"Crack survey: {source or masks}", "source": source or None, "masks": masks or None,
                "max_pixels": max_pixels}
        report = SurveyReport(out, settings, meta, thumb_px)  # refuses a folder of someone else's files up front
        report.skipped = skipped
        if masks:
            total, items = mask_frames(masks, images or None, every, max_pixels, on_skip=skip)
        else:
            frames, total, read = source_frames(source, every, max_pixels, on_skip=skip)
            engine = open_engine(model, backend, threshold, precision=precision)
            print(f"model: {engine.describe()}; source: {frames.kind} {source}", flush=True)
            report.meta.update(model=model, model_description=engine.describe(), threshold=engine.threshold,
                               every=every, max_side=max_side)
            items = model_masks(engine, read, max_side, on_skip=skip)
        if max_images:
            total = min(total, max_images) if total else max_images
            items = islice(items, max_images)
        for name, image, mask in progress(items, total, "frames" if frames and frames.kind == "video" else "images"):
            try:
                report.add(name, image, mask)
            except Exception as exc:  # measuring one image failed: that image is left out, not the survey
                skip(f"{name}: {error_line(exc)}")
        if not report.records:
            raise ReportError(f"{source or masks}: nothing was read"
                              + (f" ({len(skipped)} skipped)" if skipped else ""))
        paths = report.write()
    except (ReportError, MeasureError, EngineError, SourceError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no report written", file=sys.stderr)
        return 130
    finally:
        if frames is not None:
            frames.close()
        if engine is not None:
            engine.close()
    totals = report.totals()
    u = settings.unit
    print(f"{totals['images']} images, {totals['cracks']} cracks, {totals[f'length_{u}']:.0f} {u} in all"
          + ("" if settings.mm_per_px else " (pixels: no --mm_per_px)")
          + (f"; {len(skipped)} skipped (unreadable, over --max_pixels or failed)" if skipped else ""))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
