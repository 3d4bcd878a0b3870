"""Survey reports: every crack of a folder of photos, a video or a folder of masks, measured (``crackseg.measure``) and
written as ``cracks.csv``, ``images.csv``, ``report.json`` and one self-contained ``index.html`` (no CDN, opens
offline: thumbnails are embedded JPEGs, plots inline SVG). numpy / OpenCV only, no TensorFlow, no matplotlib.

    report = SurveyReport("report/", MeasureSettings(mm_per_px=0.8), meta={"model": "weights/student.onnx"})
    for name, image, mask in frames:           # model_masks(engine, frames) or mask_frames(masks_dir)
        report.add(name, image, mask)
    report.write()

The output folder must be new, empty or an earlier report (its ``report.json`` says ``"generator":
"crackseg.report"`` and it holds nothing but report files): a folder with anything else in it is refused, so a user's
files are never overwritten. Every file is written atomically (``crackseg.io``).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from .data import IMAGE_EXTS, MASK_EXTS, DataError, read_image, read_mask
from .io import atomic_write_text
from .measure import NO_SEVERITY, TYPES, Measurement, MeasureSettings, measure_cracks
from .sources import FrameSource, SourceError, frame_names, skip_line
from .viz import encode

GENERATOR = "crackseg.report"
REPORT_FILES = ("cracks.csv", "images.csv", "report.json", "index.html")
NO_SEVERITY_RGB = (70, 130, 230)


class ReportError(ValueError):
    """A report that cannot be made (output folder, inputs); one line."""


# ---------------------------------------------------------------------------------------------- output folder
def check_out_dir(out: str | Path) -> Path:
    """``out`` as a Path if a report may be written there (see the module docstring), else ReportError."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out={out}: exists and is not a folder")
    if not out.exists():
        return out
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]  # dot files: atomic-write leftovers
    if not entries:
        return out
    foreign = sorted(p.name for p in entries if p.name not in REPORT_FILES or not p.is_file())
    if foreign:
        raise ReportError(f"--out={out}: holds files that are not a report ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    try:
        previous = json.loads((out / "report.json").read_text("utf-8"))
        ours = isinstance(previous, dict) and previous.get("generator") == GENERATOR
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ReportError(f"--out={out}: has {', '.join(sorted(p.name for p in entries))} but no report.json "
                          f"written by this tool; choose a new or empty folder")
    return out


# ---------------------------------------------------------------------------------------------- inputs
def list_files(folder: str | Path, exts: tuple[str, ...], what: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: not a folder of {what}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise ReportError(f"{folder}: no {what} ({', '.join(exts)}) in this folder")
    return files


def mask_frames(masks: str | Path, images: str | Path | None = None, every: int = 1, max_pixels: int | None = None,
                on_skip: Callable[[str], None] | None = None
                ) -> tuple[int, Iterator[tuple[str, np.ndarray | None, np.ndarray]]]:
    """(count, iterator of (name, photo or None, boolean mask)) for a folder of masks made elsewhere (PNG 0/255 or
    0/1, CrackForest .mat); ``images``: a folder of the photos with the same stems, for the thumbnails. Names are
    ``sources.frame_names`` of the masks (the stem, or the file name where two masks share it). ``max_pixels``: see
    ``data.decode_file``. With ``on_skip``, a mask or photo that cannot be used is one line to it and the next
    one; without, its error is raised."""
    every = max(1, every)
    listed = list_files(masks, MASK_EXTS, "masks")
    files, names = listed[::every], frame_names(listed)[::every]
    photos: dict[str, list[Path]] = {}
    for p in list_files(images, IMAGE_EXTS, "images") if images else []:
        photos.setdefault(p.stem, []).append(p)
    for path in files:
        if len(photos.get(path.stem, [])) > 1:  # which one is this mask's photo?
            raise ReportError(f"{images}: {' and '.join(p.name for p in photos[path.stem])} both match the mask "
                              f"{path.name}; keep one photo per mask")

    def frames():
        for path, name in zip(files, names):
            photo_path = photos[path.stem][0] if path.stem in photos else None
            try:
                mask = read_mask(path, max_pixels)
                photo = read_image(photo_path, max_pixels) if photo_path else None
                if photo is not None and photo.shape[:2] != mask.shape:
                    raise DataError(f"{photo_path}: {photo.shape[1]}x{photo.shape[0]}, but its mask {path} is "
                                    f"{mask.shape[1]}x{mask.shape[0]}")
            except Exception as exc:  # one file never ends the survey when the caller takes skips
                if on_skip is None:
                    raise
                on_skip(skip_line(path, exc))
                continue
            yield name, photo, mask

    return len(files), frames()


def source_frames(spec: str, every: int = 1, max_pixels: int | None = None,
                  on_skip: Callable[[str], None] | None = None
                  ) -> tuple[FrameSource, int | None, Iterator[tuple[str, np.ndarray]]]:
    """(the open source, how many items it will give or None when unknown, its (name, RGB frame) iterator) for a
    folder of images or a video file, every ``every``-th item. ``max_pixels`` and ``on_skip``: see
    ``sources.FrameSource`` (a folder image that cannot be read is one line and the next)."""
    frames = FrameSource(spec, max_pixels=max_pixels, on_skip=on_skip)
    if frames.kind not in ("folder", "video"):
        frames.close()
        raise SourceError(f"{spec}: reports are made from a folder of images or a video file, not a {frames.kind}")
    count = len(frames.files) if frames.kind == "folder" else int(frames.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return frames, (-(-count // max(1, every)) if count > 0 else None), every_nth(frames.frames(), every)


def every_nth(frames: Iterable, every: int) -> Iterator:
    """Every ``every``-th item (the first, then every N-th after it)."""
    return islice(frames, 0, None, max(1, every))


def predict_mask(engine, image: np.ndarray, max_side: int = 0) -> np.ndarray:
    """The engine's boolean crack mask at the image's own size; inferred at most ``max_side`` on the longer side
    (the probability is scaled back up before the threshold, so sizes and ``mm_per_px`` keep to the photo)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
    # each side >= 1 px: a 4000 x 1 strip at --max_side=1024 is inferred at 1024 x 1
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                  interpolation=cv2.INTER_AREA)
    prob = engine.predict(small)
    if prob.shape[:2] != (h, w):
        prob = cv2.resize(prob.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return engine.mask(prob)


def model_masks(engine, frames: Iterable[tuple[str, np.ndarray]], max_side: int = 0,
                on_skip: Callable[[str], None] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, photo, mask) for each (name, photo) of a frame source. With ``on_skip``, a photo the model fails on
    is one line to it and the next photo; without, the error is raised."""
    for name, image in frames:
        try:
            mask = predict_mask(engine, image, max_side)
        except Exception as exc:
            if on_skip is None:
                raise
            on_skip(skip_line(name, exc))
            continue
        yield name, image, mask


# ---------------------------------------------------------------------------------------------- colours
def severity_colours(names: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """RGB per severity class: green (lowest) through amber to red (highest); blue for ungraded."""
    stops = np.array([(40, 170, 70), (250, 170, 0), (215, 35, 35)], np.float64)
    out = {}
    for i, name in enumerate(names):
        t = i / max(1, len(names) - 1) * (len(stops) - 1)
        k = min(int(t), len(stops) - 2)
        out[name] = tuple(int(round(v)) for v in stops[k] + (stops[k + 1] - stops[k]) * (t - k))
    out[NO_SEVERITY] = NO_SEVERITY_RGB
    return out


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


# ---------------------------------------------------------------------------------------------- thumbnails
def thumbnail(image: np.ndarray | None, measurement: Measurement, colours: dict, size: int = 360) -> np.ndarray:
    """An RGB thumbnail (longer side ``size``) with every crack outlined and numbered in its severity colour; without
    a photo the mask is drawn light on dark."""
    h, w = measurement.shape
    if image is None:
        image = np.full((h, w, 3), 45, np.uint8)
        image[measurement.pieces > 0] = 200
    scale = min(1.0, size / max(h, w))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    thumb = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA) if scale < 1.0 else image.copy()
    thumb = np.ascontiguousarray(thumb)
    font, fscale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, size / 800)
    for crack in measurement.cracks:
        colour = colours.get(crack.severity, NO_SEVERITY_RGB)
        # outlined a little outside the crack (2 thumbnail pixels) so the crack itself stays visible inside
        grow = max(1, round(2 / scale))
        around = cv2.dilate(measurement.crack_mask(crack).astype(np.uint8),
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        contours, _ = cv2.findContours(around, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        scaled = [np.round(c * scale).astype(np.int32) for c in contours]
        cv2.drawContours(thumb, scaled, -1, colour, 1, cv2.LINE_AA)
        # the number just above-left of the crack's pixel nearest its bounding box's top-left corner
        x, y, bw, bh = crack.bbox
        ys, xs = np.nonzero(measurement.crack_mask(crack)[y:y + bh, x:x + bw])
        k = int(np.argmin(xs + ys))
        label = str(crack.id)
        (lw, lh), _ = cv2.getTextSize(label, font, fscale, 1)
        px = int(np.clip(round((x + xs[k]) * scale) - lw - 4, 0, tw - lw - 2))
        py = int(np.clip(round((y + ys[k]) * scale) - 2, lh + 2, th - 2))
        cv2.rectangle(thumb, (px - 1, py - lh - 3), (px + lw + 2, py + 3), colour, -1)
        cv2.putText(thumb, label, (px, py), font, fscale, (255, 255, 255), 1, cv2.LINE_AA)
    return thumb


# ---------------------------------------------------------------------------------------------- plots (SVG)
def svg_histogram(values: list[float], groups: list[str], colours: dict, title: str, unit: str,
                  bins: int = 12, width: int = 420, height: int = 220) -> str:
    """A stacked histogram (one colour per group, e.g. severity) as inline SVG."""
    esc = html.escape
    pad_l, pad_r, pad_t, pad_b = 40, 10, 26, 34
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{esc(title)}</text>']
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="12">no cracks</text>')
        return "".join(parts) + "</svg>"
    lo, hi = 0.0, max(values)
    hi = hi if hi > lo else lo + 1.0
    step = _nice_step(hi / bins)
    nbins = max(1, int(math.ceil(hi / step)))
    order = list(dict.fromkeys(g for g in colours if g in set(groups)))
    counts = np.zeros((nbins, len(order)), int)
    for v, g in zip(values, groups):
        counts[min(int(v // step), nbins - 1), order.index(g)] += 1
    top = max(1, int(counts.sum(1).max()))
    bw = pw / nbins
    for i in range(nbins):
        y = pad_t + ph
        for j, g in enumerate(order):
            if counts[i, j]:
                hgt = ph * counts[i, j] / top
                y -= hgt
                parts.append(f'<rect x="{pad_l + i * bw + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{hgt:.1f}"'
                             f' fill="{_hex(colours[g])}"><title>{esc(g)}: {counts[i, j]}</title></rect>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#333"/>'
                 f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" stroke="#333"/>')
    for i in range(0, nbins + 1, max(1, nbins // 6)):
        x = pad_l + i * bw
        parts.append(f'<text x="{x:.1f}" y="{pad_t + ph + 14}" text-anchor="middle" font-size="10">'
                     f'{i * step:g}</text>')
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + ph * (1 - frac)
        parts.append(f'<text x="{pad_l - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{top * frac:g}</text>')
    parts.append(f'<text x="{pad_l + pw / 2}" y="{height - 4}" text-anchor="middle" font-size="11">{esc(unit)}'
                 f'</text>')
    return "".join(parts) + "</svg>"


def _nice_step(raw: float) -> float:
    exp = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


# ---------------------------------------------------------------------------------------------- the report
@dataclass
class ImageRecord:
    name: str
    width: int
    height: int
    summary: dict
    rows: list[dict]
    thumb_jpeg: bytes = field(repr=False)


class SurveyReport:
    """Collects measured images; ``write`` produces the four files (see the module docstring)."""

    def __init__(self, out: str | Path, settings: MeasureSettings, meta: dict | None = None, thumb_px: int = 360):
        self.out = check_out_dir(out)
        self.settings, self.meta, self.thumb_px = settings, dict(meta or {}), thumb_px
        self.colours = severity_colours(settings.severity.names)
        self.records: list[ImageRecord] = []
        self.skipped: list[str] = []  # one line per input left out (unreadable, over max_pixels, failed)
        self.started = time.time()

    @property
    def unit(self) -> str:
        return self.settings.unit

    def add(self, name: str, image: np.ndarray | None, mask: np.ndarray) -> Measurement:
        """Measure one image's mask (``image``: the photo for the thumbnail, or None) and keep its rows."""
        if image is not None and image.shape[:2] != np.shape(mask)[:2]:
            raise ReportError(f"{name}: image {image.shape[1]}x{image.shape[0]} and mask "
                              f"{np.shape(mask)[1]}x{np.shape(mask)[0]} differ in size")
        m = measure_cracks(mask, self.settings)
        thumb = thumbnail(image, m, self.colours, self.thumb_px)
        rows = [{"image": name, **row} for row in m.rows()]
        self.records.append(ImageRecord(name, m.shape[1], m.shape[0], {"image": name, "width": m.shape[1],
                                        "height": m.shape[0], **m.summary()}, rows, encode(thumb, ".jpg", 82)))
        return m

    # -- totals
    def crack_rows(self) -> list[dict]:
        return [row for r in self.records for row in r.rows]

    def totals(self) -> dict:
        """Counts and lengths by type x severity, over the survey (in the output unit)."""
        u = self.unit
        rows = self.crack_rows()
        severities = [s for s in self.settings.severity.names if self.settings.graded] or [NO_SEVERITY]
        by = {t: {s: {"count": 0, f"length_{u}": 0.0} for s in severities} for t in TYPES}
        for row in rows:
            cell = by[row["type"]][row["severity"]]
            cell["count"] += 1
            cell[f"length_{u}"] = round(cell[f"length_{u}"] + row[f"length_{u}"], 2)
        return {"images": len(self.records), "images_with_cracks": sum(1 for r in self.records if r.rows),
                "cracks": len(rows), f"length_{u}": round(sum(r[f"length_{u}"] for r in rows), 2),
                "by_type_and_severity": by}

    def settings_dict(self) -> dict:
        return {**self.meta, **self.settings.describe()}

    # -- files
    def write(self) -> dict[str, Path]:
        """Write the four files atomically into ``out``; returns their paths."""
        self.out = check_out_dir(self.out)  # again: the folder may have changed during a long survey
        self.out.mkdir(parents=True, exist_ok=True)
        u = self.unit
        crack_fields = ["image", "crack_id", "type", "severity", f"length_{u}", f"mean_width_{u}", f"max_width_{u}",
                        f"p90_width_{u}", f"area_{u}2", "orientation_deg", "x", "y", "w", "h"]
        image_fields = list(self.records[0].summary) if self.records else ["image", "width", "height", "cracks"]
        paths = {name: self.out / name for name in REPORT_FILES}
        atomic_write_text(paths["cracks.csv"], _csv(crack_fields, self.crack_rows()))
        atomic_write_text(paths["images.csv"], _csv(image_fields, [r.summary for r in self.records]))
        document = {"generator": GENERATOR, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime()),
                    "unit": u, "unit_note": self._unit_note(), "settings": self.settings_dict(),
                    "totals": self.totals(), "skipped": list(self.skipped),
                    "images": [{**r.summary, "cracks": r.rows} for r in self.records]}
        for img, rec in zip(document["images"], self.records):
            img["crack_count"] = rec.summary["cracks"]
        atomic_write_text(paths["report.json"], json.dumps(document, indent=1) + "\n")
        atomic_write_text(paths["index.html"], self.html())
        return paths

    def _unit_note(self) -> str:
        if self.settings.mm_per_px:
            return f"millimetres ({self.settings.mm_per_px:g} mm per pixel); bounding boxes in pixels"
        return "pixels: no --mm_per_px was given, so lengths, widths and areas are in pixels and the mm severity " \
               "table grades nothing"

    def html(self) -> str:
        esc, u = html.escape, self.unit
        totals, settings = self.totals(), self.settings
        rows = self.crack_rows()
        names = list(next(iter(totals["by_type_and_severity"].values())).keys())
        head = "".join(f"<th>{esc(s)}</th>" for s in names)
        body = []
        for t, cells in totals["by_type_and_severity"].items():
            n = sum(c["count"] for c in cells.values())
            total_len = sum(c[f"length_{u}"] for c in cells.values())
            body.append(f"<tr><th>{t}</th>" + "".join(
                f"<td>{c[f'length_{u}']:.0f} <small>({c['count']})</small></td>" for c in cells.values())
                + f"<td><b>{total_len:.0f}</b> <small>({n})</small></td></tr>")
        col_tot = [sum(totals["by_type_and_severity"][t][s][f"length_{u}"] for t in TYPES) for s in names]
        col_n = [sum(totals["by_type_and_severity"][t][s]["count"] for t in TYPES) for s in names]
        body.append("<tr><th>all</th>" + "".join(f"<td><b>{v:.0f}</b> <small>({n})</small></td>"
                                                 for v, n in zip(col_tot, col_n))
                    + f"<td><b>{totals[f'length_{u}']:.0f}</b> <small>({totals['cracks']})</small></td></tr>")
        width_hist = svg_histogram([r[f"mean_width_{u}"] for r in rows], [r["severity"] for r in rows], self.colours,
                                   "mean width per crack", f"mean width ({u})")
        length_hist = svg_histogram([r[f"length_{u}"] for r in rows], [r["severity"] for r in rows], self.colours,
                                    "length per crack", f"length ({u})")
        legend = " ".join(f'<span class="sev" style="background:{_hex(self.colours[s])}">{esc(s)}</span>'
                          for s in names)
        meta = self.settings_dict()
        setting_rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in meta.items()
            if k not in ("severity_classes", "severity_edges") and v not in (None, ""))
        sections = []
        for rec in self.records:
            table = "".join(
                f'<tr><td><span class="sev" style="background:{_hex(self.colours.get(r["severity"], (0, 0, 0)))}">'
                f'{r["crack_id"]}</span></td><td>{r["type"]}</td><td>{esc(r["severity"])}</td>'
                f'<td>{r[f"length_{u}"]:.1f}</td><td>{r[f"mean_width_{u}"]:.1f}</td><td>{r[f"max_width_{u}"]:.1f}</td>'
                f'<td>{r[f"p90_width_{u}"]:.1f}</td><td>{r[f"area_{u}2"]:.0f}</td><td>{r["orientation_deg"]:.0f}</td>'
                f'</tr>' for r in rec.rows)
            crack_table = (f'<table class="cracks"><tr><th>#</th><th>type</th><th>severity</th><th>length ({u})'
                           f'</th><th>mean w</th><th>max w</th><th>p90 w ({u})</th><th>area ({u}²)</th>'
                           f'<th>orient. °</th></tr>{table}</table>') if rec.rows else '<p class="none">no cracks</p>'
            thumb = base64.b64encode(rec.thumb_jpeg).decode("ascii")
            counts = f'{_plural(rec.summary["cracks"], "crack")} · {100 * rec.summary["crack_ratio"]:.2f} % crack'
            sections.append(
                f'<section class="image" id="img-{esc(rec.name)}"><h3>{esc(rec.name)} <small>{rec.width}×{rec.height}'
                f' px · {counts} · worst {esc(rec.summary["worst_severity"] or "none")}</small></h3><div class="row">'
                f'<img class="thumb" alt="{esc(rec.name)}" src="data:image/jpeg;base64,{thumb}">{crack_table}'
                f'</div></section>')
        title = esc(str(self.meta.get("title") or "Crack survey"))
        skipped = (f'\n<details class="skipped"><summary>{_plural(len(self.skipped), "input")} skipped (not in '
                   f'the figures)</summary><ul>' + "".join(f"<li>{esc(line)}</li>" for line in self.skipped)
                   + "</ul></details>" if self.skipped else "")
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="generator" content="{GENERATOR}">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 1240px; color: #222; padding: 0 1em; }}
h1 {{ margin-bottom: 0.1em; }} .unit {{ background: #fff4d6; padding: 0.4em 0.7em; border-radius: 4px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }} th {{ background: #f2f2f2; }}
table.settings td, table.settings th {{ text-align: left; }}
.sev {{ display: inline-block; min-width: 1.4em; text-align: center; color: #fff; border-radius: 3px;
        padding: 0 0.3em; font-weight: bold; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.row {{ display: flex; gap: 1em; align-items: flex-start; overflow-x: auto; }}
.row > table {{ flex: none; margin-top: 0; }} table.cracks th {{ white-space: nowrap; }}
.thumb {{ border: 1px solid #999; max-width: {self.thumb_px}px; }}
section.image {{ border-top: 1px solid #ddd; margin-top: 0.8em; }} .none {{ color: #777; }}
</style></head><body>
<h1>{title}</h1>
<p class="unit" id="unit">Units: {esc(self._unit_note())}.</p>
<h2 id="summary">Summary</h2>
<p>{_plural(totals['images'], 'image')}, {totals['images_with_cracks']} with cracks;
{_plural(totals['cracks'], 'crack')},
{totals[f'length_{u}']:.0f} {u} in all. Severity ({esc(settings.severity.name)}, by mean width): {legend}
<small>{esc(settings.severity.describe())} {u}</small></p>{skipped}
<table class="summary"><tr><th>total length ({u}) (count)</th>{head}<th>all</th></tr>{''.join(body)}</table>
<div class="plots">{width_hist}{length_hist}</div>
<details><summary>settings</summary><table class="settings">{setting_rows}</table></details>
<h2>Images</h2>
{''.join(sections)}
<p><small>Made by {GENERATOR}. Lengths along each crack's centre line; widths 2 × the distance transform on it;
orientation counter-clockwise from the image's x axis; type relative to the direction of travel
({esc(settings.travel)}).</small></p>
</body></html>
"""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell that a spreadsheet would run as a formula (``=HYPERLINK(...)`` as a photo's name) gets a leading
    ``'``, which spreadsheets show as text (OWASP's advice for CSV injection); numbers are left as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def _csv(fields: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    return buf.getvalue()
