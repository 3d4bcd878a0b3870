"""PC.py's live page (crackseg.dashboard): the JSON and frame endpoints, pushed updates, tokens, a receive loop
that never waits on a browser, camera.py --preview, and headless Chromium against PC.py fed by two camera.py
processes over loopback."""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import statistics
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port
from crackseg.dashboard import Dashboard, DashboardState, parse_address, DashboardError
from crackseg.stream import encode_jpeg, make_header, make_keys
import test_deploy
from test_deploy import camera, pc
from test_stream import frame_image

media, procs = test_deploy.media, test_deploy.procs  # test_deploy.py's fixtures, used here too


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def first_event(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: "):
                return json.loads(line[6:])
    raise AssertionError("no event")


@pytest.fixture
def page():
    state = DashboardState()
    dashboard = Dashboard(state, "127.0.0.1:0")
    dashboard.start()
    yield state, dashboard, f"http://127.0.0.1:{dashboard.port}"
    dashboard.close()


def feed(state: DashboardState, device: str, frames: int, start: int = 0, received: float | None = None) -> bytes:
    jpeg = encode_jpeg(frame_image(48, 64, start))
    for i in range(start, start + frames):
        state.update(make_header(device, i, 64, 48, {"crack_ratio": 0.01 * i, "length_px": 2.0 * i,
                                                     "max_width_px": 3.0, "components": 1}, "tiny", run="r1"), jpeg,
                     received)
    return jpeg


def test_api_devices_frame_and_events(page):
    state, _, base = page
    jpeg = feed(state, "truck1", 3)
    feed(state, "truck2", 1)
    state.set_rejected({"jpeg": 3, "pixels": 0, "size_mismatch": 1})
    status, body, headers = get(f"{base}/api/devices")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert set(data) == {"devices", "rejected"} and data["rejected"] == {"jpeg": 3, "size_mismatch": 1}
    first = data["devices"][0]
    assert [d["device"] for d in data["devices"]] == ["truck1", "truck2"]
    assert set(first) == {"device", "frames", "fps", "last_seen", "online", "last"}
    assert first["frames"] == 3 and first["online"] is True and first["last"]["frame"] == 2
    assert abs(first["last_seen"] - time.time()) < 5 and isinstance(first["fps"], float)
    assert get(f"{base}/frame/truck1.jpg")[1] == jpeg
    assert get(f"{base}/frame/nobody.jpg")[0] == 404
    status, html, headers = get(f"{base}/")
    assert status == 200 and b'el("canvas"' in html and b"EventSource" in html
    assert b"http://" not in html and b"https://" not in html  # nothing fetched from anywhere else
    event = first_event(f"{base}/events")
    assert [d["device"] for d in event["devices"]] == ["truck1", "truck2"]
    assert [p[1:] for p in event["devices"][0]["points"]] == [[0.0, 0.0], [0.01, 2.0], [0.02, 4.0]]
    assert event["rejected"] == {"jpeg": 3, "size_mismatch": 1} and "latency_ms" in event["devices"][0]


def test_devices_go_offline_when_frames_stop():
    # 5 s online: far beyond any stall between feeding and asking; cam0's frames stopped 6 s ago (received then),
    # so nothing sleeps and "now" must be read when asked
    state = DashboardState(online_seconds=5.0)
    feed(state, "cam1", 1)
    assert state.api_devices()["devices"][0]["online"] is True
    feed(state, "cam0", 1, received=time.time() - 6.0)
    device, fresh = state.api_devices()["devices"]
    assert device["device"] == "cam0" and fresh["online"] is True
    assert device["online"] is False and time.time() - device["last_seen"] >= 5.0
    assert state.changes({})["devices"][0]["online"] is False


def test_only_loopback_host_names_are_answered_without_a_token(page):
    _, dashboard, _ = page
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        connection.request("GET", "/api/devices", headers={"Host": f"attacker.example:{dashboard.port}"})
        assert connection.getresponse().status == 403  # DNS rebinding
    finally:
        connection.close()


def test_a_token_guards_every_url():
    state = DashboardState()
    feed(state, "cam1", 1)
    dashboard = Dashboard(state, "127.0.0.1:0", token="s3cret-token")
    url = dashboard.start()
    base = f"http://127.0.0.1:{dashboard.port}"
    try:
        assert url.endswith("/?token=s3cret-token")
        status, body, _ = get(f"{base}/")
        assert status == 401 and b'name="token"' in body  # the page asks for it
        for path in ("/api/devices", "/frame/cam1.jpg", "/events", "/api/devices?token=wrong"):
            assert get(base + path)[0] == 401, path
        status, _, headers = get(f"{base}/?token=s3cret-token")
        assert status == 200 and "HttpOnly" in headers.get("Set-Cookie", "")
        assert get(f"{base}/api/devices", {"Authorization": "Bearer s3cret-token"})[0] == 200
        assert get(f"{base}/frame/cam1.jpg", {"Cookie": "crackseg_token=s3cret-token"})[0] == 200
    finally:
        dashboard.close()


def test_bad_addresses_are_one_line():
    for text in ("nonsense", ":8080", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(DashboardError, match="--http"):
            parse_address(text)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(DashboardError, match="cannot listen"):
            Dashboard(DashboardState(), f"127.0.0.1:{taken.getsockname()[1]}").start()
    finally:
        taken.close()


def test_the_receive_side_never_waits_on_a_stalled_page(page):
    state, dashboard, base = page
    big = bytes(300_000)

    def updates(seconds: float) -> list[float]:
        """Seconds of each ``state.update`` made in ``seconds`` (50 devices, pausing so the pages get pushes)."""
        took, deadline, i = [], time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            header = make_header(f"cam{i % 50}", i, 64, 48, {f"k{j}": j for j in range(64)}, "m" * 200)
            start = time.perf_counter()
            state.update(header, big)
            took.append(time.perf_counter() - start)
            i += 1
            if i % 50 == 0:
                time.sleep(0.01)
        return took

    alone = updates(1)  # the same updates with no stalled page: what this machine needs, under its load now
    stalled = []
    for _ in range(4):  # pages that connect and never read: their socket buffers fill up
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", dashboard.port))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stalled.append(s)
    try:
        took = updates(4)
        slowest, typical, usual = max(took), statistics.median(took), statistics.median(alone)
        # A loop waiting on those pages would stall for the whole 4 s (the bound leaves room for a busy CPU); the
        # median update is compared with the one measured alone (idle: 1.2x), not counted against the clock, so a
        # loaded machine slows both alike.
        assert slowest < 2.0 and typical < 5 * usual, (f"{len(took)} updates, the slowest took {slowest * 1000:.1f} "
                                                       f"ms, median {typical * 1e6:.1f} us vs {usual * 1e6:.1f} us")
        status, body, _ = get(f"{base}/api/devices")  # and a healthy client is still served
        assert status == 200 and len(json.loads(body)["devices"]) == 50
    finally:
        for s in stalled:
            s.close()


def test_pc_page_needs_a_token_with_curve_or_a_non_loopback_address(procs, tmp_path):
    keys = make_keys(tmp_path / "keys", ["cam1"])
    port, web = free_port(), free_port()
    script = pc(procs, port, f"--curve={keys['pc']}", f"--http=127.0.0.1:{web}", "--max_seconds=20")
    line = next(line for line in script.out if line.startswith("dashboard:"))
    token = line.split("?token=")[1].split()[0]
    assert len(token) >= 16 and "token required" in line
    assert get(f"http://127.0.0.1:{web}/api/devices")[0] == 401
    assert get(f"http://127.0.0.1:{web}/api/devices?token={token}")[0] == 200
    script.proc.terminate()
    rc, stdout, stderr = script.finish()
    assert rc == 0 and "done: 0 valid frames" in stdout, (rc, stdout, stderr)
    # any non-loopback --http too, even without --curve
    script = pc(procs, free_port(), "--http=0.0.0.0:0", "--max_seconds=20")
    line = next(line for line in script.out if line.startswith("dashboard:"))
    assert "?token=" in line and "token required" in line, line
    web = int(line.split("?token=")[0].rstrip("/").rsplit(":", 1)[1])
    assert get(f"http://127.0.0.1:{web}/api/devices")[0] == 401
    script.proc.terminate()
    assert script.finish()[0] == 0
    # and a token given by --http_token is the one asked for
    script = pc(procs, free_port(), "--http=127.0.0.1:0", "--http_token=my-own-token", "--max_seconds=20")
    line = next(line for line in script.out if line.startswith("dashboard:"))
    web = int(line.split("?token=")[0].rstrip("/").rsplit(":", 1)[1])
    assert line.split("?token=")[1].split()[0] == "my-own-token"
    assert get(f"http://127.0.0.1:{web}/api/devices", {"Authorization": "Bearer my-own-token"})[0] == 200
    assert get(f"http://127.0.0.1:{web}/api/devices")[0] == 401


def test_camera_preview_serves_its_own_stream(procs, media, tiny_model):
    web = free_port()
    script = camera(procs, media["long"], tiny_model["onnx"], f"--preview=127.0.0.1:{web}", "--device=solo",
                    "--fps_limit=10", "--quiet")
    line = script.wait_for("preview:")
    assert f"http://127.0.0.1:{web}/" in line
    deadline, data = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        status, body, _ = get(f"http://127.0.0.1:{web}/api/devices")
        data = json.loads(body)
        if data["devices"] and data["devices"][0]["frames"] >= 3:
            break
        time.sleep(0.2)
    assert data["devices"][0]["device"] == "solo" and data["devices"][0]["frames"] >= 3, data
    status, jpeg, _ = get(f"http://127.0.0.1:{web}/frame/solo.jpg")
    assert status == 200 and jpeg.startswith(b"\xff\xd8")
    assert b"EventSource" in get(f"http://127.0.0.1:{web}/")[1]


def test_camera_without_a_gui_points_at_preview(procs, media, tiny_model):
    rc, stdout, stderr = camera(procs, media["images"], tiny_model["onnx"], "--no-headless", "--max_frames=1",
                                "--quiet").finish()
    assert rc == 0, stdout + stderr
    lines = [line for line in stdout.splitlines() if line.startswith("no display")]
    assert len(lines) == 1 and "--preview=127.0.0.1:8081" in lines[0], stdout
    rc, stdout, stderr = camera(procs, media["images"], tiny_model["onnx"], "--preview=nonsense",
                                "--max_frames=1").finish()
    assert rc == 1 and "Traceback" not in stderr, stdout + stderr
    assert stderr.strip().splitlines()[-1].startswith("error: --preview='nonsense': expected HOST:PORT"), stderr


# ---------------------------------------------------------------------------------------------- browser
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900")


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (requirements.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_browser_shows_two_live_devices(procs, media, tiny_model, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, web = free_port(), free_port()
    pc(procs, port, f"--http=127.0.0.1:{web}")
    for name in ("cam-a", "cam-b"):
        camera(procs, media["long"], tiny_model["onnx"], f"--send=tcp://127.0.0.1:{port}", f"--device={name}",
               "--fps_limit=4", "--quiet")  # ~38 s of video: still online when the page is checked
    browser.get(f"http://127.0.0.1:{web}/")
    browser.execute_script("window.__sameDocument = true;")
    WebDriverWait(browser, 40).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tile")) >= 2)
    tiles = browser.find_elements(By.CSS_SELECTOR, ".tile")
    assert sorted(t.get_attribute("data-device") for t in tiles) == ["cam-a", "cam-b"]

    def text(selector: str) -> str | None:
        """The element's text in one script call: a separate find and read races the page's updates."""
        return browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector)

    def frames(name: str) -> int:
        value = text(f'.tile[data-device="{name}"] .v-frames') or ""
        return int(value) if value.isdigit() else -1

    before = {name: frames(name) for name in ("cam-a", "cam-b")}
    WebDriverWait(browser, 30).until(lambda d: all(frames(n) > before[n] for n in before))
    assert browser.execute_script("return window.__sameDocument === true;"), "the page reloaded"
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('.tile img')].every(i => i.naturalWidth > 0);"))
    assert text('.tile[data-device="cam-a"] .state') == "online"
    drawn = browser.execute_script("""
        const c = document.querySelector('.tile[data-device="cam-b"] canvas');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i]) n++; return n;""")
    assert drawn > 200, "the chart is blank"
    import zmq

    push = zmq.Context.instance().socket(zmq.PUSH)  # a malformed message shows up in the rejected totals
    push.setsockopt(zmq.LINGER, 10000)
    push.connect(f"tcp://127.0.0.1:{port}")
    push.send_multipart([b"{not json", b"xx"])
    push.close()
    WebDriverWait(browser, 15).until(lambda d: text("#rejected .r-header_json") == "header_json 1")
    assert browser.find_element(By.ID, "conn").text == "live"
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 5000
    print(f"screenshot: {shot}; frames {before} -> {({n: frames(n) for n in before})}")


def test_millimetre_stats_are_charted_and_shown_when_the_camera_sends_them(page):
    """camera.py --mm_per_px sends length_mm / max_width_mm / severity_level: the chart follows the millimetres and
    the page shows them (pixels stay the fallback)."""
    state, _, base = page
    jpeg = encode_jpeg(frame_image(48, 64, 0))
    for i in range(2):
        state.update(make_header("survey", i, 64, 48, {"crack_ratio": 0.02, "length_px": 100.0 + i,
                                                      "length_mm": 80.0 + i, "max_width_mm": 7.5,
                                                      "severity_level": 2}, "tiny", run="r1"), jpeg)
    event = first_event(f"{base}/events")
    assert [p[1:] for p in event["devices"][0]["points"]] == [[0.02, 80.0], [0.02, 81.0]]
    html = get(f"{base}/")[1]
    assert b"s.length_mm" in html and b'"moderate"' in html and b"max_width_mm" in html
