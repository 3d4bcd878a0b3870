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

Idle and slow clients cannot starve the process of file descriptors or the page of its slots: at most
``max_connections`` connections are open at once (by default below the process's open-file limit, leaving room for
the receiver's sockets and saved files); at that cap a new connection closes the oldest one that is between
requests (idle, or still sending its headers), and is refused only when every one is answering a request. A
connection that has not sent a whole request within ``HEADER_TIMEOUT`` seconds (or idles that long between
requests) is closed (aiohttp's ``keepalive_timeout``, which runs from the moment a connection opens). Each
``/events`` page gets the latest state only when its socket has taken everything sent before (events it could not
take are dropped, never queued), and is closed once it has taken nothing for ``STALL_SECONDS``; a page's socket
send buffer is kept small so a page that stopped reading shows up after kilobytes, not megabytes. At
``max_event_clients`` pages a new page takes the slot of the most stalled one, else of the oldest (the newest
reader wins; a real page reconnects by itself). Malformed requests and server errors are one log line each,
rate-limited (``LogLimiter``), never a traceback.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from aiohttp import web

HISTORY = 240          # chart points kept per device
ONLINE_SECONDS = 5.0   # a device is online while its last frame is at most this old
PUSH_SECONDS = 0.25    # how often a connected page gets what changed
MAX_EVENT_CLIENTS = 32  # pages connected at once; a further one takes the slot of the most stalled (or oldest)
STALL_SECONDS = 10.0   # a page whose socket has taken nothing for this long is closed
HEADER_TIMEOUT = 10.0  # a connection must send a whole request within this long, and may idle this long between
MAX_CONNECTIONS = 1024  # open connections at most, whatever the file limit
RESERVED_FILES = 128   # descriptors left to the rest of the process (ZeroMQ peers, saved frames, pipes, libraries)
EVENT_SEND_BUFFER = 32 << 10  # SO_SNDBUF of an /events socket: a page that stops reading shows up after ~100 KB
LOG_BURST, LOG_WINDOW = 10, 10.0  # at most this many server log lines per window; the rest are counted
COOKIE = "crackseg_token"
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
                 b"Connection: close\r\n\r\ntoo many connections\n")


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


def open_file_limit() -> int | None:
    """The process's soft limit on open files (None where there is none to read: not Unix)."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_limit(file_limit: int | None = None) -> int:
    """How many connections the page keeps open at most: half of what the open-file limit leaves after
    ``RESERVED_FILES``, between 8 and ``MAX_CONNECTIONS``."""
    limit = open_file_limit() if file_limit is None else file_limit
    if limit is None:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, (limit - RESERVED_FILES) // 2))


class LogLimiter(logging.Filter):
    """At most ``burst`` records per ``window`` seconds pass; each record becomes one line (no traceback: the
    exception's type and message are appended, on the same line); the next line after a quiet spell says how many
    were dropped."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._start, self._count, self.suppressed = -float("inf"), 0, 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        """(whether a line may be printed now, how many were dropped before it)."""
        with self._lock:
            now = self.clock()
            if now - self._start >= self.window:
                self._start, self._count = now, 0
            self._count += 1
            if self._count > self.burst:
                self.suppressed += 1
                return False, 0
            dropped, self.suppressed = self.suppressed, 0
            return True, dropped

    def filter(self, record: logging.LogRecord) -> bool:
        ok, dropped = self.allow()
        if not ok:
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = " ".join(str(exc).split())  # aiohttp's parser errors span several lines: one here
            text += f": {type(exc).__name__}" + (f": {detail}" if detail else "")
        if dropped:
            text += f" ({dropped} more lines like these dropped)"
        record.msg, record.args = text[:300], None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after the logger is made)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def one_line_logger(name: str = "crackseg.dashboard") -> logging.Logger:
    """A logger that prints ``dashboard: <message>`` lines to stderr, rate-limited, and never propagates (so no
    traceback reaches the root logger). Given to aiohttp as its server logger."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, LogLimiter) for f in logger.filters):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("dashboard: %(message)s"))
        logger.addHandler(handler)
        logger.addFilter(LogLimiter())
        logger.setLevel(logging.DEBUG)  # aiohttp logs a request that is not HTTP at all at debug level
        logger.propagate = False
    return logger


class _Refuse(asyncio.Protocol):
    """A connection beyond the cap when none can be closed for it: one 503 line, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(BUSY_RESPONSE)  # type: ignore[attr-defined]
        transport.close()


@dataclass(eq=False)
class _Page:
    """One connected ``/events`` page."""
    transport: asyncio.Transport
    opened: float
    wake: asyncio.Event
    stalled_since: float | None = None  # since when its socket has not taken what it was sent
    closed: str = ""  # why it was closed by the server ("" while open)

    def close(self, why: str) -> None:
        self.closed = self.closed or why
        self.wake.set()
        self.transport.abort()  # frees the descriptor now: close() would wait for a page that does not read


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
                 flag: str = "--http", *, max_connections: int | None = None,
                 max_event_clients: int = MAX_EVENT_CLIENTS, header_timeout: float = HEADER_TIMEOUT,
                 stall_seconds: float = STALL_SECONDS, logger: logging.Logger | None = None):
        """``max_connections``: open connections at most (None: ``connection_limit()`` of the open-file limit now);
        ``max_event_clients``: ``/events`` pages at once (at most half the connections)."""
        self.state, self.flag = state, flag
        self.host, self.port = parse_address(address, flag)
        self.token = token or None
        self.url = ""
        self.max_connections = max(2, int(max_connections or connection_limit()))
        self.max_event_clients = max(1, min(int(max_event_clients), self.max_connections // 2))
        self.header_timeout, self.stall_seconds = float(header_timeout), float(stall_seconds)
        self.logger = logger or one_line_logger()
        self.refused = 0  # connections answered 503 at the cap (every open one was answering a request)
        self.evicted = 0  # idle connections closed at the cap for a new one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._busy: set = set()  # aiohttp request handlers (connections) answering a request now
        self._pages: list[_Page] = []  # connected /events pages, oldest first

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
        loop.set_exception_handler(self._loop_error)
        self._loop = loop
        # keepalive_timeout runs from the moment a connection opens (aiohttp >= 3.11), so it is also the deadline
        # for a connection's first request line and headers
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0,
                               keepalive_timeout=self.header_timeout, logger=self.logger)
        self._runner = runner
        server: asyncio.AbstractServer | None = None
        try:
            loop.run_until_complete(runner.setup())
            # our own listening socket (not web.TCPSite) so every new connection passes the cap in _accept first
            server = loop.run_until_complete(loop.create_server(self._accept, self.host, self.port, backlog=128))
            self.port = server.sockets[0].getsockname()[1]
        except (OSError, RuntimeError, ValueError) as exc:
            self._error = exc
            if server is not None:
                server.close()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for page in list(self._pages):
                page.close("the dashboard is closing")
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def _accept(self) -> asyncio.BaseProtocol:
        """The protocol of a new connection: aiohttp's, after making room under ``max_connections`` by closing the
        oldest connection that is not answering a request; a 503 when there is none."""
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        open_now = [h for h in server.connections if h.transport is not None]  # oldest first
        if len(open_now) >= self.max_connections:
            idle = [h for h in open_now if h not in self._busy]
            if not idle:
                self.refused += 1
                return _Refuse()
            for handler in idle[:len(open_now) - self.max_connections + 1]:
                handler.force_close()
                self.evicted += 1
        return server()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """asyncio's errors (e.g. accept() out of descriptors): one rate-limited line each, never a traceback."""
        exc = context.get("exception")
        self.logger.error(context.get("message", "event loop error"), exc_info=exc if exc is not None else None)

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
        connection = request.protocol
        self._busy.add(connection)  # answering a request: not a connection the cap may close for a new one
        try:
            return await self._answer(request, handler)
        finally:
            self._busy.discard(connection)

    async def _answer(self, request: web.Request, handler) -> web.StreamResponse:
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
        transport = request.transport
        if transport is None or transport.is_closing():
            return web.Response(status=503, text="connection closed\n")
        if len(self._pages) >= self.max_event_clients:
            # the newest reader wins: the page stalled longest, else the oldest, makes room (a page reconnects)
            stalled = [p for p in self._pages if p.stalled_since is not None]
            victim = min(stalled, key=lambda p: p.stalled_since) if stalled else self._pages[0]
            victim.close("a newer page took its slot")
            self._pages.remove(victim)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # a small kernel buffer: a page that stops reading is seen after kilobytes, not megabytes
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENT_SEND_BUFFER)
            except OSError:
                pass
        page = _Page(transport, time.monotonic(), asyncio.Event())
        self._pages.append(page)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            since: dict[str, int] = {}
            sent_version, last_write = -1, 0.0
            while not self._closing and not page.closed:
                version, now = self.state.version, time.monotonic()
                if version != sent_version or now - last_write > 15:
                    if transport.is_closing():
                        break
                    if transport.get_write_buffer_size() > 0:
                        # the socket has not taken the last event yet: drop this one (the next event carries the
                        # state as it is then), and close a page that has taken nothing for stall_seconds
                        page.stalled_since = page.stalled_since or now
                        if now - page.stalled_since > self.stall_seconds:
                            page.close(f"took nothing for {self.stall_seconds:g} s")
                            break
                    else:
                        page.stalled_since = None
                        payload = json.dumps(self.state.changes(since), separators=(",", ":"))
                        await asyncio.wait_for(response.write(f"data: {payload}\n\n".encode()), self.stall_seconds)
                        sent_version, last_write = version, now
                try:
                    await asyncio.wait_for(page.wake.wait(), PUSH_SECONDS)
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, asyncio.TimeoutError, RuntimeError):
            page.close("went away or stopped reading")
        finally:
            if page in self._pages:
                self._pages.remove(page)
        return response

    def pages(self) -> int:
        """``/events`` pages connected now."""
        return len(self._pages)


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
    g.fillText((k === 1 ? "max " + peak.toFixed(2) + " %" : "max " + peak.toFixed(0) + " " + (d.unit || "px")),
               k === 1 ? 4 : w / 2, 11);
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
