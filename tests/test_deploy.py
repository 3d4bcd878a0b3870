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
import socket
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

    def __init__(self, script: str, *args: str, preexec_fn=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
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
    script = Script("PC.py", f"--bind=tcp://127.0.0.1:{port}", "--headless", "--max_seconds=120", "--http=", *args)
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
    done = run_blocked(["PC.py", f"--bind=tcp://127.0.0.1:{free_port()}", "--headless", "--max_seconds=0.5",
                        "--http=127.0.0.1:0"],
                       ("tensorflow", "keras", "model", "tf2onnx", "onnx", "onnxruntime", "scipy"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout and "done: 0 valid frames" in done.stdout


def test_camera_on_onnx_runs_without_tensorflow(media, tiny_model):
    done = run_blocked(["camera.py", f"--source={media['images']}", f"--model={tiny_model['onnx']}", "--headless",
                        "--max_frames=2"], ("tensorflow", "keras", "model", "tf2onnx"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LEAKED []" in done.stdout and "done: 2 frames" in done.stdout


# ---------------------------------------------------------------------------------------------- hardening
def test_two_runs_of_one_device_never_overwrite_saved_frames(procs, media, tiny_model, tmp_path):
    port, out = free_port(), tmp_path / "received"
    receiver = pc(procs, port, f"--save={out}", f"--max_frames={2 * FRAMES}")
    for _ in range(2):  # the same device twice: frame numbers restart at 0
        rc, stdout, stderr = camera(procs, media["short"], tiny_model["onnx"], f"--send=tcp://127.0.0.1:{port}",
                                    "--device=cam1", "--quiet").finish()
        assert rc == 0, stdout + stderr
    rc, pc_out, pc_err = receiver.finish()
    assert rc == 0 and f"done: {2 * FRAMES} valid frames" in pc_out, pc_out + pc_err
    headers = read_headers(out)
    assert sorted(h["frame"] for h in headers) == sorted(list(range(FRAMES)) * 2)
    assert len({h["run"] for h in headers}) == 2
    files = sorted((out / "cam1").glob("*.jpg"))
    assert len(files) == 2 * FRAMES and {h["file"] for h in headers} == {f"cam1/{f.name}" for f in files}


def start_all(*argvs: list[str]) -> list[Script]:
    return [Script(*argv) for argv in argvs]


def test_bad_flags_and_paths_are_one_line_each(tmp_path):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    bind = f"--bind=tcp://127.0.0.1:{free_port()}"
    cases = {
        "save names a file": ["PC.py", bind, "--http=", f"--save={a_file}"],
        "save under a file": ["PC.py", bind, "--http=", f"--save={a_file}/sub"],
        "max_devices": ["PC.py", bind, "--http=", "--max_devices=0"],
        "max_pixels": ["PC.py", bind, "--http=", "--max_pixels=0"],
        "not a number": ["PC.py", bind, "--http=", "--max_pixels=lots"],
        "http shape": ["PC.py", bind, "--http=nonsense"],
        "http port": ["PC.py", bind, "--http=127.0.0.1:99999"],
        "http taken": ["PC.py", bind, f"--http=127.0.0.1:{taken.getsockname()[1]}"],
        "http host": ["PC.py", bind, "--http=256.1.1.1:8080"],
        "curve folder": ["PC.py", bind, "--http=", f"--curve={tmp_path / 'nokeys'}"],
        "curve empty": ["PC.py", bind, "--http=", f"--curve={tmp_path}"],
        "keys into a file": ["PC.py", f"--make_keys={a_file}"],
        "keys bad name": ["PC.py", f"--make_keys={tmp_path / 'k'}", "--clients=../x"],
        "bind": ["PC.py", "--bind=tcp://nowhere:what", "--http="],
    }
    try:
        scripts = dict(zip(cases, start_all(*cases.values())))
        for name, script in scripts.items():
            rc, stdout, stderr = script.finish(60)
            lines = stderr.strip().splitlines()
            assert rc != 0 and len(lines) == 1 and lines[0].startswith("error:"), (name, stdout, stderr)
            assert "Traceback" not in stdout + stderr, name
    finally:
        taken.close()


def test_pc_make_keys_adds_a_device_and_keeps_the_server_key(tmp_path):
    keys = tmp_path / "keys"
    assert Script("PC.py", f"--make_keys={keys}", "--clients=truck1").finish()[0] == 0
    server = (keys / "pc" / "server.key").read_text().split("public-key")[1]
    rc, stdout, stderr = Script("PC.py", f"--make_keys={keys}", "--clients=truck1,truck2").finish()
    assert rc == 0, stdout + stderr
    assert (keys / "pc" / "server.key").read_text().split("public-key")[1] == server
    assert (keys / "truck2" / "server.key").read_text().split("public-key")[1] == server
    assert sorted(p.name for p in (keys / "pc" / "authorized_clients").iterdir()) == ["truck1.key", "truck2.key"]
    assert Script("PC.py", f"--make_keys={keys}", "--clients=truck1", "--new_server_key").finish()[0] == 0
    assert (keys / "truck2" / "server.key").read_text().split("public-key")[1] != server


PIXEL_CAP = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_path('PC.py', run_name='__main__')
except SystemExit:
    pass
import cv2, numpy as np
ok, buf = cv2.imencode('.jpg', np.zeros((48, 64, 3), np.uint8))
try:
    cv2.imdecode(buf, cv2.IMREAD_COLOR)
    print('NOT CAPPED')
except cv2.error:
    print('CAPPED')
"""


def test_pc_sets_opencvs_own_pixel_cap():
    argv = ["PC.py", f"--bind=tcp://127.0.0.1:{free_port()}", "--http=", "--headless", "--max_seconds=0.2",
            "--max_pixels=1000"]
    done = subprocess.run([sys.executable, "-c", PIXEL_CAP.format(argv=argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert "CAPPED" in done.stdout and "NOT CAPPED" not in done.stdout, done.stdout + done.stderr


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def bomb_messages() -> list[tuple[str, list[bytes]]]:
    """Every kind of heavy message under PC.py's 8 MiB limit, with the reason each must get (None: accepted)."""
    import base64

    import numpy as np
    from test_stream import message_with, patch_size

    rng = np.random.default_rng(0)
    small = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()
    progressive = cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
                               [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    at = progressive.index(b"\xff\xc2")  # SOF2
    bomb = bytearray(progressive)
    bomb[at + 5:at + 9] = (30000).to_bytes(2, "big") * 2
    # the largest image PC.py decodes: 4096x4096, progressive, no chroma subsampling (largest coefficient buffers)
    big = cv2.resize(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (4096, 4096), interpolation=cv2.INTER_NEAREST)
    largest = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 90,
                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])[1].tobytes()
    assert len(largest) * 4 // 3 < 8 << 20
    header = json.dumps({"version": 1, "device": "bomber", "frame": 0, "time": time.time(), "width": 4096,
                         "height": 4096}).encode()
    return [
        ("size_mismatch", message_with(bytes(bomb), 64, 48, "bomber")),        # the probe: 30000^2 claiming 64x48
        ("pixels", message_with(patch_size(small, 16000, 16000), 16000, 16000, "bomber")),
        (None, message_with(largest, 4096, 4096, "bomber")),
        (None, message_with(largest, 4096, 4096, "bomber2")),                  # two decodes at once
        (None, message_with(patch_size(small, 4096, 4096), 4096, 4096, "bomber")),  # tiny file, full-size decode
        ("jpeg", [header, base64.b64encode(b"\xff\xd8" + rng.bytes(6_000_000))]),
    ]


def test_pc_memory_and_other_devices_under_bombs(procs, tmp_path):
    """Peak RSS of the real PC.py stays under 500 MB whatever it is sent under its size limit, and a valid frame
    from another device still arrives within 5 s of each bomb (idle: under 20 ms; that no decode, in either lane,
    holds up another device is test_stream.py's test_a_slow_decode_holds_up_only_its_own_device, by order)."""
    port, out = free_port(), tmp_path / "in"
    receiver = pc(procs, port, f"--save={out}", "--http=127.0.0.1:0")  # the page holds each device's latest JPEG
    context = zmq.Context.instance()
    bomber, good = context.socket(zmq.PUSH), context.socket(zmq.PUSH)
    for s in (bomber, good):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(f"tcp://127.0.0.1:{port}")
    latencies = []
    try:
        for i, (reason, message) in enumerate(bomb_messages()):
            bomber.send_multipart(message)
            time.sleep(0.05)  # the bomb is on the wire (loopback: ~10 ms for 8 MB) before the good frame leaves
            start = time.monotonic()
            good.send_multipart(valid_message("good", i))
            while time.monotonic() - start < 10:
                lines = (out / "headers.jsonl").read_text().splitlines() if (out / "headers.jsonl").exists() else []
                if any(json.loads(line)["device"] == "good" and json.loads(line)["frame"] == i for line in lines):
                    break
                time.sleep(0.005)
            latencies.append(time.monotonic() - start)
        deadline = time.monotonic() + 30  # the three large frames decode one after another on their own thread
        while time.monotonic() < deadline and sum('"bomber' in line for line in (
                out / "headers.jsonl").read_text().splitlines()) < 3:
            time.sleep(0.1)
        peak = vm_hwm_mb(receiver.proc.pid)
        receiver.proc.send_signal(signal.SIGTERM)
        rc, stdout, stderr = receiver.finish()
    finally:
        bomber.close()
        good.close()
    print(f"PC.py peak RSS {peak:.0f} MB; good-frame latency after each bomb (s): "
          + ", ".join(f"{t:.3f}" for t in latencies))
    assert rc == 0, stdout + stderr
    assert peak < 500, f"PC.py peak RSS {peak:.0f} MB"
    assert max(latencies) < 5.0, latencies
    assert "size_mismatch 1" in stdout and "pixels 1" in stdout and "jpeg 1" in stdout, stdout
    done = [json.loads(line) for line in (out / "headers.jsonl").read_text().splitlines()]
    assert sum(h["device"].startswith("bomber") for h in done) == 3


def test_pc_with_many_devices_and_unknown_header_keys(procs, tmp_path):
    from crackseg.stream import KNOWN_FIELDS
    from test_stream import frame_image, message_with

    port, out = free_port(), tmp_path / "in"
    receiver = pc(procs, port, f"--save={out}", "--max_devices=25", "--max_frames=30")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(f"tcp://127.0.0.1:{port}")
    jpeg = cv2.imencode(".jpg", frame_image())[1].tobytes()
    try:
        for i in range(30):
            push.send_multipart(message_with(jpeg, 64, 48, f"dev{i:03d}", 0, extra="x" * 500, run="r1"))
        for i in range(5):  # after the 5 refused ones: PC.py has counted them before it stops
            push.send_multipart(message_with(jpeg, 64, 48, f"dev{i:03d}", 1, run="r1"))
        rc, stdout, stderr = receiver.finish()
    finally:
        push.close()
    assert rc == 0, stdout + stderr
    last = stdout.strip().splitlines()[-1]
    assert "done: 30 valid frames" in last and "25 devices: 30 frames" in last and "devices 5" in last, last
    assert len(last) < 400 and "dev024:" not in last
    assert len([p for p in out.iterdir() if p.is_dir()]) == 25
    for h in read_headers(out):
        assert set(h) <= {*KNOWN_FIELDS, "file", "received"} and "extra" not in h, h
