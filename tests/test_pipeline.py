"""crackseg.pipeline: camera.py's per-frame pipeline, overlapped vs sequential (order, results, errors, threads),
and camera.py's --overlap flag end to end."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import closing

import cv2
import numpy as np
import pytest

from conftest import REPO
from crackseg.engines import Engine, EngineError
from crackseg.pipeline import HELPER_THREAD_NAME, FramePipeline, shrink
from crackseg.sources import OverlaySaver, SourceError
from crackseg.stream import decode_message, encode_message


class DarkPixelEngine(Engine):
    """Deterministic stand-in for a model: crack probability = darkness; a little sleep stands in for inference so
    the helper thread really runs alongside it."""

    backend = "fake"

    def __init__(self, threshold: float = 0.6, fail_on_call: int | None = None):
        super().__init__("dark", threshold)
        self.calls, self.fail_on_call = 0, fail_on_call

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise EngineError("dark: inference failed on purpose")
        time.sleep(0.005)
        return 1.0 - (batch.mean(axis=-1, keepdims=True) + 1.0) / 2.0


def pavement_frames(count: int, h: int = 48, w: int = 64) -> list[tuple[str, np.ndarray]]:
    from datasets.synthetic import sample

    rng = np.random.default_rng(7)
    return [(f"{i:04d}", sample(rng, h, w)[0]) for i in range(count)]


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(HELPER_THREAD_NAME)]


def run_pipeline(overlap: bool, frames, tmp_path, **kwargs) -> tuple[list, list[dict]]:
    """All results and the decoded headers that reached ``send``, in the order they were sent."""
    headers: list[dict] = []

    def send(header: dict, jpeg: bytes) -> None:
        time.sleep(0.003 * (header["frame"] % 3))  # uneven post-processing must not reorder anything
        headers.append(decode_message(encode_message(header, jpeg))[0])

    saver = OverlaySaver(str(tmp_path / ("overlapped" if overlap else "sequential")), 0)
    pipeline = FramePipeline(DarkPixelEngine(), saver=saver, send=send, device="cam1", overlap=overlap, **kwargs)
    with closing(pipeline.results(frames)) as results:
        return list(results), headers


def test_overlapped_matches_sequential_in_order(tmp_path):
    frames = pavement_frames(7)
    sequential, sent_sequential = run_pipeline(False, frames, tmp_path)
    overlapped, sent_overlapped = run_pipeline(True, frames, tmp_path)
    assert [r.name for r in overlapped] == [r.name for r in sequential] == [name for name, _ in frames]
    assert [r.index for r in overlapped] == list(range(7))
    for a, b in zip(sequential, overlapped):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.stats == b.stats and a.overlay.shape == b.overlay.shape
    assert any(r.stats["crack_ratio"] > 0 for r in overlapped)  # the fake engine finds the synthetic cracks
    assert [h["frame"] for h in sent_overlapped] == [h["frame"] for h in sent_sequential] == list(range(7))
    assert all(h["device"] == "cam1" and h["model"] == "dark" for h in sent_overlapped)
    for mode in ("sequential", "overlapped"):
        assert sorted(p.stem for p in (tmp_path / mode).iterdir()) == [name for name, _ in frames]
    assert not helper_threads()


def test_throughput_mode_matches_sequential_in_order(tmp_path, tiny_model):
    frames = pavement_frames(7)
    sequential, sent_sequential = run_pipeline(False, frames, tmp_path)
    many, sent_many = run_pipeline(False, frames, tmp_path / "many", throughput=True)  # Engine.predict_many default
    assert [r.name for r in many] == [name for name, _ in frames] and [r.index for r in many] == list(range(7))
    for a, b in zip(sequential, many):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.stats == b.stats
    assert [h["frame"] for h in sent_many] == list(range(7)) and not helper_threads()

    from crackseg.engines import open_engine

    engine = open_engine(str(tiny_model["onnx"]), backend="openvino")  # asynchronous requests in flight
    mixed = pavement_frames(3) + pavement_frames(2, 40, 56)
    masks = {}
    for throughput in (False, True):
        pipeline = FramePipeline(engine, overlap=True, throughput=throughput)
        with closing(pipeline.results(mixed)) as results:
            masks[throughput] = [r.mask for r in results]
    for a, b in zip(masks[False], masks[True]):
        np.testing.assert_array_equal(a, b)
    pipeline = FramePipeline(engine, throughput=True)  # a consumer that stops early leaves nothing running
    with closing(pipeline.results(mixed)) as results:
        assert next(results).index == 0
    assert not helper_threads()


def test_max_side_shrinks_before_inference(tmp_path):
    results, headers = run_pipeline(True, pavement_frames(2, 60, 100), tmp_path, max_side=50)
    assert all(r.mask.shape == (30, 50) and r.overlay.shape == (30, 50, 3) for r in results)
    assert (headers[0]["width"], headers[0]["height"]) == (50, 30)
    assert shrink(np.zeros((20, 10, 3), np.uint8), 50).shape == (20, 10, 3)


@pytest.mark.parametrize("overlap", [False, True])
def test_post_processing_error_propagates_and_the_helper_stops(overlap, tmp_path):
    class FailingSaver(OverlaySaver):
        def write(self, name: str, image: np.ndarray) -> None:
            if name == "0002":
                raise SourceError("disk full (on purpose)")
            super().write(name, image)

    seen = []
    pipeline = FramePipeline(DarkPixelEngine(), saver=FailingSaver(str(tmp_path), 0), overlap=overlap)
    with pytest.raises(SourceError, match="disk full"):
        with closing(pipeline.results(pavement_frames(6))) as results:
            for result in results:
                seen.append(result.name)
    assert seen == ["0000", "0001"]
    assert not helper_threads()


@pytest.mark.parametrize("overlap", [False, True])
def test_inference_and_source_errors_propagate(overlap):
    pipeline = FramePipeline(DarkPixelEngine(fail_on_call=3), overlap=overlap)
    with pytest.raises(EngineError, match="on purpose"):
        list(pipeline.results(pavement_frames(5)))

    def broken_source():
        yield from pavement_frames(2)
        raise SourceError("camera unplugged (on purpose)")

    with pytest.raises(SourceError, match="unplugged"):
        list(FramePipeline(DarkPixelEngine(), overlap=overlap).results(broken_source()))
    assert not helper_threads()


def test_a_consumer_that_stops_early_gets_nothing_unseen_sent():
    sent: list[int] = []
    pipeline = FramePipeline(DarkPixelEngine(), send=lambda header, jpeg: sent.append(header["frame"]), overlap=True)
    with closing(pipeline.results(pavement_frames(10))) as results:
        for result in results:
            if result.index == 2:
                break  # like closing camera.py's window
    assert sent == [0, 1, 2]
    assert not helper_threads()


def test_camera_sequential_and_overlapped_save_the_same_overlays(media_folder, tiny_model, tmp_path):
    for mode in ("--overlap", "--no-overlap"):
        out = tmp_path / mode.strip("-")
        done = subprocess.run([sys.executable, "camera.py", f"--source={media_folder}", f"--model={tiny_model['onnx']}",
                               "--headless", f"--save={out}", "--max_side=48", mode],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "done: 5 frames" in done.stdout and "end of source" in done.stdout
        assert sorted(p.name for p in out.iterdir()) == [f"{i:04d}.jpg" for i in range(5)]
        assert all(max(cv2.imread(str(p)).shape[:2]) == 48 for p in out.iterdir())


@pytest.fixture
def media_folder(tmp_path):
    from datasets.synthetic import make_dataset

    return make_dataset(tmp_path / "media", 5, (64, 96), seed=3) / "images"


def test_camera_modes_script_runs_each_mode_on_an_interleaved_folder(tmp_path, tiny_model):
    """scripts/camera_modes.py: camera.py once per --throughput mode on links to the listed images, datasets taken
    in turn, FPS from camera.py's own ``done:`` line into the JSON; a listed image that is missing is one line."""
    import json

    for name in ("A", "B"):
        (tmp_path / name).mkdir()
    lines = []
    for i, (name, frame) in enumerate(pavement_frames(5)):
        part = "A" if i < 3 else "B"
        cv2.imwrite(str(tmp_path / part / f"{name}.png"), frame)
        lines.append(f"{part}/{name}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "modes.json"
    cmd = [sys.executable, str(REPO / "scripts" / "camera_modes.py"), f"--model={tiny_model['onnx']}",
           f"--data={tmp_path}", f"--subset={tmp_path / 'list.txt'}", "--images=4", "--rounds=1",
           f"--json_out={out}", "--precision=fp32"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"off", "on", "auto"} and result["images"] == 4
    assert result["entries"] == ["A/0000.png", "B/0003.png", "A/0001.png", "B/0004.png"]
    assert all(run["frames"] == 4 and run["fps"] > 0 for runs in result["runs"].values() for run in runs)
    assert "cores" in result["machine"]
    (tmp_path / "A" / "0001.png").unlink()
    failed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "0001.png: listed in" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1


def test_camera_refuses_an_unknown_throughput_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "camera.py", f"--source={tmp_path}", "--throughput=yes", "--headless"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --throughput=yes: expected auto, on or off"
