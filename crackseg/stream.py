"""Frames from edge devices to a workstation over ZeroMQ: message format, sender, receiver, CURVE keys.

Message (version 1) = two ZeroMQ frames:

1. header: UTF-8 JSON object ``{"version": 1, "device": str, "frame": int, "time": float, "width": int,
   "height": int}`` plus optional ``"stats"`` (object of name -> number) and ``"model"`` (string). ``device`` is
   1-64 characters of ``A-Z a-z 0-9 . _ -`` starting with a letter or digit (it names folders on the receiver);
   ``frame`` >= 0; ``time`` is UNIX seconds; ``width``/``height`` are the JPEG's size, 1..16384. Unknown keys are
   ignored, so later versions can add fields.
2. body: the overlay image as JPEG, base64-encoded (standard alphabet, padded).

Devices connect a PUSH socket (``Sender``), the workstation binds one PULL socket (``Receiver``): many devices to
one PC. The sender never blocks the camera loop; the receiver validates every field and counts what it rejects.
numpy, OpenCV and pyzmq only.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import collections
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import zmq

VERSION = 1
MAX_MESSAGE_BYTES = 8 << 20  # 8 MiB: a 4K overlay at JPEG quality 95 is ~3 MiB, ~4 MiB in base64
MAX_HEADER_BYTES = 64 << 10
MAX_SIDE = 16384
DEVICE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REJECT_REASONS = ("frame_count", "oversized", "header_utf8", "header_json", "header_field", "version", "base64",
                  "jpeg", "size_mismatch")


class MessageError(ValueError):
    """A rejected message; ``reason`` is one of ``REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# ---------------------------------------------------------------------------------------------- format
def device_name(raw: str) -> str:
    """A valid device name from any string (e.g. a host name): invalid characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", raw).strip("-._")[:64]
    return name if name and DEVICE_PATTERN.fullmatch(name) else "device"


def make_header(device: str, frame: int, width: int, height: int, stats: dict | None = None,
                model: str | None = None, timestamp: float | None = None) -> dict:
    header = {"version": VERSION, "device": device, "frame": int(frame),
              "time": float(time.time() if timestamp is None else timestamp), "width": int(width),
              "height": int(height)}
    if stats is not None:
        header["stats"] = {k: v if _is_int(v) else float(v) for k, v in stats.items()}
    if model is not None:
        header["model"] = str(model)
    validate_header(header)
    return header


def encode_message(header: dict, jpeg: bytes) -> list[bytes]:
    """The two frames of a message."""
    return [json.dumps(header, separators=(",", ":")).encode("utf-8"), base64.b64encode(jpeg)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_header(header) -> dict:
    """Check every field of a decoded header; raise ``MessageError`` naming the first bad one."""
    if not isinstance(header, dict):
        raise MessageError("header_json", f"header is a JSON {type(header).__name__}, not an object")
    if "version" not in header:
        raise MessageError("version", "field 'version' is missing")
    if not _is_int(header["version"]) or header["version"] != VERSION:
        raise MessageError("version", f"field 'version' is {header['version']!r}; this receiver reads {VERSION}")
    for key in ("device", "frame", "time", "width", "height"):
        if key not in header:
            raise MessageError("header_field", f"field {key!r} is missing")
    device = header["device"]
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise MessageError("header_field", f"field 'device' {str(device)[:80]!r} is not 1-64 of [A-Za-z0-9._-]")
    if not _is_int(header["frame"]) or not 0 <= header["frame"] < 2**63:
        raise MessageError("header_field", f"field 'frame' {header['frame']!r} is not an integer >= 0")
    if not _is_number(header["time"]) or header["time"] < 0:
        raise MessageError("header_field", f"field 'time' {header['time']!r} is not UNIX seconds")
    for key in ("width", "height"):
        if not _is_int(header[key]) or not 1 <= header[key] <= MAX_SIDE:
            raise MessageError("header_field", f"field {key!r} {header[key]!r} is not an integer in 1..{MAX_SIDE}")
    if "stats" in header:
        stats = header["stats"]
        if not isinstance(stats, dict) or len(stats) > 64 or not all(
                isinstance(k, str) and len(k) <= 64 and _is_number(v) for k, v in stats.items()):
            raise MessageError("header_field", "field 'stats' is not an object of up to 64 name -> number pairs")
    if "model" in header and (not isinstance(header["model"], str) or len(header["model"]) > 256):
        raise MessageError("header_field", "field 'model' is not a string of up to 256 characters")
    return header


def decode_message(frames: list[bytes], max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict, bytes, np.ndarray]:
    """Validate a received message: (header, JPEG bytes, decoded RGB image) or ``MessageError``."""
    if len(frames) != 2:
        raise MessageError("frame_count", f"{len(frames)} frames; a message has 2 (header, image)")
    head, body = frames
    if len(head) + len(body) > max_bytes or len(head) > MAX_HEADER_BYTES:
        raise MessageError("oversized", f"{len(head) + len(body)} bytes; the limit is {max_bytes}")
    try:
        text = bytes(head).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError("header_utf8", str(exc)) from None
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MessageError("header_json", str(exc)[:200]) from None
    validate_header(header)
    try:
        jpeg = base64.b64decode(bytes(body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageError("base64", str(exc)[:200]) from None
    if not jpeg.startswith(b"\xff\xd8"):  # JPEG start-of-image; refuse PNG & co. before decoding anything
        raise MessageError("jpeg", "body is not a JPEG (no FFD8 start-of-image marker)")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MessageError("jpeg", "JPEG does not decode")
    if image.shape[:2] != (header["height"], header["width"]):
        raise MessageError("size_mismatch", f"header says {header['width']}x{header['height']}, JPEG is "
                                            f"{image.shape[1]}x{image.shape[0]}")
    return header, jpeg, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------- CURVE keys
SERVER_KEY, CLIENT_KEY = "server", "client"


def make_keys(out_dir: str | Path, clients: list[str]) -> dict[str, Path]:
    """CURVE key pairs for one workstation and ``clients`` devices, laid out for copying:

    ``OUT/pc/server.key_secret`` (+ ``server.key``) and ``OUT/pc/authorized_clients/<client>.key``: for PC.py
    ``--curve=OUT/pc``; ``OUT/<client>/client.key_secret`` and ``OUT/<client>/server.key``: for camera.py
    ``--curve=OUT/<client>`` on that device. Secret files are readable by their owner only.
    """
    import zmq.auth

    out = Path(out_dir)
    pc, authorized = out / "pc", out / "pc" / "authorized_clients"
    if not clients:
        raise ValueError("at least one client name is needed")
    for client in clients:
        if not DEVICE_PATTERN.fullmatch(client) or client == "pc":
            raise ValueError(f"client name {client!r} must be 1-64 of [A-Za-z0-9._-] and not 'pc'")
    authorized.mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(pc, SERVER_KEY)
    made = {"pc": pc}
    for client in clients:
        folder = out / client
        folder.mkdir(parents=True, exist_ok=True)
        public, secret = zmq.auth.create_certificates(folder, CLIENT_KEY)
        shutil.copyfile(public, authorized / f"{client}.key")
        shutil.copyfile(server_public, folder / f"{SERVER_KEY}.key")
        made[client] = folder
    for secret in out.rglob("*.key_secret"):
        secret.chmod(0o600)
    return made


def _load_key(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise FileNotFoundError(f"{path}: CURVE key file not found (make them with PC.py --make_keys=DIR)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a ZeroMQ certificate ({exc})") from None
    if secret and not secret_key:
        raise ValueError(f"{path}: holds no secret key")
    return public, secret_key


# ---------------------------------------------------------------------------------------------- sender
class Sender:
    """PUSH socket that connects to a receiver and never blocks the caller.

    Frames wait in a small queue of our own (``queue`` messages; when full the oldest is dropped and counted) and
    are handed to ZeroMQ with NOBLOCK; ZeroMQ's own high-water mark is kept tiny and ``IMMEDIATE`` stops it
    queueing for a receiver that is not connected, so stale frames do not pile up while the PC is away. ZeroMQ
    reconnects by itself when the receiver comes back.
    """

    def __init__(self, address: str, queue: int = 4, curve_dir: str | Path | None = None,
                 context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, 4)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        # Heartbeats notice a receiver that vanished without closing TCP (cable pulled, PC crashed).
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        if curve_dir:
            folder = Path(curve_dir)
            public, secret = _load_key(folder / f"{CLIENT_KEY}.key_secret", secret=True)
            server_public, _ = _load_key(folder / f"{SERVER_KEY}.key", secret=False)
            self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
            self.socket.curve_serverkey = server_public
        self.socket.connect(address)
        self.address = address
        self.pending: collections.deque[list[bytes]] = collections.deque(maxlen=max(1, queue))
        self.sent = 0
        self.dropped = 0

    def send(self, header: dict, jpeg: bytes) -> None:
        """Queue one frame (dropping the oldest when the queue is full) and push what ZeroMQ takes now."""
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(encode_message(header, jpeg))
        self.flush()

    def flush(self) -> int:
        """Hand queued frames to ZeroMQ until it would block; returns how many are still queued."""
        retried = False
        while self.pending:
            try:
                self.socket.send_multipart(self.pending[0], flags=zmq.NOBLOCK)
            except zmq.Again:
                # Reading EVENTS makes ZeroMQ process its pending flow-control commands (send() throttles that);
                # without it a tiny high-water mark can refuse frames the receiver already has room for.
                if not retried and self.socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
                    retried = True
                    continue
                break
            self.pending.popleft()
            self.sent += 1
            retried = False
        return len(self.pending)

    def close(self, timeout: float = 2.0) -> None:
        """Give queued frames up to ``timeout`` seconds to leave (the end of a video), then close."""
        deadline = time.monotonic() + timeout
        while self.flush() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.dropped += len(self.pending)
        self.pending.clear()
        # A short linger lets the last frames already inside ZeroMQ reach the wire.
        self.socket.close(linger=int(max(0.0, deadline - time.monotonic()) * 1000))


# ---------------------------------------------------------------------------------------------- receiver
@dataclass
class DeviceStats:
    frames: int = 0
    first: float = 0.0
    last: float = 0.0
    last_frame: int = -1
    times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=60))

    def fps(self) -> float:
        """Frames per second over the last (up to) 60 arrivals."""
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


@dataclass
class Received:
    header: dict
    jpeg: bytes
    image: np.ndarray  # RGB


class Receiver:
    """PULL socket bound to ``address``; ``receive`` returns the next valid message or None on timeout.

    Malformed messages are counted in ``rejected[reason]`` and skipped. ``zmq.MAXMSGSIZE`` makes ZeroMQ drop a
    peer that sends a frame above the limit before it is buffered; ``decode_message`` checks the total again.
    With ``curve_dir`` only clients whose public key is in ``curve_dir/authorized_clients`` get through.
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5555", max_bytes: int = MAX_MESSAGE_BYTES,
                 curve_dir: str | Path | None = None, context: zmq.Context | None = None):
        # ZeroMQ allows one authenticator (ZAP handler) per context, so a CURVE receiver gets a context of its own.
        self._own_context = context is None and bool(curve_dir)
        self.context = context or (zmq.Context() if curve_dir else zmq.Context.instance())
        self.max_bytes = int(max_bytes)
        self.authenticator = None
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        self.socket.setsockopt(zmq.RCVHWM, 100)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve_dir:
            from zmq.auth.thread import ThreadAuthenticator

            folder = Path(curve_dir)
            public, secret = _load_key(folder / f"{SERVER_KEY}.key_secret", secret=True)
            authorized = folder / "authorized_clients"
            if not authorized.is_dir() or not any(authorized.glob("*.key")):
                raise FileNotFoundError(f"{authorized}: no authorized client keys (*.key)")
            self.authenticator = ThreadAuthenticator(self.context)
            self.authenticator.start()
            self.authenticator.configure_curve(domain="*", location=str(authorized))
            self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
            self.socket.curve_server = True
        self.socket.bind(address)
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.rejected: collections.Counter = collections.Counter()
        self.devices: dict[str, DeviceStats] = {}
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)

    def receive(self, timeout: float | None = 1.0) -> Received | None:
        """The next valid message, waiting up to ``timeout`` seconds (None: forever) in total."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.poller.poll(None if wait is None else int(wait * 1000)):
                return None
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:  # a wake-up without a whole message (seen during CURVE handshakes): wait again
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            try:
                header, jpeg, image = decode_message(frames, self.max_bytes)
            except MessageError as exc:
                self.rejected[exc.reason] += 1
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            now = time.monotonic()
            stats = self.devices.setdefault(header["device"], DeviceStats(first=now))
            stats.frames += 1
            stats.last, stats.last_frame = now, header["frame"]
            stats.times.append(now)
            return Received(header, jpeg, image)

    def summary(self) -> str:
        """Per-device frames and FPS, and rejected counts by reason, on one line."""
        parts = [f"{name}: {s.frames} frames {s.fps():.1f} FPS" for name, s in sorted(self.devices.items())]
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        return "; ".join(parts or ["no frames"]) + f" | rejected {rejected}" + (f" ({reasons})" if reasons else "")

    def close(self) -> None:
        self.socket.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self._own_context:
            self.context.term()
            self._own_context = False


def main(argv: list[str] | None = None) -> None:
    """``python -m crackseg.stream keys --out DIR --clients cam1,cam2``: generate CURVE keys."""
    parser = argparse.ArgumentParser(description="Generate ZeroMQ CURVE keys for PC.py and camera.py.")
    parser.add_argument("command", choices=["keys"])
    parser.add_argument("--out", required=True, help="folder for the keys (pc/ and one folder per client)")
    parser.add_argument("--clients", required=True, help="comma-separated device names")
    args = parser.parse_args(argv)
    made = make_keys(args.out, [c.strip() for c in args.clients.split(",") if c.strip()])
    for name, folder in made.items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
