"""End to end with real processes over loopback: camera.py -> PC.py, restarts, sources, malformed traffic,
CURVE, and the import rules (PC.py never imports TensorFlow; camera.py only for the Keras backend)."""
from __future__ import annotations

import functools
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import zmq

from conftest import REPO, free_port
from test_stream import malformed_messages, valid_message

FRAMES = 8
SIZE = (64, 96)  # H, W of the generated video


class Script:
    """A script in its own process; stdout lines are collected by a thread so waiting never blocks."""

    def __init__(self, script: str, *args: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen; output so far:\n{''.join(self.out)}{self.stderr_now()}")

    def stderr_now(self) -> str:
        return "" if self.proc.poll() is None else self.proc.stderr.read()

    def finish(self, timeout: float = 90) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"timed out; output:\n{''.join(self.out)}") from None
        time.sleep(0.05)  # let the reader thread take the last lines
        return self.proc.returncode, "".join(self.out), self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    from datasets.synthetic import make_dataset

    folder = tmp_path_factory.mktemp("media")
    make_dataset(folder / "short", FRAMES, SIZE, seed=3, video=folder / "short.mp4")
    make_dataset(folder / "long", 150, SIZE, seed=4, video=folder / "long.mp4")
    return {"short": folder / "short.mp4", "long": folder / "long.mp4", "images": folder / "short" / "images",
            "folder": folder}


@pytest.fixture
def procs():
    """Processes started by a test; any still running at its end is killed (the test has failed by then)."""
    started: list[Script] = []
    yield started
    for p in started:
        p.kill()


def pc(procs, port: int, *args: str) -> Script:
    script = Script("PC.py", f"--bind=tcp://127.0.0.1:{port}", "--headless", "--max_seconds=120", *args)
    procs.append(script)
    script.wait_for("listening on")
    return script


def camera(procs, source, model, *args: str) -> Script:
    script = Script("camera.py", f"--source={source}", f"--model={model}", "--headless", *args)
    procs.append(script)
    return script


def read_headers(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "headers.jsonl").read_text().splitlines()]


def test_camera_sends_every_frame_in_order_to_pc(procs, media, tiny_model, tmp_path):
    port, out = free_port(), tmp_path / "received"
    receiver = pc(procs, port, f"--save={out}", f"--max_frames={FRAMES}")
    sender = camera(procs, media["short"], tiny_model["onnx"], f"--send=tcp://127.0.0.1:{port}", "--device=cam-test")
    rc, stdout, stderr = sender.finish()
    assert rc == 0, stdout + stderr
    assert f"done: {FRAMES} frames" in stdout and "end of source" in stdout
    rc, pc_out, pc_err = receiver.finish()
    assert rc == 0, pc_out + pc_err
    assert f"done: {FRAMES} valid frames" in pc_out and "rejected 0" in pc_out
    headers = read_headers(out)
    assert [h["frame"] for h in headers] == list(range(FRAMES))
    for h in headers:
        assert h["version"] == 1 and h["device"] == "cam-test" and h["model"] == "tiny"
        assert (h["width"], h["height"]) == (SIZE[1], SIZE[0]) and isinstance(h["time"], float)
        assert {"crack_ratio", "length_px", "max_width_px", "fps"} <= set(h["stats"])
        image = cv2.imread(str(out / h["file"]))
        assert image is not None and image.shape[:2] == SIZE
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_stream_resumes_after_the_receiver_restarts(procs, media, tiny_model, tmp_path):
    port = free_port()
    first = pc(procs, port, f"--save={tmp_path / 'first'}", "--max_frames=4")
    sender = camera(procs, media["long"], tiny_model["onnx"], f"--send=tcp://127.0.0.1:{port}", "--device=cam1",
                    "--fps_limit=15", "--quiet")
    assert first.finish()[0] == 0
    before = [h["frame"] for h in read_headers(tmp_path / "first")]
    assert before == sorted(before) and len(before) == 4
    assert sender.proc.poll() is None, "camera.py must keep running while the PC is away"
    second = pc(procs, port, f"--save={tmp_path / 'second'}", "--max_frames=4")
    rc, pc_out, pc_err = second.finish()
    assert rc == 0, pc_out + pc_err
    after = [h["frame"] for h in read_headers(tmp_path / "second")]
    assert len(after) == 4 and after == sorted(after) and after[0] > before[-1]
    if sender.proc.poll() is None:
        sender.proc.send_signal(signal.SIGTERM)  # a clean stop: the summary is still printed
    rc, stdout, stderr = sender.finish()
    assert rc == 0, stdout + stderr
    assert "done:" in stdout and "dropped" in stdout


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_each_source_type(procs, media, tiny_model, tmp_path):
    model = tiny_model["onnx"]
    # folder of images, one of them unreadable: skipped; overlays saved under the images' names
    folder = tmp_path / "photos"
    shutil.copytree(media["images"], folder)
    (folder / "0002_broken.png").write_bytes(b"not a png")
    saved = tmp_path / "overlays"
    rc, stdout, stderr = camera(procs, folder, model, f"--save={saved}", "--max_frames=4").finish()
    assert rc == 0, stdout + stderr
    assert "done: 4 frames" in stdout and "skip:" in stdout and "0002_broken.png" in stdout
    assert sorted(p.name for p in saved.iterdir()) == ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg"]

    # video file -> overlay video
    video_out = tmp_path / "overlay.avi"
    rc, stdout, stderr = camera(procs, media["short"], model, f"--save={video_out}").finish()
    assert rc == 0, stdout + stderr
    capture, count = cv2.VideoCapture(str(video_out)), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == FRAMES

    # HTTP URL (the RTSP path is the same FFmpeg capture)
    handler = functools.partial(_QuietHandler, directory=str(media["folder"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{media['short'].name}"
        rc, stdout, stderr = camera(procs, url, model, "--max_frames=5").finish()
        assert rc == 0, stdout + stderr
        assert "source: url" in stdout and "done: 5 frames" in stdout
    finally:
        server.shutdown()
        server.server_close()

    # camera index with no camera, a refused stream, a missing path: one clear line, no traceback
    for source, message in [("97", "97: cannot open camera"),
                            (f"rtsp://127.0.0.1:{free_port()}/live", "cannot open url"),
                            (str(tmp_path / "nothing"), "not a camera index, URL, video file or image folder")]:
        rc, stdout, stderr = camera(procs, source, model).finish()
        assert rc == 1 and message in stderr and "Traceback" not in stderr, stdout + stderr


def test_pc_counts_1000_malformed_messages_and_still_takes_a_valid_one(procs, tmp_path):
    import numpy as np

    port = free_port()
    receiver = pc(procs, port, f"--save={tmp_path / 'in'}", "--max_frames=1")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.setsockopt(zmq.SNDTIMEO, 60_000)  # PC.py receives meanwhile; if it died, fail (zmq.Again) rather than hang
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        for _, frames in malformed_messages(1000, np.random.default_rng(5)):
            push.send_multipart(frames)
        push.send_multipart(valid_message("probe", 9))
        rc, stdout, stderr = receiver.finish()
    finally:
        push.close()
    assert rc == 0, stdout + stderr
    assert "done: 1 valid frames" in stdout and "rejected 1000" in stdout
    assert [h["frame"] for h in read_headers(tmp_path / "in")] == [9]


def test_curve_between_processes(procs, media, tiny_model, tmp_path):
    keys = tmp_path / "keys"
    rc, stdout, stderr = Script("PC.py", f"--make_keys={keys}", "--clients=cam1").finish()
    assert rc == 0 and (keys / "pc" / "server.key_secret").is_file() and (keys / "cam1" / "client.key_secret").is_file()
    port = free_port()
    receiver = pc(procs, port, f"--curve={keys / 'pc'}", f"--save={tmp_path / 'in'}", "--max_frames=3")
    sender = camera(procs, media["short"], tiny_model["onnx"], f"--send=tcp://127.0.0.1:{port}", "--device=cam1",
                    f"--curve={keys / 'cam1'}", "--quiet", "--fps_limit=20")
    assert sender.finish()[0] == 0
    rc, pc_out, pc_err = receiver.finish()
    assert rc == 0 and "done: 3 valid frames" in pc_out, pc_out + pc_err


BLOCK = """
import importlib.abc, runpy, sys
blocked = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in blocked:
            raise ImportError('blocked by the test: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = {argv!r}
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    print('LEAKED', [m for m in blocked if m in sys.modules], flush=True)
"""


def run_blocked(argv: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=blocked, argv=argv)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_pc_never_imports_tensorflow_or_the_model():
    done = run_blocked(["PC.py", f"--bind=tcp://127.0.0.1:{free_port()}", "--headless", "--max_seconds=0.5"],
                       ("tensorflow", "keras", "model", "tf2onnx", "onnx", "onnxruntime", "scipy"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout and "done: 0 valid frames" in done.stdout


def test_camera_on_onnx_runs_without_tensorflow(media, tiny_model):
    done = run_blocked(["camera.py", f"--source={media['images']}", f"--model={tiny_model['onnx']}", "--headless",
                        "--max_frames=2"], ("tensorflow", "keras", "model", "tf2onnx"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout and "done: 2 frames" in done.stdout
