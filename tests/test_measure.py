"""Crack statistics on drawn shapes of known length and width."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from crackseg.measure import crack_stats, format_stats, skeleton, skeleton_length


def band(shape, length: int, width: int, vertical: bool = False) -> np.ndarray:
    """An axis-aligned crack of exactly ``length`` x ``width`` pixels."""
    mask = np.zeros(shape, bool)
    top, left = 20, 30
    if vertical:
        mask[left:left + length, top:top + width] = True
    else:
        mask[top:top + width, left:left + length] = True
    return mask


@pytest.mark.parametrize("width", [1, 3, 5, 8])
@pytest.mark.parametrize("vertical", [False, True])
def test_straight_band_length_and_width(width, vertical):
    stats = crack_stats(band((260, 260), 180, width, vertical))
    assert stats["crack_pixels"] == 180 * width
    assert stats["crack_ratio"] == pytest.approx(180 * width / (260 * 260))
    # The skeleton stops about half a width short of each end.
    assert 180 - width - 1 <= stats["length_px"] <= 180
    assert stats["max_width_px"] == pytest.approx(width, abs=1.0)
    assert stats["components"] == 1


def test_diagonal_line_counts_sqrt2_per_step():
    mask = np.zeros((128, 128), bool)
    idx = np.arange(10, 110)
    mask[idx, idx] = True  # 100 pixels on the diagonal: 99 diagonal steps
    assert crack_stats(mask)["length_px"] == pytest.approx(99 * math.sqrt(2), abs=0.01)
    assert crack_stats(mask)["max_width_px"] == pytest.approx(1.0)


def test_thick_diagonal_line():
    mask = np.zeros((256, 256), np.uint8)
    cv2.line(mask, (30, 30), (200, 200), 1, 5)
    stats = crack_stats(mask > 0)
    true_length = math.dist((30, 30), (200, 200))
    assert true_length * 0.95 <= stats["length_px"] <= true_length * 1.03
    # cv2 draws thickness 5 as a band about 7 px wide across the line
    across = np.count_nonzero(mask[115, :])  # horizontal cut: width * sqrt(2)
    assert stats["max_width_px"] == pytest.approx(across / math.sqrt(2), abs=1.5)


def test_oblique_line_within_chain_code_bias():
    mask = np.zeros((256, 256), np.uint8)
    cv2.line(mask, (20, 50), (220, 120), 1, 3)
    true_length = math.dist((20, 50), (220, 120))
    # 1 / sqrt(2) step weights overestimate oblique digital lines by up to ~8 % (Freeman chain-code bias).
    assert true_length * 0.97 <= crack_stats(mask > 0)["length_px"] <= true_length * 1.09


def test_skeleton_is_thin_and_connected():
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, (80, 60), 40, 1, 6)
    skel = skeleton(mask > 0)
    assert skel.sum() > 0
    assert cv2.connectedComponents(skel, connectivity=8)[0] - 1 == 1
    # thin: no 2x2 block of skeleton pixels anywhere
    blocks = skel[:-1, :-1] & skel[1:, :-1] & skel[:-1, 1:] & skel[1:, 1:]
    assert not blocks.any()
    assert skeleton_length(skel) == pytest.approx(2 * math.pi * 40, rel=0.08)


def test_two_cracks_and_empty_mask():
    mask = band((200, 260), 100, 3) | band((200, 260), 60, 3, vertical=True)[:, ::-1]
    stats = crack_stats(mask)
    assert stats["components"] == 2
    assert 150 <= stats["length_px"] <= 160
    empty = crack_stats(np.zeros((50, 60), bool))
    assert empty == {"crack_ratio": 0.0, "crack_pixels": 0, "length_px": 0.0, "max_width_px": 0.0, "components": 0}
    assert "length" in format_stats(stats)


def test_rejects_non_2d_mask():
    with pytest.raises(ValueError, match="2-D"):
        crack_stats(np.zeros((4, 4, 3), bool))


# ------------------------------------------------------------------------------------------------ per crack
from crackseg.measure import (MeasureError, MeasureSettings, SEVERITY_TABLES, frame_stats,  # noqa: E402
                              measure_cracks, severity_table)

MM = MeasureSettings(mm_per_px=1.0)


def tube(shape, polylines, width: float) -> np.ndarray:
    """Every pixel whose centre lies within ``width / 2`` of the polylines (round ends): a crack of known centre line
    and width (an odd ``width`` is exactly that many pixels across an axis-aligned tube)."""
    line = np.full(shape, 255, np.uint8)
    for pts in polylines:
        cv2.polylines(line, [np.round(np.asarray(pts)).astype(np.int32)], False, 0, 1)
    distance = cv2.distanceTransform(line, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= width / 2


def polyline_length(pts) -> float:
    pts = np.asarray(pts, float)
    return float(np.hypot(*np.diff(pts, axis=0).T).sum())


def segment(angle_deg: float, length: float, centre=(200, 200)):
    """End points of a segment at ``angle_deg`` counter-clockwise from the x axis (image y points down)."""
    a = math.radians(angle_deg)
    dx, dy = length / 2 * math.cos(a), -length / 2 * math.sin(a)
    return [(centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)]


@pytest.mark.parametrize("angle", [0, 10, 22.5, 45, 67.5, 80, 90, 112.5, 135, 157.5])  # none on a type boundary
@pytest.mark.parametrize("width", [1, 3, 5, 9])
def test_straight_crack_length_width_orientation(angle, width):
    pts = segment(angle, 280)
    (crack,) = measure_cracks(tube((400, 400), [pts], width), MM).cracks
    assert crack.length_px == pytest.approx(polyline_length(pts), rel=0.03)
    assert crack.mean_width_px == pytest.approx(width, abs=1.0)
    assert crack.max_width_px == pytest.approx(width, abs=1.0)
    assert crack.p90_width_px == pytest.approx(width, abs=1.0)
    off = abs(crack.orientation_deg - angle) % 180
    assert min(off, 180 - off) <= 1.0
    assert crack.type == {0: "transverse", 10: "transverse", 22.5: "transverse", 45: "diagonal", 67.5: "longitudinal",
                          80: "longitudinal", 90: "longitudinal", 112.5: "longitudinal", 135: "diagonal",
                          157.5: "transverse"}[angle]
    assert crack.junctions == 0 and crack.cells == 0


@pytest.mark.parametrize("angle, travel, expected", [
    (90, "vertical", "longitudinal"), (0, "vertical", "transverse"), (45, "vertical", "diagonal"),
    (135, "vertical", "diagonal"), (0, "horizontal", "longitudinal"), (90, "horizontal", "transverse"),
    (20, "vertical", "transverse"), (70, "vertical", "longitudinal")])
def test_type_follows_the_direction_of_travel(angle, travel, expected):
    mask = tube((400, 400), [segment(angle, 250)], 3)
    (crack,) = measure_cracks(mask, MeasureSettings(mm_per_px=1.0, travel=travel)).cracks
    assert crack.type == expected


def test_curved_cracks():
    t = np.radians(np.linspace(200, 340, 300))
    arc = np.stack([200 + 150 * np.cos(t), 250 + 150 * np.sin(t)], 1)   # bottom of a circle: runs across the image
    xs = np.arange(30.0, 371.0)
    sine = np.stack([200 + 40 * np.sin(xs / 40.0), xs], 1)              # wavy, runs up the image
    for pts, width, kind in ((arc, 5, "transverse"), (sine, 7, "longitudinal")):
        (crack,) = measure_cracks(tube((420, 420), [pts], width), MM).cracks
        assert crack.length_px == pytest.approx(polyline_length(pts), rel=0.03)
        assert crack.mean_width_px == pytest.approx(width, abs=1.0)
        assert crack.type == kind


def test_branching_crack_is_one_crack_with_its_branches():
    main, left, right = [(200, 30), (200, 370)], [(200, 150), (270, 80)], [(200, 260), (140, 200)]
    mask = tube((400, 400), [main], 7) | tube((400, 400), [left, right], 3)
    (crack,) = measure_cracks(mask, MM).cracks
    truth = polyline_length(main) + polyline_length(left) + polyline_length(right)
    assert crack.length_px == pytest.approx(truth, rel=0.03)
    assert crack.junctions == 2 and crack.cells == 0
    assert crack.type == "longitudinal"          # the main stem runs with the traffic
    assert crack.max_width_px == pytest.approx(7, abs=1.0)
    assert 3 < crack.mean_width_px < 7           # length-weighted between the branches' 3 and the stem's 7


def test_block_pattern_is_a_network():
    lines = [[(x, 40), (x, 360)] for x in range(60, 361, 75)] + [[(40, y), (380, y)] for y in range(50, 351, 75)]
    mask = tube((400, 420), lines, 3)
    (crack,) = measure_cracks(mask, MM).cracks
    assert crack.type == "network"
    assert crack.cells == 16                     # 4 x 4 blocks between 5 x 5 lines
    assert crack.junctions >= 16
    assert crack.length_px == pytest.approx(sum(polyline_length(p) for p in lines), rel=0.03)
    assert crack.mean_width_px == pytest.approx(3, abs=1.0)


def test_gap_bridging_rule():
    near = tube((300, 400), [[(40, 150), (180, 150)], [(187, 150), (360, 150)]], 3)   # 4 px between the pieces
    (crack,) = measure_cracks(near, MM).cracks
    assert crack.length_px == pytest.approx(140 + 173, rel=0.03)   # the gap itself is not crack
    assert crack.area_px == np.count_nonzero(near)
    far = tube((300, 400), [[(40, 150), (180, 150)], [(200, 150), (360, 150)]], 3)     # 17 px
    assert len(measure_cracks(far, MM).cracks) == 2
    assert len(measure_cracks(far, MeasureSettings(mm_per_px=1.0, gap_px=20)).cracks) == 1
    assert len(measure_cracks(near, MeasureSettings(mm_per_px=1.0, gap_px=0)).cracks) == 2


def test_cracks_numbered_longest_first_specks_dropped_bbox_and_area():
    mask = tube((300, 300), [[(20, 50), (120, 50)]], 3) | tube((300, 300), [[(50, 100), (50, 280)]], 5)
    mask[250:253, 250:253] = True                                     # a speck: in the ratio, not a crack
    m = measure_cracks(mask, MM)
    assert [c.id for c in m.cracks] == [1, 2]
    long, short = m.cracks
    assert long.type == "longitudinal" and short.type == "transverse"
    assert long.bbox == (48, 98, 5, 185) and short.bbox == (19, 49, 103, 3)
    assert long.area_px == np.count_nonzero(m.crack_mask(long))
    assert m.crack_pixels == np.count_nonzero(mask)
    assert m.crack_ratio == pytest.approx(np.count_nonzero(mask) / mask.size)


@pytest.mark.parametrize("mm_per_px, table, expected", [
    (1.0, "ltpp", "low"), (1.2, "ltpp", "low"), (2.0, "ltpp", "moderate"), (3.7, "ltpp", "moderate"),
    (4.0, "ltpp", "high"), (1.9, "astm", "low"), (2.0, "astm", "medium"), (15.0, "astm", "medium"),
    (16.0, "astm", "high"), (1.0, "4,8", "moderate"), (1.0, "2,3,4", "S4")])
def test_severity_from_mean_width_in_mm(mm_per_px, table, expected):
    mask = tube((300, 300), [[(150, 20), (150, 280)]], 5)                # 5 px wide
    (crack,) = measure_cracks(mask, MeasureSettings(mm_per_px=mm_per_px, severity=table)).cracks
    assert crack.mean_width_px == pytest.approx(5, abs=0.2)
    assert crack.severity == expected
    row = crack.row(MeasureSettings(mm_per_px=mm_per_px, severity=table))
    assert row["mean_width_mm"] == pytest.approx(crack.mean_width_px * mm_per_px, abs=0.01)
    assert row["length_mm"] == pytest.approx(crack.length_px * mm_per_px, abs=0.01)
    assert row["area_mm2"] == pytest.approx(crack.area_px * mm_per_px ** 2, abs=0.01)


def test_severity_tables_at_their_edges():
    ltpp, astm = SEVERITY_TABLES["ltpp"], SEVERITY_TABLES["astm"]
    assert [ltpp.grade(w)[0] for w in (6.0, 6.01, 19.0, 19.01)] == ["low", "moderate", "moderate", "high"]
    assert [astm.grade(w)[0] for w in (9.99, 10.0, 76.0, 76.01)] == ["low", "medium", "medium", "high"]
    assert severity_table("3, 10").names == ("low", "moderate", "high")
    for bad in ("nope", "10,3", "0,5", ""):
        with pytest.raises(MeasureError):
            severity_table(bad)


def test_without_a_scale_everything_is_pixels_and_ungraded():
    mask = tube((300, 300), [[(150, 20), (150, 280)]], 5)
    settings = MeasureSettings()
    m = measure_cracks(mask, settings)
    assert settings.unit == "px" and m.cracks[0].severity == "n/a" and m.cracks[0].severity_level == 0
    row = m.rows()[0]
    assert "length_px" in row and "area_px2" in row and not any(k.endswith("_mm") for k in row)
    assert m.summary()["n/a_count"] == 1
    # custom edges grade pixel widths
    assert measure_cracks(mask, MeasureSettings(severity="2,4")).cracks[0].severity == "high"


@pytest.mark.parametrize("kwargs", [{"mm_per_px": 0}, {"mm_per_px": -1.0}, {"travel": "diagonal"},
                                    {"severity": "iso"}, {"gap_px": -1}])
def test_bad_settings_raise_measure_error(kwargs):
    with pytest.raises(MeasureError):
        MeasureSettings(**kwargs)
    assert issubclass(MeasureError, ValueError)


def test_empty_mask_and_bad_shape():
    m = measure_cracks(np.zeros((50, 60), bool), MM)
    assert m.cracks == [] and m.crack_ratio == 0.0 and m.worst() is None
    with pytest.raises(MeasureError, match="2-D"):
        measure_cracks(np.zeros((4, 4, 3), bool))


def test_frame_stats_in_mm_with_worst_severity():
    mask = tube((300, 300), [[(100, 20), (100, 280)]], 5) | tube((300, 300), [[(200, 20), (200, 280)]], 9)
    stats = frame_stats(mask, MeasureSettings(mm_per_px=2.0))
    assert stats["cracks"] == 2
    assert stats["length_mm"] == pytest.approx(2 * 2 * 260, rel=0.03)
    assert stats["max_width_mm"] == pytest.approx(18, abs=2.0)
    assert stats["worst_severity"] == "moderate" and stats["severity_level"] == 2    # 18 mm: moderate (6-19)
    assert stats["crack_ratio"] == crack_stats(mask)["crack_ratio"]
    line = format_stats(stats)
    assert "mm" in line and "worst moderate" in line and "px" not in line
    none = frame_stats(np.zeros((40, 40), bool), MeasureSettings(mm_per_px=2.0))
    assert none["cracks"] == 0 and none["severity_level"] == 0 and "worst none" in format_stats(none)


def test_frame_measure_scales_shrunk_frames_back_to_pixels_as_read():
    from crackseg.measure import frame_measure

    full = tube((400, 400), [[(200, 20), (200, 380)]], 9)
    half = cv2.resize(full.astype(np.uint8), (200, 200), interpolation=cv2.INTER_NEAREST) > 0
    as_read = frame_measure(MeasureSettings(mm_per_px=1.0))(full)
    shrunk = frame_measure(MeasureSettings(mm_per_px=1.0), native_long_side=400)(half)   # camera.py --max_side=200
    assert shrunk["length_mm"] == pytest.approx(as_read["length_mm"], rel=0.03)
    assert shrunk["max_width_mm"] == pytest.approx(as_read["max_width_mm"], abs=2.0)


def test_camera_pipeline_streams_millimetres_and_the_worst_severity():
    """camera.py --mm_per_px: FramePipeline(measure=frame_measure(...)) -> overlay line and stream stats in mm."""
    from crackseg.engines import Engine
    from crackseg.measure import STREAM_KEYS, frame_measure
    from crackseg.pipeline import FramePipeline

    class DarkEngine(Engine):
        backend = "fake"

        def _infer(self, batch):
            return 1.0 - (batch.mean(axis=-1, keepdims=True) + 1.0) / 2.0

    frame = np.full((120, 160, 3), 200, np.uint8)
    frame[tube((120, 160), [[(80, 10), (80, 110)]], 5)] = 0          # 5 px wide at 4 mm / px: 20 mm, high
    headers = []
    pipeline = FramePipeline(DarkEngine("dark", 0.5), send=lambda h, jpeg: headers.append(h), overlap=False,
                             measure=frame_measure(MeasureSettings(mm_per_px=4.0)))
    (result,) = list(pipeline.results([("f0", frame)]))
    assert result.stats["worst_severity"] == "high"
    stats = headers[0]["stats"]
    assert stats["severity_level"] == 3 and stats["cracks"] == 1
    assert stats["length_mm"] == pytest.approx(400, rel=0.05)
    assert set(stats) <= set(STREAM_KEYS) | {"fps", "infer_ms"}
    # the default stays today's pixel statistics
    (plain,) = list(FramePipeline(DarkEngine("dark", 0.5), send=lambda h, j: headers.append(h),
                                  overlap=False).results([("f0", frame)]))
    assert set(headers[-1]["stats"]) == {"crack_ratio", "length_px", "max_width_px", "components", "fps", "infer_ms"}
    assert "length_mm" not in plain.stats


def test_a_blotchy_single_crack_is_not_a_network():
    """A model's mask of one crack: bulges, pinholes and short side shoots, but no blocks between cracks."""
    mask = tube((400, 200), [[(100, 20), (100, 380)]], 5)
    for k, y in enumerate(range(50, 360, 40)):
        cv2.circle(mask.view(np.uint8), (100 + (4 if k % 2 else -4), y), 9, 1, -1)          # bulges
        cv2.line(mask.view(np.uint8), (100, y + 15), (100 + (14 if k % 2 else -14), y + 22), 1, 3)  # side shoots
    mask[118:122, 99:102] = False                                                        # a pinhole
    (crack,) = measure_cracks(mask, MM).cracks
    assert crack.type == "longitudinal"
    assert crack.cells == 0 and crack.junctions < 5


def test_thinning_matches_zhang_suen_written_out_per_pixel():
    """The table-driven thinning against the textbook rule, pixel by pixel, on random blobs and drawn cracks."""
    from crackseg.measure import _zhang_suen

    def reference(img):
        img = np.pad(img.astype(np.uint8), 1)
        while True:
            changed = False
            for step in (0, 1):
                delete = []
                for y, x in zip(*np.nonzero(img)):
                    p = [img[y - 1, x], img[y - 1, x + 1], img[y, x + 1], img[y + 1, x + 1], img[y + 1, x],
                         img[y + 1, x - 1], img[y, x - 1], img[y - 1, x - 1]]            # P2 .. P9
                    p2, p3, p4, p5, p6, p7, p8, p9 = p
                    transitions = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
                    cond = (p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0) if step == 0 else \
                        (p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0)
                    if 2 <= sum(p) <= 6 and transitions == 1 and cond:
                        delete.append((y, x))
                for y, x in delete:
                    img[y, x] = 0
                changed |= bool(delete)
            if not changed:
                return img[1:-1, 1:-1]

    rng = np.random.default_rng(4)
    for i in range(6):
        if i % 2:
            mask = cv2.GaussianBlur(rng.random((40, 56)).astype(np.float32), (0, 0), 2) > 0.52
        else:
            mask = tube((40, 56), [[(3, 5 + 3 * i), (50, 30 - 2 * i)]], 1 + 2 * i)
        assert np.array_equal(_zhang_suen(mask), reference(mask)), i
