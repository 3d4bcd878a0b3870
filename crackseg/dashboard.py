"""The live web page of PC.py (every device) and of camera.py --preview (its own stream), served with aiohttp.

    state = DashboardState()                      # fed by the receive loop: state.update(header, jpeg)
    page = Dashboard(state, "127.0.0.1:8080")     # its own thread with its own asyncio loop
    print(page.start())                           # the URL (with ?token=... when one is needed)
    ...
    page.close()

The receive loop never waits on a browser: ``update`` only stores references under a lock (no I/O, no encoding),
and the web thread takes a snapshot under the same lock whenever it answers or pushes. The page is self-contained
(no CDN, no file fetched from anywhere else): one tile per device with the latest overlay, FPS, latency, crack
statistics, last-seen age and online/offline, a chart of crack ratio and crack length over time drawn on a
<canvas>, and the rejected totals by reason. Updates are pushed as server-sent events (``/events``); JSON at
``/api/devices``; the latest JPEG at ``/frame/<device>.jpg``.

With a token (PC.py gives one with --curve or any non-loopback --http) every URL needs it: ``?token=...`` once
(the page then keeps it in an HttpOnly cookie), a ``Authorization: Bearer ...`` header, or the form the page shows.
Without one, only requests whose Host is the loopback address being served are answered (no DNS rebinding).
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

from aiohttp import web

HISTORY = 240          # chart points kept per device
ONLINE_SECONDS = 5.0   # a device is online while its last frame is at most this old
PUSH_SECONDS = 0.25    # how often a connected page gets what changed
MAX_EVENT_CLIENTS = 32  # pages connected at once; more get 503
WRITE_TIMEOUT = 10.0   # a page that takes longer than this to accept an update is disconnected
COOKIE = "crackseg_token"


class DashboardError(RuntimeError):
    """A dashboard that cannot be served (bad address, port taken); one line."""


def parse_address(text: str, flag: str = "--http") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); raises ``DashboardError`` naming ``flag``."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise DashboardError(f"{flag}={text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 (\"\" turns it off)")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise DashboardError(f"{flag}={text!r}: port {port!r} is not 0-65535")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class _Device:
    frames: int = 0
    last_seen: float = 0.0
    header: dict = field(default_factory=dict)
    jpeg: bytes = b""
    latency_ms: float = 0.0
    arrivals: collections.deque = field(default_factory=lambda: collections.deque(maxlen=30))
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))  # (seq, t, r, l)

    def fps(self) -> float:
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return 0.0
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])


class DashboardState:
    """What the page shows, shared between the receive loop (``update``, ``set_rejected``) and the web thread
    (everything else) behind one lock. Holds only the latest JPEG and ``HISTORY`` numbers per device."""

    def __init__(self, online_seconds: float = ONLINE_SECONDS, title: str = "crackseg"):
        self.online_seconds, self.title = online_seconds, title
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._rejected: dict[str, int] = {}
        self._seq = 0
        self.version = 0  # changes on every update; read without the lock (an int) to see whether to push

    # -- receive side: cheap, never blocks on anything but this lock
    def update(self, header: dict, jpeg: bytes, received: float | None = None) -> None:
        now = time.time() if received is None else received
        stats = header.get("stats") or {}
        with self._lock:
            device = self._devices.get(header["device"])
            if device is None:
                device = self._devices[header["device"]] = _Device()
            self._seq += 1
            device.frames += 1
            device.last_seen, device.header, device.jpeg = now, header, jpeg
            device.latency_ms = max(0.0, (now - float(header.get("time", now))) * 1000)
            device.arrivals.append(now)
            device.history.append((self._seq, now, float(stats.get("crack_ratio", 0.0)),
                                   float(stats.get("length_mm", stats.get("length_px", 0.0)))))
            self.version = self._seq

    def set_rejected(self, rejected: Mapping[str, int]) -> None:
        counts = {k: int(v) for k, v in rejected.items() if v}
        if counts != self._rejected:
            with self._lock:
                self._rejected = counts
                self._seq += 1
                self.version = self._seq

    # -- web side
    def frame(self, name: str) -> bytes | None:
        with self._lock:
            device = self._devices.get(name)
            return device.jpeg if device and device.jpeg else None

    def api_devices(self) -> dict:
        """``{"devices": [{"device", "frames", "fps", "last_seen", "online", "last"}], "rejected": {...}}``."""
        now = time.time()
        with self._lock:
            return {"devices": [{"device": name, "frames": d.frames, "fps": round(d.fps(), 2),
                                 "last_seen": d.last_seen, "online": now - d.last_seen <= self.online_seconds,
                                 "last": d.header} for name, d in sorted(self._devices.items())],
                    "rejected": dict(self._rejected)}

    def changes(self, since: dict[str, int]) -> dict:
        """The push payload: every device's current figures plus the chart points newer than ``since[device]``
        (updated in place), so a page gets each point once."""
        now = time.time()
        with self._lock:
            devices = []
            for name, d in sorted(self._devices.items()):
                seen = since.get(name, 0)
                points = []  # newest first, only as far back as this page has seen: O(new points) under the lock
                for seq, t, r, n in reversed(d.history):
                    if seq <= seen:
                        break
                    points.append([round(t, 3), r, n])
                points.reverse()
                if d.history:
                    since[name] = d.history[-1][0]
                devices.append({"device": name, "frames": d.frames, "fps": round(d.fps(), 2),
                                "last_seen": d.last_seen, "online": now - d.last_seen <= self.online_seconds,
                                "latency_ms": round(d.latency_ms, 1), "last": d.header, "points": points})
            return {"now": now, "online_seconds": self.online_seconds, "title": self.title, "devices": devices,
                    "rejected": dict(self._rejected)}


class Dashboard:
    """aiohttp server for a ``DashboardState`` on its own thread and event loop."""

    def __init__(self, state: DashboardState, address: str = "127.0.0.1:8080", token: str | None = None,
                 flag: str = "--http"):
        self.state, self.flag = state, flag
        self.host, self.port = parse_address(address, flag)
        self.token = token or None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._clients = 0

    # -- lifecycle
    def start(self) -> str:
        """Bind and serve; returns the page's URL (with the token). Raises ``DashboardError``."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="crackseg-dashboard", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise DashboardError(f"http://{self.host}:{self.port}: the web server did not start in 30 s")
        if self._error is not None:
            raise DashboardError(f"{self.flag}={self.host}:{self.port}: cannot listen ({self._error})")
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")
        return self.url

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
        except (OSError, RuntimeError, ValueError) as exc:
            self._error = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def close(self) -> None:
        self._closing = True
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(5)

    # -- the app
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 << 10)
        app.router.add_get("/", self._page)
        app.router.add_get("/api/devices", self._api)
        app.router.add_get("/frame/{device}.jpg", self._frame)
        app.router.add_get("/events", self._events)
        return app

    def _authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        offered = request.query.get("token") or request.cookies.get(COOKIE) or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered = auth[7:]
        return hmac.compare_digest(offered.encode(), self.token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if not self.token and is_loopback(self.host):
            host = (request.host or "").rsplit(":", 1)[0].strip("[]")
            if not is_loopback(host):  # a page elsewhere pointing its own name at 127.0.0.1 (DNS rebinding)
                return web.Response(status=403, text="forbidden host\n")
        if not self._authorized(request):
            if request.path == "/":
                return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
            return web.Response(status=401, text="token required (?token=... or Authorization: Bearer ...)\n")
        response = await handler(request)
        if self.token and request.query.get("token") and request.path == "/":
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE.replace("{{TITLE}}", _html_escape(self.state.title)), content_type="text/html",
                            headers={"Content-Security-Policy": CSP})

    async def _api(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.api_devices())

    async def _frame(self, request: web.Request) -> web.StreamResponse:
        jpeg = self.state.frame(request.match_info["device"])
        if jpeg is None:
            return web.Response(status=404, text="no frame from this device\n")
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self._clients >= MAX_EVENT_CLIENTS:
            return web.Response(status=503, text=f"{MAX_EVENT_CLIENTS} pages connected already\n")
        self._clients += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            since: dict[str, int] = {}
            sent_version, last_write = -1, 0.0
            while not self._closing:
                version = self.state.version
                if version != sent_version or time.monotonic() - last_write > 15:
                    payload = json.dumps(self.state.changes(since), separators=(",", ":"))
                    await asyncio.wait_for(response.write(f"data: {payload}\n\n".encode()), WRITE_TIMEOUT)
                    sent_version, last_write = version, time.monotonic()
                await asyncio.sleep(PUSH_SECONDS)
        except (ConnectionError, asyncio.TimeoutError, RuntimeError):
            pass  # the page went away or stopped reading
        finally:
            self._clients -= 1
        return response


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


CSP = "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"

LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>crackseg: token</title></head>
<body style="font-family:sans-serif;background:#111;color:#eee;padding:3em">
<form method="get" action="/"><p>This dashboard needs its token (printed by PC.py, or --http_token).</p>
<input name="token" type="password" autofocus size="32"> <button type="submit">open</button></form></body></html>
"""

PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
body{font-family:system-ui,sans-serif;background:#15171a;color:#e8e8e8;margin:0;padding:12px}
h1{font-size:18px;margin:0 0 8px 0} #bar{font-size:13px;color:#aaa;margin-bottom:10px}
#tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.tile{background:#23262b;border-radius:6px;padding:8px;border-left:5px solid #3a3}
.tile.offline{border-left-color:#a33;opacity:.75}
.tile h2{font-size:15px;margin:0 0 6px 0;display:flex;justify-content:space-between}
.tile img{width:100%;height:auto;background:#000;display:block;min-height:60px}
.tile table{font-size:12px;width:100%;border-collapse:collapse;margin-top:6px}
.tile td{padding:1px 4px} .tile td:nth-child(odd){color:#999}
.tile canvas{width:100%;height:110px;margin-top:6px;background:#1b1d21;display:block}
.state{font-size:12px;padding:1px 6px;border-radius:8px;background:#3a3;color:#fff}
.offline .state{background:#a33} .legend{font-size:11px;color:#aaa}
.legend b{display:inline-block;width:10px;height:3px;vertical-align:middle;margin:0 3px 0 8px}
#rejected span{margin-right:10px}
</style></head>
<body>
<h1>{{TITLE}}: live crack segmentation</h1>
<div id="bar"><span id="conn">connecting...</span> &middot; <span id="count">0 devices</span> &middot;
rejected: <span id="rejected">none</span></div>
<div id="tiles"></div>
<script>
"use strict";
const tiles = document.getElementById("tiles");
const state = {offset: 0, online: 5, devices: {}};
const fmt = (v, d) => (v === undefined || v === null) ? "-" : Number(v).toFixed(d);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function tile(name) {
  let d = state.devices[name];
  if (d) return d;
  const root = el("div", {"class": "tile", "data-device": name});
  const head = el("h2");
  head.append(el("span", {"class": "name"}, name), el("span", {"class": "state"}, "online"));
  const img = el("img", {"alt": "latest overlay from " + name});
  const table = el("table");
  const cells = {};
  const rows = [["frames", "fps"], ["latency", "age"], ["crack ratio", "length"], ["max width", "cracks"],
                ["worst", "size"], ["model"]];
  for (const pair of rows) {
    const tr = el("tr");
    for (const key of pair) {
      const value = el("td", {"class": "v-" + key.replace(" ", "_")}, "-");
      tr.append(el("td", {}, key), value);
      cells[key] = value;
    }
    table.append(tr);
  }
  const canvas = el("canvas", {"width": 600, "height": 110});
  const legend = el("div", {"class": "legend"});
  legend.innerHTML = "<b style='background:#f55'></b>crack ratio %<b style='background:#5af'></b>crack length px";
  root.append(head, img, table, canvas, legend);
  const after = [...tiles.children].find(t => t.getAttribute("data-device") > name);
  tiles.insertBefore(root, after || null);  // tiles stay in name order
  d = state.devices[name] = {root, img, cells, canvas, points: [], frames: -1, loading: false, last_seen: 0};
  img.onload = img.onerror = () => { d.loading = false; };
  return d;
}

function draw(d) {
  const c = d.canvas, p = d.points;
  if (c.clientWidth && c.width !== c.clientWidth) { c.width = c.clientWidth; c.height = c.clientHeight; }
  const g = c.getContext("2d"), w = c.width, h = c.height;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#333"; g.beginPath();
  for (let i = 1; i < 4; i++) { g.moveTo(0, h * i / 4); g.lineTo(w, h * i / 4); }
  g.stroke();
  if (p.length < 1) return;
  const t0 = p[0][0], t1 = Math.max(p[p.length - 1][0], t0 + 1);
  const series = [[1, "#f55", 100], [2, "#5af", 1]];
  for (const [k, color, scale] of series) {
    let peak = 0;
    for (const q of p) peak = Math.max(peak, q[k] * scale);
    const top = peak > 0 ? peak * 1.1 : 1;
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    p.forEach((q, i) => {
      const x = (q[0] - t0) / (t1 - t0) * (w - 4) + 2, y = h - 2 - (q[k] * scale) / top * (h - 14);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    g.fillStyle = color; g.font = "11px sans-serif";
    g.fillText((k === 1 ? "max " + peak.toFixed(2) + " %" : "max " + peak.toFixed(0) + " " + (d.unit || "px")), k === 1 ? 4 : w / 2, 11);
  }
}

function ages() {
  const now = Date.now() / 1000 - state.offset;
  for (const d of Object.values(state.devices)) {
    const age = Math.max(0, now - d.last_seen);
    d.cells["age"].textContent = age.toFixed(age < 10 ? 1 : 0) + " s";
    const online = age <= state.online;
    d.root.classList.toggle("offline", !online);
    d.root.querySelector(".state").textContent = online ? "online" : "offline";
  }
}

function apply(msg) {
  state.offset = Date.now() / 1000 - msg.now;
  state.online = msg.online_seconds;
  if (msg.title) document.title = msg.title;
  for (const dev of msg.devices) {
    const d = tile(dev.device), s = (dev.last && dev.last.stats) || {};
    d.last_seen = dev.last_seen;
    d.cells["frames"].textContent = dev.frames;
    d.cells["fps"].textContent = fmt(dev.fps, 1);
    d.cells["latency"].textContent = fmt(dev.latency_ms, 0) + " ms";
    d.cells["crack ratio"].textContent = fmt((s.crack_ratio || 0) * 100, 2) + " %";
    // camera.py --mm_per_px sends millimetres and the worst severity level (1-3) of the frame; pixels otherwise
    const mm = s.length_mm !== undefined;
    d.unit = mm ? "mm" : "px";
    d.cells["length"].textContent = mm ? fmt(s.length_mm, 0) + " mm" : fmt(s.length_px, 0) + " px";
    d.cells["max width"].textContent = mm ? fmt(s.max_width_mm, 1) + " mm" : fmt(s.max_width_px, 1) + " px";
    d.cells["worst"].textContent = s.severity_level ? ["", "low", "moderate", "high"][s.severity_level] || "-" : "-";
    d.cells["cracks"].textContent = s.components === undefined ? "-" : s.components;
    d.cells["model"].textContent = (dev.last && dev.last.model) || "-";
    d.cells["size"].textContent = dev.last ? dev.last.width + "x" + dev.last.height : "-";
    if (dev.frames !== d.frames && !d.loading) {
      d.loading = true;
      d.frames = dev.frames;
      d.img.src = "/frame/" + encodeURIComponent(dev.device) + ".jpg?n=" + dev.frames;
    }
    if (dev.points.length) {
      d.points.push(...dev.points);
      if (d.points.length > 240) d.points.splice(0, d.points.length - 240);
      draw(d);
    }
  }
  const n = msg.devices.length;
  document.getElementById("count").textContent = n + (n === 1 ? " device" : " devices");
  const box = document.getElementById("rejected");
  const reasons = Object.entries(msg.rejected);
  const key = JSON.stringify(reasons);
  if (box.dataset.key !== key) {  // rebuilt only on change, so the totals do not flicker with every frame
    box.dataset.key = key;
    box.textContent = "";
    if (!reasons.length) box.textContent = "none";
    for (const [k, v] of reasons) box.append(el("span", {"class": "r-" + k}, k + " " + v));
  }
  ages();
}

function connect() {
  const source = new EventSource("/events");
  const conn = document.getElementById("conn");
  source.onopen = () => { conn.textContent = "live"; };
  source.onmessage = (e) => apply(JSON.parse(e.data));
  source.onerror = () => {
    conn.textContent = "disconnected, retrying...";
    source.close();
    for (const d of Object.values(state.devices)) d.points = [];  // the next connection resends the history
    setTimeout(connect, 1000);
  };
}
setInterval(ages, 1000);
connect();
</script></body></html>
"""


class Preview:
    """camera.py --preview: the same page for one device's own stream (no workstation needed).

    ``outlet(send)`` wraps the pipeline's send callback: every frame goes to the page, then on to ``send``
    (the ZeroMQ sender) when there is one. A non-loopback address gets a token, printed with the URL.
    """

    def __init__(self, address: str, device: str, token: str | None = None):
        host, _ = parse_address(address, "--preview")
        self.state = DashboardState(title=f"camera.py {device}")
        self.page = Dashboard(self.state, address, token or (None if is_loopback(host) else new_token()),
                              flag="--preview")

    def start(self) -> str:
        return self.page.start()

    def outlet(self, send=None):
        state = self.state

        def forward(header: dict, jpeg: bytes) -> None:
            state.update(header, jpeg)
            if send is not None:
                send(header, jpeg)

        return forward

    def close(self) -> None:
        self.page.close()
