"""Crack measurement from a binary mask (numpy/OpenCV only; ``cv2.ximgproc`` is not in headless builds).

Per crack (``measure_cracks``, report.py, camera.py --mm_per_px): length along the centre line, mean / max / 90th
percentile width, area, bounding box, orientation, type (longitudinal / transverse / diagonal / network) and severity
from a named table, in millimetres given ``mm_per_px``; the rules are written out above ``measure_cracks``.

Per frame (``crack_stats``, camera.py's line without a scale), in pixels:

* ``crack_ratio``: crack pixels / all pixels;
* ``length_px``: length of the mask's skeleton, 1 per horizontal/vertical step and sqrt(2) per diagonal step;
* ``max_width_px``: widest point, from the distance transform read on the skeleton (the skeleton runs along the
  middle of the crack, where the distance to the background is half the width);
* ``components``: connected crack regions (8-connected).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import cv2
import numpy as np

_SQRT2 = math.sqrt(2.0)


def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each 8-bit neighbourhood code (bit k = neighbour P(k+2), clockwise from north), whether Zhang-Suen's first
    and second sub-iteration delete the pixel."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1          # columns: P2 .. P9
    p2, p3, p4, p5, p6, p7, p8, p9 = bits.T
    count = bits.sum(1)
    ring = np.concatenate([bits, bits[:, :1]], 1)
    transitions = ((ring[:, :-1] == 0) & (ring[:, 1:] == 1)).sum(1)
    base = (count >= 2) & (count <= 6) & (transitions == 1)
    first = base & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    second = base & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return first, second


_ZS_TABLES = _zhang_suen_tables()


def _zhang_suen(img: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning. Every sub-iteration removes all deletable pixels at once; only the pixels still set are
    looked at (their neighbourhood code through a 256-entry table), so the cost follows the crack, not the image."""
    padded = np.pad(img.astype(np.uint8), 1)
    w = padded.shape[1]
    flat = padded.ravel()  # a view: writes go to padded
    offsets = (-w, -w + 1, 1, w + 1, w, w - 1, -1, -w - 1)  # P2 .. P9
    alive = np.flatnonzero(flat)
    while True:
        changed = False
        for table in _ZS_TABLES:
            code = np.zeros(alive.size, np.uint8)
            for k, off in enumerate(offsets):
                code |= flat[alive + off] << k
            delete = table[code]
            if delete.any():
                flat[alive[delete]] = 0
                alive = alive[~delete]
                changed = True
        if not changed:
            return padded[1:-1, 1:-1].copy()


def _remove_staircases(skel: np.ndarray) -> np.ndarray:
    """Drop the corner pixel of every L-shaped step (e.g. N and E set, S and W clear): Zhang-Suen leaves them on
    diagonal runs, and each would add 2 instead of sqrt(2) to the length. The diagonal neighbour opposite the
    corner must be clear too, so removing it never disconnects anything; one orientation per pass keeps the
    simultaneous removals independent."""
    skel = skel.copy()
    # (two set 4-neighbours, two clear 4-neighbours, the diagonal that must be clear), as (dy, dx)
    orientations = [
        (((-1, 0), (0, 1)), ((1, 0), (0, -1)), (1, -1)),
        (((0, 1), (1, 0)), ((-1, 0), (0, -1)), (-1, -1)),
        (((1, 0), (0, -1)), ((-1, 0), (0, 1)), (-1, 1)),
        (((0, -1), (-1, 0)), ((1, 0), (0, 1)), (1, 1)),
    ]
    h, w = skel.shape
    for set_dirs, clear_dirs, diagonal in orientations:
        p = np.pad(skel, 1)
        at = lambda d: p[1 + d[0]:1 + d[0] + h, 1 + d[1]:1 + d[1] + w]  # noqa: E731
        corner = (skel == 1) & (at(diagonal) == 0)
        for d in set_dirs:
            corner &= at(d) == 1
        for d in clear_dirs:
            corner &= at(d) == 0
        skel[corner] = 0
    return skel


def skeleton(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide, 8-connected centre line of a boolean mask (uint8 0/1, same shape)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # thin only the bounding box: much cheaper
    out[y0:y1, x0:x1] = _remove_staircases(_zhang_suen(mask[y0:y1, x0:x1]))
    return out


def skeleton_length(skel: np.ndarray) -> float:
    """Length of a skeleton: each 4-connected pair of pixels counts 1, each diagonal pair sqrt(2) unless the two
    are already joined through a shared 4-neighbour (a junction or corner), which would count that step twice."""
    s = np.asarray(skel, bool)
    if not s.any():
        return 0.0
    p = np.pad(s, 1)
    h, w = s.shape
    at = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    straight = np.count_nonzero(s & at(0, 1)) + np.count_nonzero(s & at(1, 0))
    # diagonal to the south-east: bridged when east or south is set; to the south-west: when west or south is.
    diag_se = s & at(1, 1) & ~at(0, 1) & ~at(1, 0)
    diag_sw = s & at(1, -1) & ~at(0, -1) & ~at(1, 0)
    return float(straight + _SQRT2 * (np.count_nonzero(diag_se) + np.count_nonzero(diag_sw)))


def crack_stats(mask: np.ndarray) -> dict[str, float | int]:
    """Statistics of one boolean HxW crack mask (see the module docstring); all in pixels."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    crack_pixels = int(np.count_nonzero(mask))
    stats = {"crack_ratio": crack_pixels / mask.size if mask.size else 0.0, "crack_pixels": crack_pixels,
             "length_px": 0.0, "max_width_px": 0.0, "components": 0}
    if not crack_pixels:
        return stats
    skel = skeleton(mask)
    # cv2 distance: to the nearest background pixel centre, so the middle of a w-pixel band is (w + 1) / 2 away;
    # the width is therefore 2 d - 1. The zero border makes cracks touching the frame edge end there.
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    on_skeleton = distance[skel.astype(bool)]
    stats["length_px"] = round(skeleton_length(skel), 2)
    stats["max_width_px"] = round(float(2.0 * on_skeleton.max() - 1.0), 2) if on_skeleton.size else 1.0
    stats["components"] = int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1)
    return stats


def format_stats(stats: dict) -> str:
    """One short line for logs and overlays (millimetres and the worst severity when ``frame_stats`` made it)."""
    if "length_mm" in stats:
        worst = stats.get("worst_severity") or "none"
        return (f"crack {100 * stats['crack_ratio']:.2f}%  {stats.get('cracks', 0)} cracks  "
                f"length {stats['length_mm']:.0f}mm  max width {stats['max_width_mm']:.1f}mm  worst {worst}")
    return (f"crack {100 * stats['crack_ratio']:.2f}%  length {stats['length_px']:.0f}px  "
            f"max width {stats['max_width_px']:.1f}px")


# ================================================================================================ per-crack
# Everything below measures each crack of a mask on its own (report.py, camera.py --mm_per_px). The rules, in order:
#
# 1. Pieces. The mask's 8-connected regions, each thinned to its centre line (``skeleton``). Spurs are pruned: a
#    branch from a free end to a junction that is shorter than the crack's width there (2 x the distance transform at
#    the junction) is a thinning artefact of a blunt end or a bulge, not a crack.
# 2. Gap bridging (segmentation breaks thin cracks into pieces). Two pieces are one crack when a free end of one
#    piece's centre line comes within ``gap_px`` pixels (Euclidean, to the nearest crack pixel) of the other piece.
#    Applied transitively; the gap itself adds nothing to length or area but closes cells (rule 6).
# 3. Length: the centre line split into branches (between free ends and branch points, each carried on to the centre
#    of the clump of junction pixels it meets); each branch is resampled every ``RESAMPLE_PX`` pixels along its
#    pixel chain and measured as that polyline, which removes the ~8 % bias of counting 1 / sqrt(2) per step on
#    oblique lines. Cracks shorter than ``min_length_px`` are dropped (specks); they still count in the crack ratio.
# 4. Width at a centre-line pixel: 2 x the distance transform on the crack's ridge - 1. The ridge height comes from
#    the pixel's distance and its neighbours' across the crack (``_chain_widths``: an even width has no centre pixel,
#    and the pixel beside the ridge would read one pixel short); the - 1 because the distance reaches the nearest
#    background pixel's centre, half a pixel beyond the edge on each side. Pixels within reach of a branch point are
#    left out (they read the combined width of the cracks that meet). Mean, max and 90th percentile per crack.
# 5. Orientation: the length-weighted mean direction of the resampled chords (doubled-angle mean, so 10 and 170
#    degrees average to 0), in degrees counter-clockwise from the image's x axis (0 = horizontal, 90 = vertical), in
#    [0, 180).
# 6. Type: ``network`` (block / fatigue cracking) when the crack encloses at least ``NETWORK_CELLS`` cells (holes of at
#    least ``MIN_CELL_PX`` pixels and (``CELL_WIDTHS`` x its mean width)^2, bridges included) or has at least
#    ``NETWORK_JUNCTIONS`` branch points (where three or more branches at least ``BRANCH_WIDTHS`` mean widths long
#    meet: the side shoots of a blotchy mask's centre line are not branches); otherwise
#    by the angle between its orientation and the direction of travel (``travel="vertical"``: travel runs up the
#    image): within ``LONGITUDINAL_DEG`` longitudinal, beyond ``TRANSVERSE_DEG`` transverse, between them diagonal.
# 7. Severity: the crack's mean width in millimetres through a named table (``SEVERITY_TABLES``) or custom edges.
#    Without ``mm_per_px`` everything stays in pixels (every output says so) and the named tables grade nothing
#    (severity ``n/a``); custom edges then apply to pixel widths.

RESAMPLE_PX = 4           # chord length, in skeleton pixels, of the polyline a branch's length is measured on
NETWORK_CELLS = 2         # enclosed cells that make a crack a network
NETWORK_JUNCTIONS = 5     # branch points that make a crack a network
MIN_CELL_PX = 64          # smallest hole counted as a cell, and at least (CELL_WIDTHS x mean width)^2: smaller
CELL_WIDTHS = 3.0         # holes are pinholes in a wide crack, not blocks between cracks
BRANCH_WIDTHS = 3.0       # a branch point counts when 3+ branches at least this many mean widths long meet there
LONGITUDINAL_DEG = 30.0   # at most this far from the direction of travel: longitudinal
TRANSVERSE_DEG = 60.0     # at least this far from it: transverse (between the two: diagonal)
TRAVEL = ("vertical", "horizontal")
TYPES = ("longitudinal", "transverse", "diagonal", "network")
NO_SEVERITY = "n/a"
# The numbers the stream carries in a frame's ``stats`` (camera.py), in this order, when the stats have them.
STREAM_KEYS = ("crack_ratio", "length_px", "max_width_px", "components", "cracks", "length_mm", "mean_width_mm",
               "max_width_mm", "severity_level")


class MeasureError(ValueError):
    """Bad measurement settings or input (one line)."""


@dataclass(frozen=True)
class SeverityTable:
    """Severity classes from mean crack width: ``names[i]`` for widths up to ``edges[i]`` (a width equal to an edge
    goes to the lower class unless ``edge_goes_up[i]``), the last name above the last edge."""

    name: str
    edges: tuple[float, ...]
    names: tuple[str, ...]
    edge_goes_up: tuple[bool, ...]
    source: str = ""

    def grade(self, width: float) -> tuple[str, int]:
        """(class name, level 1..len(names)) of a width in the table's unit."""
        level = 1
        for edge, up in zip(self.edges, self.edge_goes_up):
            if width > edge or (up and width == edge):
                level += 1
        return self.names[level - 1], level

    def describe(self) -> str:
        parts = []
        for i, name in enumerate(self.names):
            if i == 0:
                parts.append(f"{name} {'<' if self.edge_goes_up[0] else '≤'} {self.edges[0]:g}")
            elif i == len(self.names) - 1:
                parts.append(f"{name} {'≥' if self.edge_goes_up[-1] else '>'} {self.edges[-1]:g}")
            else:
                parts.append(f"{name} {self.edges[i - 1]:g}–{self.edges[i]:g}")
        return ", ".join(parts)


SEVERITY_TABLES = {
    "ltpp": SeverityTable("ltpp", (6.0, 19.0), ("low", "moderate", "high"), (False, False),
                          "FHWA LTPP Distress Identification Manual (FHWA-HRT-13-092), asphalt longitudinal, "
                          "transverse and fatigue cracking: mean width ≤ 6 mm low, > 6 to 19 mm moderate, "
                          "> 19 mm high"),
    "astm": SeverityTable("astm", (10.0, 76.0), ("low", "medium", "high"), (True, False),
                          "ASTM D6433 (PCI), longitudinal and transverse cracking: mean width < 10 mm low, "
                          "10 to 76 mm medium, > 76 mm high"),
}


def severity_table(spec: str | SeverityTable) -> SeverityTable:
    """A named table (``ltpp``, ``astm``) or custom ascending edges ``"3,10"`` (3 classes low / moderate / high for
    two edges, ``S1`` .. ``Sn`` otherwise; a width equal to an edge goes to the lower class)."""
    if isinstance(spec, SeverityTable):
        return spec
    key = str(spec).strip().lower()
    if key in SEVERITY_TABLES:
        return SEVERITY_TABLES[key]
    try:
        edges = tuple(float(p) for p in key.replace(";", ",").split(",") if p.strip())
    except ValueError:
        raise MeasureError(f"severity {spec!r}: choose {' or '.join(SEVERITY_TABLES)}, or ascending widths such "
                           f"as 3,10") from None
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
        raise MeasureError(f"severity {spec!r}: custom edges must be positive and ascending, e.g. 3,10")
    names = ("low", "moderate", "high") if len(edges) == 2 else tuple(f"S{i + 1}" for i in range(len(edges) + 1))
    return SeverityTable("custom", edges, names, (False,) * len(edges), f"custom mean-width edges {key}")


@dataclass(frozen=True)
class MeasureSettings:
    """How masks are measured; ``mm_per_px=None`` keeps everything in pixels."""

    mm_per_px: float | None = None
    travel: str = "vertical"
    severity: str | SeverityTable = "ltpp"
    gap_px: float = 10.0
    min_length_px: float = 10.0

    def __post_init__(self):
        if self.mm_per_px is not None and not (isinstance(self.mm_per_px, (int, float)) and self.mm_per_px > 0
                                               and math.isfinite(self.mm_per_px)):
            raise MeasureError(f"mm_per_px must be a positive number, got {self.mm_per_px!r}")
        if self.travel not in TRAVEL:
            raise MeasureError(f"travel {self.travel!r}: choose {' or '.join(TRAVEL)}")
        if self.gap_px < 0 or self.min_length_px < 0:
            raise MeasureError("gap_px and min_length_px must be >= 0")
        object.__setattr__(self, "severity", severity_table(self.severity))

    @property
    def unit(self) -> str:
        return "mm" if self.mm_per_px else "px"

    @property
    def scale(self) -> float:
        return float(self.mm_per_px or 1.0)

    @property
    def graded(self) -> bool:
        """Whether severities mean anything: named tables are in mm, custom edges in the output unit."""
        return bool(self.mm_per_px) or self.severity.name == "custom"

    def describe(self) -> dict:
        table = self.severity
        return {"unit": self.unit, "mm_per_px": self.mm_per_px, "travel": self.travel,
                "severity_table": table.name, "severity_classes": list(table.names),
                "severity_edges": list(table.edges), "severity_rule": table.describe() + f" ({self.unit}, mean width)",
                "severity_source": table.source, "gap_px": self.gap_px, "min_length_px": self.min_length_px}


@dataclass
class Crack:
    """One crack, measured in pixels (``row`` converts)."""

    id: int
    length_px: float
    mean_width_px: float
    max_width_px: float
    p90_width_px: float
    area_px: int
    orientation_deg: float
    bbox: tuple[int, int, int, int]      # x, y, w, h in pixels
    junctions: int
    cells: int
    type: str
    severity: str
    severity_level: int                  # 1 = lowest class; 0 when not graded
    pieces: tuple[int, ...] = field(default=(), repr=False)   # labels in Measurement.pieces

    def row(self, settings: MeasureSettings) -> dict:
        """The crack in the output unit (``*_mm`` or ``*_px`` keys), as in cracks.csv."""
        s, u = settings.scale, settings.unit
        x, y, w, h = self.bbox
        return {"crack_id": self.id, "type": self.type, "severity": self.severity,
                f"length_{u}": round(self.length_px * s, 2), f"mean_width_{u}": round(self.mean_width_px * s, 2),
                f"max_width_{u}": round(self.max_width_px * s, 2), f"p90_width_{u}": round(self.p90_width_px * s, 2),
                f"area_{u}2": round(self.area_px * s * s, 2), "orientation_deg": round(self.orientation_deg, 1),
                "x": x, "y": y, "w": w, "h": h}


@dataclass
class Measurement:
    """Every crack of one mask. ``pieces`` labels the mask's connected regions (1..n, 0 background); a crack owns the
    labels in ``Crack.pieces``; ``bridges`` are the gap-bridging segments ((x0, y0), (x1, y1)) in pixels."""

    cracks: list[Crack]
    settings: MeasureSettings
    shape: tuple[int, int]
    crack_pixels: int
    pieces: np.ndarray = field(repr=False)
    bridges: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list, repr=False)

    @property
    def crack_ratio(self) -> float:
        return self.crack_pixels / (self.shape[0] * self.shape[1]) if self.shape[0] * self.shape[1] else 0.0

    def crack_mask(self, crack: Crack) -> np.ndarray:
        return np.isin(self.pieces, crack.pieces)

    def worst(self) -> Crack | None:
        """The crack of the highest severity (longest among equals), None when there are none."""
        return max(self.cracks, key=lambda c: (c.severity_level, c.length_px), default=None)

    def rows(self) -> list[dict]:
        return [c.row(self.settings) for c in self.cracks]

    def summary(self) -> dict:
        """Counts and total length by type and by severity, in the output unit (images.csv)."""
        s, u = self.settings.scale, self.settings.unit
        out: dict = {"cracks": len(self.cracks), "crack_ratio": round(self.crack_ratio, 6),
                     f"length_{u}": round(sum(c.length_px for c in self.cracks) * s, 2)}
        for t in TYPES:
            chosen = [c for c in self.cracks if c.type == t]
            out[f"{t}_count"] = len(chosen)
            out[f"{t}_length_{u}"] = round(sum(c.length_px for c in chosen) * s, 2)
        for name in self.settings.severity.names + (NO_SEVERITY,):
            if name == NO_SEVERITY and self.settings.graded:
                continue
            chosen = [c for c in self.cracks if c.severity == name]
            out[f"{name}_count"] = len(chosen)
            out[f"{name}_length_{u}"] = round(sum(c.length_px for c in chosen) * s, 2)
        worst = self.worst()
        out["worst_severity"] = worst.severity if worst else ""
        return out


_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


class _Graph:
    """A skeleton as pixels, their 8-neighbours and degrees; ``branches`` traces it into pixel chains."""

    def __init__(self, skel: np.ndarray):
        self.ys, self.xs = np.nonzero(skel)
        self.clump = np.zeros(self.ys.size, np.int32)  # branch-point clump of each pixel, 0 for the others
        self.centres = np.zeros((1, 2))                # (x, y) centre of each clump (row 0 unused)
        if not self.ys.size:
            self.nbr, self.degree = np.zeros((0, 8), np.int64), np.zeros(0, np.int64)
            return
        # neighbour lookup on the skeleton's bounding box only (a full-frame index costs more than the tracing)
        y0, x0 = self.ys.min(), self.xs.min()
        ly, lx = self.ys - y0 + 1, self.xs - x0 + 1
        index = np.full((ly.max() + 2, lx.max() + 2), -1, np.int64)
        index[ly, lx] = np.arange(self.ys.size)
        self.nbr = np.stack([index[ly + dy, lx + dx] for dy, dx in _OFFSETS], 1)
        self.degree = (self.nbr >= 0).sum(1)
        # branch points: 8-connected clumps of pixels with 3+ neighbours, each with its centre
        junction = self.degree >= 3
        if junction.any():
            canvas = np.zeros(index.shape, np.uint8)
            canvas[ly[junction], lx[junction]] = 1
            _, labels, _, centres = cv2.connectedComponentsWithStats(canvas, connectivity=8)
            self.clump = labels[ly, lx]
            self.centres = centres + (x0 - 1, y0 - 1)

    def branches(self) -> list[list[int]]:
        """Pixel chains between nodes (pixels of degree != 2), then closed loops, as index lists."""
        nbr, degree = self.nbr, self.degree
        is_node = degree != 2
        seen_step: set[tuple[int, int]] = set()
        on_chain = np.zeros(degree.size, bool)
        out = []
        for start in np.flatnonzero(is_node):
            for first in nbr[start]:
                if first < 0 or (start, first) in seen_step:
                    continue
                chain, prev, cur = [int(start), int(first)], int(start), int(first)
                while not is_node[cur]:
                    on_chain[cur] = True
                    nxt = [n for n in nbr[cur] if n >= 0 and n != prev]
                    if not nxt:
                        break
                    prev, cur = cur, int(nxt[0])
                    chain.append(cur)
                seen_step.add((chain[-1], chain[-2]))
                seen_step.add((int(start), int(first)))
                if len(chain) == 2 and degree[chain[0]] >= 3 and degree[chain[1]] >= 3:
                    continue  # two pixels of one branch point (a clump of junction pixels), not a branch
                out.append(chain)
        for start in np.flatnonzero(~is_node & ~on_chain):  # loops: every pixel of degree 2
            if on_chain[start]:
                continue
            chain, prev, cur = [int(start)], -1, int(start)
            while True:
                on_chain[cur] = True
                nxt = [n for n in nbr[cur] if n >= 0 and n != prev and (not on_chain[n] or n == start)]
                if not nxt or (nxt[0] == start and len(chain) > 2):
                    chain.append(int(start))
                    break
                prev, cur = cur, int(nxt[0])
                chain.append(cur)
            out.append(chain)
        return out

    def points(self, chain: list[int]) -> np.ndarray:
        """(x, y) float coordinates of a chain."""
        return np.stack([self.xs[chain], self.ys[chain]], 1).astype(np.float64)

    def path(self, chain: list[int]) -> np.ndarray:
        """A chain's points, carried on to the centre of the branch point at either end (the chains that meet at a
        clump of junction pixels start at its edge; without this each would come up a pixel or so short)."""
        pts = self.points(chain)
        head = [self.centres[self.clump[chain[0]]]] if self.clump[chain[0]] else []
        tail = [self.centres[self.clump[chain[-1]]]] if self.clump[chain[-1]] else []
        if not head and not tail:
            return pts
        pts = np.concatenate([np.reshape(head, (-1, 2)), pts, np.reshape(tail, (-1, 2))])
        keep = np.ones(len(pts), bool)
        keep[1:] = np.any(np.diff(pts, axis=0) != 0, axis=1)  # a chain that starts on the centre pixel itself
        return pts[keep]


def _resampled(points: np.ndarray) -> np.ndarray:
    """Every ``RESAMPLE_PX``-th point of a chain, first and last kept."""
    keep = list(range(0, len(points), RESAMPLE_PX))
    if keep[-1] != len(points) - 1:
        keep.append(len(points) - 1)
    return points[keep]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = image.shape
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), w - 2).clip(0), np.minimum(np.floor(y).astype(int), h - 2).clip(0)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _chain_widths(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Width at each pixel of a chain (rule 4): the distance transform is a tent of slope 1 across the crack, so
    with d at the pixel and b the larger of the values one pixel to either side along the chain's normal, the ridge
    between them is (d + b + 1) / 2 high (exactly d when the pixel is on it); width = 2 x ridge - 1."""
    n = len(points)
    span = min(3, n - 1)
    if span < 1:
        d = distance[points[:, 1].astype(int), points[:, 0].astype(int)]
        return np.maximum(2.0 * d - 1.0, 1.0)
    ahead = points[np.minimum(np.arange(n) + span, n - 1)]
    behind = points[np.maximum(np.arange(n) - span, 0)]
    tangent = ahead - behind
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    d = distance[points[:, 1].astype(int), points[:, 0].astype(int)]
    side = np.maximum(_bilinear(distance, points[:, 0] + normal[:, 0], points[:, 1] + normal[:, 1]),
                      _bilinear(distance, points[:, 0] - normal[:, 0], points[:, 1] - normal[:, 1]))
    ridge = np.where(side > d - 1.0, (d + np.minimum(side, d) + 1.0) / 2.0, d)
    return np.maximum(2.0 * ridge - 1.0, 1.0)


def _away_from_junctions(graph: _Graph, chain: list[int], distance: np.ndarray) -> np.ndarray:
    """Which pixels of a chain measure its own width: not those closer to a branch point at either end than the
    crack's half-width there plus one pixel (they read the combined width of the cracks that meet), unless that
    leaves none."""
    pts = graph.points(chain)
    keep = np.ones(len(chain), bool)
    for end in (chain[0], chain[-1]):
        if graph.degree[end] >= 3:
            reach = distance[graph.ys[end], graph.xs[end]] + 1.0
            keep &= np.hypot(pts[:, 0] - graph.xs[end], pts[:, 1] - graph.ys[end]) > reach
    return keep if keep.any() else np.ones(len(chain), bool)


def _prune_spurs(skel: np.ndarray, distance: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Remove free-end-to-junction branches shorter than the crack's width at the junction (rule 1)."""
    skel = skel.copy()
    for _ in range(rounds):
        graph = _Graph(skel)
        removed = False
        for chain in graph.branches():
            a, b = chain[0], chain[-1]
            da, db = graph.degree[a], graph.degree[b]
            if not ((da == 1 and db >= 3) or (db == 1 and da >= 3)):
                continue
            junction = b if db >= 3 else a
            length = float(np.linalg.norm(np.diff(graph.points(chain), axis=0), axis=1).sum())
            if length < 2.0 * distance[graph.ys[junction], graph.xs[junction]]:
                drop = [i for i in chain if i != junction]
                skel[graph.ys[drop], graph.xs[drop]] = 0
                removed = True
        if not removed:
            break
    return skel


class _Union:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _count_junctions(branches: list[tuple[float, int, int]], mean_width: float) -> int:
    """Branch points where at least three branches of ``BRANCH_WIDTHS`` mean widths or more meet (rule 6).
    ``branches``: (length, clump at one end, clump at the other; 0 = a free end). Clumps joined by a shorter branch
    are one branch point (thinning splits a wide crossing into two nearby ones)."""
    long_enough = max(BRANCH_WIDTHS * mean_width, 2.0)
    clumps = {c for _, a, b in branches for c in (a, b) if c}
    if not clumps:
        return 0
    union = _Union(max(clumps) + 1)
    for length, a, b in branches:
        if a and b and length < long_enough:
            union.union(a, b)
    arms: dict[int, int] = {}
    for length, a, b in branches:
        if length >= long_enough:
            for c in {union.find(x) for x in (a, b) if x}:
                arms[c] = arms.get(c, 0) + 1
    return sum(1 for n in arms.values() if n >= 3)


def _count_cells(region: np.ndarray, min_area: float = MIN_CELL_PX) -> int:
    """Holes of at least ``min_area`` pixels in a crack's own mask (a crop)."""
    contours, hierarchy = cv2.findContours(np.pad(region, 1).astype(np.uint8), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return 0
    return sum(1 for c, h in zip(contours, hierarchy[0]) if h[3] >= 0 and cv2.contourArea(c) >= min_area)


def crack_type(orientation_deg: float, travel: str = "vertical", junctions: int = 0, cells: int = 0) -> str:
    """Rule 6: network, or longitudinal / transverse / diagonal by the angle to the direction of travel."""
    if cells >= NETWORK_CELLS or junctions >= NETWORK_JUNCTIONS:
        return "network"
    travel_deg = 90.0 if travel == "vertical" else 0.0
    off = abs(orientation_deg - travel_deg) % 180.0
    off = min(off, 180.0 - off)
    if off <= LONGITUDINAL_DEG:
        return "longitudinal"
    if off >= TRANSVERSE_DEG:
        return "transverse"
    return "diagonal"


def measure_cracks(mask: np.ndarray, settings: MeasureSettings | None = None) -> Measurement:
    """Split a boolean HxW mask into cracks and measure each (the rules above); cracks sorted longest first and
    numbered from 1."""
    settings = settings or MeasureSettings()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MeasureError(f"expected a 2-D mask, got shape {mask.shape}")
    mask = mask.astype(bool)
    h, w = mask.shape
    count, pieces, boxes, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    result = Measurement([], settings, (h, w), int(np.count_nonzero(mask)), pieces.astype(np.int32))
    if count <= 1:
        return result
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2,
                                     cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    skel = _prune_spurs(skeleton(mask), distance)
    graph = _Graph(skel)
    piece_of = pieces[graph.ys, graph.xs]

    # rule 2: bridge gaps from free ends (and single-pixel pieces) to other pieces
    union = _Union(count)
    gap = settings.gap_px
    r = int(math.ceil(gap))
    for end in np.flatnonzero(graph.degree <= 1) if r > 0 else ():
        y, x, own = graph.ys[end], graph.xs[end], piece_of[end]
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        window = pieces[y0:y1, x0:x1]
        other = (window > 0) & (window != own)
        if not other.any():
            continue
        oy, ox = np.nonzero(other)
        d2 = (oy + y0 - y) ** 2 + (ox + x0 - x) ** 2
        for label in np.unique(window[other]):
            sel = window[oy, ox] == label
            k = np.argmin(np.where(sel, d2, np.iinfo(np.int64).max))
            if d2[k] <= gap * gap:
                union.union(int(own), int(label))
                result.bridges.append(((int(x), int(y)), (int(ox[k] + x0), int(oy[k] + y0))))

    groups: dict[int, list[int]] = {}
    for label in range(1, count):
        groups.setdefault(union.find(label), []).append(label)
    branch_of_piece: dict[int, list[list[int]]] = {}
    for chain in graph.branches():
        branch_of_piece.setdefault(int(piece_of[chain[0]]), []).append(chain)
    bridged = np.zeros((h, w), np.uint8)
    for (x0, y0), (x1, y1) in result.bridges:
        cv2.line(bridged, (x0, y0), (x1, y1), 1, 1)

    # skeleton pixels by group, without one pass over all pixels per group
    group_ids = {root: i for i, root in enumerate(groups)}
    group_of_label = np.zeros(count, np.int64)
    for root, labels in groups.items():
        group_of_label[labels] = group_ids[root]
    order = np.argsort(group_of_label[piece_of], kind="stable")
    splits = np.searchsorted(group_of_label[piece_of][order], np.arange(1, len(groups)))
    members_of = np.split(order, splits)
    cracks = []
    for root, labels in groups.items():
        length, chord_sum, widths, branches = 0.0, 0j, [], []
        for label in labels:
            for chain in branch_of_piece.get(label, []):
                widths.append(_chain_widths(graph.points(chain), distance)[_away_from_junctions(graph, chain,
                                                                                                  distance)])
                pts = _resampled(graph.path(chain))
                d = np.diff(pts, axis=0)
                seg = np.hypot(d[:, 0], d[:, 1])
                length += float(seg.sum())
                branches.append((float(seg.sum()), int(graph.clump[chain[0]]), int(graph.clump[chain[-1]])))
                # doubled-angle sum, y up: a chord of length L at angle a adds L e^{2ia}
                chord_sum += complex(np.sum(seg * np.exp(2j * np.arctan2(-d[:, 1], d[:, 0]))))
        if length < settings.min_length_px:
            continue
        members = members_of[group_ids[root]]
        widths = np.concatenate(widths) if widths and sum(len(w) for w in widths) else \
            np.maximum(2.0 * distance[graph.ys[members], graph.xs[members]] - 1.0, 1.0)
        x0 = min(boxes[label][0] for label in labels)
        y0 = min(boxes[label][1] for label in labels)
        x1 = max(boxes[label][0] + boxes[label][2] for label in labels)
        y1 = max(boxes[label][1] + boxes[label][3] for label in labels)
        crop = np.isin(pieces[y0:y1, x0:x1], labels) | bridged[y0:y1, x0:x1].astype(bool)
        mean_width = float(widths.mean())
        junctions = _count_junctions(branches, mean_width)
        cells = _count_cells(crop, max(MIN_CELL_PX, (CELL_WIDTHS * mean_width) ** 2))
        orientation = round(math.degrees(0.5 * np.angle(chord_sum)), 2) % 180.0 if chord_sum else 0.0
        if settings.graded:
            severity, level = settings.severity.grade(mean_width * settings.scale)
        else:
            severity, level = NO_SEVERITY, 0
        cracks.append(Crack(0, length, mean_width, float(widths.max()), float(np.percentile(widths, 90)),
                            int(sum(boxes[label][4] for label in labels)), orientation, (int(x0), int(y0), int(x1 - x0),
                            int(y1 - y0)), junctions, cells, crack_type(orientation, settings.travel, junctions, cells),
                            severity, level, tuple(int(label) for label in labels)))
    cracks.sort(key=lambda c: (-c.length_px, c.bbox[1], c.bbox[0]))
    for i, crack in enumerate(cracks, 1):
        crack.id = i
    result.cracks = cracks
    return result


def frame_stats(mask: np.ndarray, settings: MeasureSettings) -> dict:
    """``crack_stats`` plus, per frame, the cracks measured in the output unit and the worst severity (camera.py
    --mm_per_px): ``cracks``, ``length_mm``, ``mean_width_mm`` (length-weighted), ``max_width_mm``,
    ``worst_severity`` (a name, "" without cracks) and ``severity_level`` (its level, 0 without)."""
    stats: dict = dict(crack_stats(mask))
    m = measure_cracks(mask, settings)
    s, u = settings.scale, settings.unit
    total = sum(c.length_px for c in m.cracks)
    stats["cracks"] = len(m.cracks)
    stats[f"length_{u}"] = round(total * s, 2)
    weighted = sum(c.mean_width_px * c.length_px for c in m.cracks)
    stats[f"mean_width_{u}"] = round(weighted / total * s, 2) if total else 0.0
    stats[f"max_width_{u}"] = round(max((c.max_width_px for c in m.cracks), default=0.0) * s, 2)
    worst = m.worst()
    stats["worst_severity"] = worst.severity if worst else ""
    stats["severity_level"] = worst.severity_level if worst else 0
    return stats


def frame_measure(settings: MeasureSettings, native_long_side: int = 0) -> Callable[[np.ndarray], dict]:
    """``mask -> frame_stats(mask, settings)`` for camera.py's pipeline. ``native_long_side``: the longer side of the
    frames as read when they are shrunk before inference (camera.py --max_side); ``mm_per_px`` is per pixel as read,
    so each mask's scale becomes ``mm_per_px * native_long_side / its longer side``."""
    def measure(mask: np.ndarray) -> dict:
        shrunk = native_long_side and settings.mm_per_px and max(np.shape(mask)[:2]) != native_long_side
        scaled = replace(settings, mm_per_px=settings.mm_per_px * native_long_side / max(np.shape(mask)[:2])) \
            if shrunk else settings
        return frame_stats(mask, scaled)
    return measure
