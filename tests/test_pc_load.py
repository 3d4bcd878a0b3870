"""PC.py and its page under idle and slow clients, on real loopback sockets: a process with a lowered open-file limit
keeps receiving and saving frames while hundreds of connections idle against its page, a fresh page gets events
while many pages stall, a connection that never finishes its headers is closed, and malformed requests are one
rate-limited line each (issue #29, item 3)."""
from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import zmq

from conftest import REPO, free_port
from crackseg.dashboard import Dashboard, DashboardState, LogLimiter, connection_limit
from crackseg.stream import encode_jpeg, encode_message, make_header
from test_dashboard import first_event
from test_deploy import Script

FILE_LIMIT = 256   # the PC.py process's soft and hard RLIMIT_NOFILE: the page must stay well below it
IDLE = 300         # connections that send nothing (more than the whole limit)
STALLED = 100      # /events pages that never read


class LimitedPC(Script):
    """PC.py in a process whose open-file limit is ``FILE_LIMIT`` (soft and hard), stdout read by a thread."""

    def __init__(self, *args: str):
        super().__init__("PC.py", "--headless", "--http=127.0.0.1:0", "--report_every=1", *args,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT)))

    def web_port(self) -> int:
        line = self.wait_for("dashboard:")
        return int(line.split("http://127.0.0.1:")[1].split("/")[0])


@pytest.fixture
def limited_pc():
    started: list[LimitedPC] = []

    def start(*args: str) -> LimitedPC:
        started.append(LimitedPC(*args))
        return started[-1]

    yield start
    for pc in started:
        pc.kill()


@pytest.fixture
def sockets():
    """Client sockets a test opens; all closed at its end."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def idle_connections(port: int, count: int, opened: list) -> None:
    """``count`` connections that send nothing (a third of them half a request line), opened without waiting on
    the server's accept queue."""
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        opened.append(s)
        if i % 3 == 0:
            time.sleep(0.002)
            try:
                s.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            except OSError:
                pass


def stalled_pages(port: int, count: int, opened: list) -> None:
    """``count`` pages that ask for /events and never read a byte."""
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        opened.append(s)


def send_frames(port: int, count: int, device: str = "cam1", every: float = 0.02,
                until: subprocess.Popen | None = None) -> None:
    """``count`` frames, one per ``every`` seconds (a camera's pace; the receiver refuses a burst as ``busy``),
    or fewer once ``until`` has exited."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2_000)
    push.connect(f"tcp://127.0.0.1:{port}")
    jpeg = encode_jpeg(np.full((48, 64, 3), 90, np.uint8))
    for i in range(count):
        if until is not None and until.poll() is not None:
            break
        push.send_multipart(encode_message(make_header(device, i, 64, 48, {"crack_ratio": 0.01}, "tiny",
                                                       run="r1"), jpeg))
        time.sleep(every)
    push.close()


def test_pc_keeps_saving_frames_with_hundreds_of_idle_connections(limited_pc, sockets, tmp_path):
    port, out, frames = free_port(), tmp_path / "received", 40
    pc = limited_pc(f"--bind=tcp://127.0.0.1:{port}", f"--save={out}", f"--max_frames={frames}", "--max_seconds=30")
    web = pc.web_port()
    pc.wait_for("listening on")
    idle_connections(web, IDLE, sockets)
    time.sleep(1.0)  # let the page accept (and shed) them all before the frames come
    send_frames(port, 3 * frames, every=0.03, until=pc.proc)  # until PC.py has taken --max_frames
    rc, stdout, stderr = pc.finish()
    assert rc == 0 and f"done: {frames} valid frames;" in stdout, stdout + stderr
    saved = sorted(p.name for p in (out / "cam1").iterdir())
    assert len(saved) == frames and len((out / "headers.jsonl").read_text().splitlines()) == frames
    assert "Traceback" not in stderr, stderr


def test_a_fresh_page_gets_events_while_many_pages_stall(limited_pc, sockets, tmp_path):
    port = free_port()
    pc = limited_pc(f"--bind=tcp://127.0.0.1:{port}", "--max_seconds=30")
    web = pc.web_port()
    pc.wait_for("listening on")
    send_frames(port, 3, every=0.05)
    stalled_pages(web, STALLED, sockets)
    idle_connections(web, IDLE // 2, sockets)
    start = time.monotonic()
    event = first_event(f"http://127.0.0.1:{web}/events", timeout=10)
    took = time.monotonic() - start
    # the bound is generous for a busy 2-core machine: at the cap a page gets 503 forever
    assert took < 5.0 and [d["device"] for d in event["devices"]] == ["cam1"], took
    with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/devices", timeout=10) as response:
        assert json.loads(response.read())["devices"][0]["frames"] == 3
    pc.proc.terminate()
    rc, stdout, stderr = pc.finish()
    assert rc == 0 and "done: 3 valid frames" in stdout and "Traceback" not in stderr, stdout + stderr


def test_connection_limit_stays_below_the_file_limit():
    assert connection_limit(256) == 64 and connection_limit(1024) == 448
    assert connection_limit(64) == 8 and connection_limit(1 << 20) == 1024
    for limit in (256, 1024, 4096, 65536):
        assert connection_limit(limit) < limit // 2


@pytest.fixture
def small_page():
    state = DashboardState()
    page = Dashboard(state, "127.0.0.1:0", max_connections=16, max_event_clients=4, header_timeout=0.5,
                     stall_seconds=1.0)
    page.start()
    yield state, page
    page.close()


def test_a_connection_that_never_finishes_its_headers_is_closed(small_page, sockets):
    _, page = small_page
    s = socket.create_connection(("127.0.0.1", page.port), timeout=5)
    sockets.append(s)
    s.sendall(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
    start = time.monotonic()
    assert s.recv(1024) == b"" and time.monotonic() - start < 4  # closed by the server, no answer


def test_at_the_connection_cap_the_oldest_idle_connection_makes_room(small_page, sockets):
    _, page = small_page
    for _ in range(40):  # far beyond 16: each new one closes the oldest that sends nothing
        sockets.append(socket.create_connection(("127.0.0.1", page.port), timeout=5))
    time.sleep(0.3)
    with urllib.request.urlopen(f"http://127.0.0.1:{page.port}/api/devices", timeout=5) as response:
        assert response.status == 200
    assert page.evicted >= 40 - 16
    closed = 0
    for s in sockets[:20]:  # the oldest were closed for the newer ones
        s.settimeout(2)
        try:
            closed += s.recv(16) == b""
        except (ConnectionResetError, socket.timeout):
            closed += 1
    assert closed >= 20 - 2


def test_the_newest_page_wins_over_a_stalled_one_and_a_stalled_page_is_closed(small_page, sockets):
    state, page = small_page
    state.update(make_header("cam1", 0, 64, 48), b"\xff\xd8")
    stalled_pages(page.port, 4, sockets)
    deadline = time.monotonic() + 5
    while page.pages() < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert page.pages() == 4
    event = first_event(f"http://127.0.0.1:{page.port}/events", timeout=5)  # at the cap of 4: it still gets in
    assert event["devices"][0]["device"] == "cam1"
    # a page that stops reading is closed once its socket has taken nothing for stall_seconds (1 s here)
    big = bytes(200_000)
    deadline = time.monotonic() + 20
    i = 1
    while page.pages() > 0 and time.monotonic() < deadline:
        state.update(make_header(f"cam{i % 40}", i, 64, 48, {f"k{j}": j for j in range(40)}), big)
        i += 1
        time.sleep(0.02)
    assert page.pages() == 0, f"{page.pages()} stalled pages still connected"


def test_malformed_requests_are_one_rate_limited_line_each(capfd):
    state = DashboardState()
    page = Dashboard(state, "127.0.0.1:0")
    page.start()
    try:
        for i in range(40):
            with socket.create_connection(("127.0.0.1", page.port), timeout=5) as s:
                s.sendall(b"GET /\x00bad HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" if i % 2 else
                          b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n")
                s.settimeout(5)
                try:
                    assert s.recv(64).split(b" ")[1] == b"400"
                except ConnectionResetError:
                    pass
        time.sleep(0.3)
    finally:
        page.close()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and all(line.startswith("dashboard: ") for line in lines), err
    assert 1 <= len(lines) <= 10, err  # 40 bad requests inside one window: a burst of 10 lines at most


def test_log_limiter_counts_what_it_drops():
    now = [0.0]
    limiter = LogLimiter(burst=2, window=10.0, clock=lambda: now[0])
    assert [limiter.allow()[0] for _ in range(5)] == [True, True, False, False, False]
    now[0] = 11.0
    assert limiter.allow() == (True, 3)


def test_pc_raises_its_soft_open_file_limit_to_the_hard_one():
    soft, hard = 64, min(512, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    code = "import sys; sys.argv = ['PC.py']; import PC; print(PC.raise_open_file_limit())"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == str(hard), done.stdout + done.stderr
