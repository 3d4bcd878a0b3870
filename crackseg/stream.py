"""Frames from edge devices to a workstation over ZeroMQ: message format, sender, receiver, CURVE keys.

Message (version 1) = two ZeroMQ frames:

1. header: UTF-8 JSON object ``{"version": 1, "device": str, "frame": int, "time": float, "width": int,
   "height": int}`` plus optional ``"run"`` (the sender's per-run id, same rule as ``device``), ``"stats"``
   (object of name -> number) and ``"model"`` (string). ``device`` is 1-64 characters of ``A-Z a-z 0-9 . _ -``
   starting with a letter or digit (it names folders on the receiver); ``frame`` >= 0; ``time`` is UNIX seconds;
   ``width``/``height`` are the JPEG's size, 1..16384. Unknown keys are dropped on receipt (``KNOWN_FIELDS``), so
   later versions can add fields without older receivers storing what they do not understand.
2. body: the overlay image as JPEG, base64-encoded (standard alphabet, padded).

Devices connect a PUSH socket (``Sender``), the workstation binds one PULL socket (``Receiver``): many devices to
one PC. The sender never blocks the camera loop. The receiver validates every field and the JPEG's own structure
(its frame header, read before any pixel is decoded: size as the header says, at most ``max_pixels``) on the
receiving thread, decodes on helper threads (one frame per device at a time, so a slow frame holds up only its own
device), and counts what it rejects. numpy, OpenCV and pyzmq only.
"""
from __future__ import annotations

import base64
import binascii
import collections
import json
import math
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import zmq

VERSION = 1
MAX_MESSAGE_BYTES = 8 << 20  # 8 MiB: a 4K overlay at JPEG quality 95 is ~3 MiB, ~4 MiB in base64
MAX_HEADER_BYTES = 64 << 10
MAX_SIDE = 16384
MAX_PIXELS = 4096 * 4096     # default cap on width x height of a received JPEG (PC.py --max_pixels)
MAX_DEVICES = 64             # default number of distinct devices a receiver admits (PC.py --max_devices)
MAX_SCANS = 256              # a progressive JPEG has ~10 scans; each one re-reads every block, so cap them
MAX_SEGMENTS = 2048          # marker segments in one JPEG (tables, scans, APPn); real files have < 100
DEVICE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KNOWN_FIELDS = ("version", "device", "run", "frame", "time", "width", "height", "stats", "model")
REJECT_REASONS = ("frame_count", "oversized", "header_utf8", "header_json", "header_field", "version", "base64",
                  "jpeg", "size_mismatch", "pixels", "devices", "busy")


class MessageError(ValueError):
    """A rejected message; ``reason`` is one of ``REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class KeysError(ValueError):
    """CURVE keys that cannot be made or read; one line naming the file or the name."""


# ---------------------------------------------------------------------------------------------- format
def device_name(raw: str) -> str:
    """A valid device name from any string (e.g. a host name): invalid characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", raw).strip("-._")[:64]
    return name if name and DEVICE_PATTERN.fullmatch(name) else "device"


def new_run_id() -> str:
    """A sender's id for one run (UTC start time + random), so frame numbers restarting at 0 never collide."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def make_header(device: str, frame: int, width: int, height: int, stats: dict | None = None,
                model: str | None = None, timestamp: float | None = None, run: str | None = None) -> dict:
    header = {"version": VERSION, "device": device, "frame": int(frame),
              "time": float(time.time() if timestamp is None else timestamp), "width": int(width),
              "height": int(height)}
    if run is not None:
        header["run"] = run
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
    if "run" in header and (not isinstance(header["run"], str) or not DEVICE_PATTERN.fullmatch(header["run"])):
        raise MessageError("header_field", f"field 'run' {str(header['run'])[:80]!r} is not 1-64 of [A-Za-z0-9._-]")
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


# SOF0..SOF15 carry the frame header; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frame headers.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Inside entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart marker D0-D7; anything else
# is the next marker (0xFF fill bytes included).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOFn), reading its marker structure only: no pixel is decoded.

    The whole marker chain is walked (entropy-coded data is skipped with one C-level search per scan), so a file
    with no frame header, a second one, a broken segment length, more than ``MAX_SCANS`` scans or
    ``MAX_SEGMENTS`` segments, no end-of-image marker, a precision other than 8 bits, or an unusual number of
    components raises ``MessageError('jpeg')`` before OpenCV allocates anything.
    """
    data = memoryview(jpeg)
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise MessageError("jpeg", "body is not a JPEG (no FFD8 start-of-image marker)")
    pos, size, scans, segments = 2, None, 0, 0
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise MessageError("jpeg", f"no marker at byte {pos} (truncated or corrupt JPEG)")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise MessageError("jpeg", "ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers: no length
            continue
        if marker in (0x00, 0xD8):
            raise MessageError("jpeg", f"unexpected marker FF{marker:02X} at byte {pos - 1}")
        if pos + 2 > n:
            raise MessageError("jpeg", "ends inside a segment length")
        length = (data[pos] << 8) | data[pos + 1]
        end = pos + length
        if length < 2 or end > n:
            raise MessageError("jpeg", f"segment FF{marker:02X} of length {length} runs past the end")
        segments += 1
        if segments > MAX_SEGMENTS:
            raise MessageError("jpeg", f"more than {MAX_SEGMENTS} marker segments")
        if marker in _SOF_MARKERS:
            if size is not None:
                raise MessageError("jpeg", "a second frame header (SOF)")
            if length < 8:
                raise MessageError("jpeg", "frame header (SOF) too short")
            precision = data[pos + 2]
            height, width = (data[pos + 3] << 8) | data[pos + 4], (data[pos + 5] << 8) | data[pos + 6]
            components = data[pos + 7]
            if precision != 8:
                raise MessageError("jpeg", f"{precision}-bit samples; only 8-bit JPEGs are read")
            if components not in (1, 3, 4):
                raise MessageError("jpeg", f"{components} colour components; 1, 3 or 4 are read")
            if width == 0 or height == 0:
                raise MessageError("jpeg", f"frame header says {width}x{height}")
            size = (width, height)
        pos = end
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            if size is None:
                raise MessageError("jpeg", "a scan before the frame header (SOF)")
            scans += 1
            if scans > MAX_SCANS:
                raise MessageError("jpeg", f"more than {MAX_SCANS} scans")
            found = _NEXT_MARKER.search(jpeg, pos)
            if found is None:
                raise MessageError("jpeg", "no end-of-image marker (truncated JPEG)")
            pos = found.start()
    if size is None or not scans:
        raise MessageError("jpeg", "no frame header (SOF) or no scan")
    return size


def check_message(frames: list[bytes], max_bytes: int = MAX_MESSAGE_BYTES,
                  max_pixels: int = MAX_PIXELS) -> tuple[dict, bytes]:
    """Everything about a message that needs no pixel decoding: (header with only ``KNOWN_FIELDS``, JPEG bytes)
    or ``MessageError``. The JPEG's own frame header must match the header's size and stay within ``max_pixels``."""
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
    header = {k: header[k] for k in KNOWN_FIELDS if k in header}
    if header["width"] * header["height"] > max_pixels:
        raise MessageError("pixels", f"{header['width']}x{header['height']} is above --max_pixels={max_pixels}")
    try:
        jpeg = base64.b64decode(bytes(body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageError("base64", str(exc)[:200]) from None
    width, height = jpeg_size(jpeg)
    if (width, height) != (header["width"], header["height"]):
        raise MessageError("size_mismatch", f"header says {header['width']}x{header['height']}, JPEG is "
                                            f"{width}x{height}")
    return header, jpeg


def decode_jpeg(header: dict, jpeg: bytes) -> np.ndarray:
    """Decode a JPEG that ``check_message`` passed: RGB uint8 of the header's size, or ``MessageError``."""
    try:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own pixel cap (OPENCV_IO_MAX_IMAGE_PIXELS), set by PC.py
        raise MessageError("pixels", str(exc).strip().splitlines()[-1][:200]) from None
    if image is None:
        raise MessageError("jpeg", "JPEG does not decode")
    if image.shape[:2] != (header["height"], header["width"]):
        raise MessageError("size_mismatch", f"header says {header['width']}x{header['height']}, JPEG is "
                                            f"{image.shape[1]}x{image.shape[0]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: no second full-size copy


def decode_message(frames: list[bytes], max_bytes: int = MAX_MESSAGE_BYTES,
                   max_pixels: int = MAX_PIXELS) -> tuple[dict, bytes, np.ndarray]:
    """Validate and decode a received message: (header, JPEG bytes, decoded RGB image) or ``MessageError``."""
    header, jpeg = check_message(frames, max_bytes, max_pixels)
    return header, jpeg, decode_jpeg(header, jpeg)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------- CURVE keys
SERVER_KEY, CLIENT_KEY = "server", "client"
_CERT = """#   ****  Generated on {date} by crackseg (PC.py --make_keys)  ****
#   ZeroMQ CURVE {kind} Certificate
#   {warning}

metadata
curve
    public-key = "{public}"
{secret}"""


def _write_certificate(path: Path, public: bytes, secret: bytes | None) -> None:
    """One ZeroMQ certificate file (the format ``zmq.auth.load_certificate`` reads), written to a temporary name
    and renamed. A secret one is created 0600 (owner only) from its first byte, not chmod-ed afterwards."""
    text = _CERT.format(date=time.strftime("%Y-%m-%d %H:%M:%S"), kind="**Secret**" if secret else "Public",
                        warning="DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." if secret
                        else "Exchange securely, or use a secure mechanism to verify the contents of this file "
                             "after exchange.",
                        public=public.decode("ascii"),
                        secret=f'    secret-key = "{secret.decode("ascii")}"\n' if secret else "")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _key_folder(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def make_keys(out_dir: str | Path, clients: list[str], new_server_key: bool = False) -> dict[str, Path]:
    """CURVE key pairs for one workstation and ``clients`` devices, laid out for copying:

    ``OUT/pc/server.key_secret`` (+ ``server.key``) and ``OUT/pc/authorized_clients/<client>.key``: for PC.py
    ``--curve=OUT/pc``; ``OUT/<client>/client.key_secret`` and ``OUT/<client>/server.key``: for camera.py
    ``--curve=OUT/<client>`` on that device.

    Run again on the same folder it keeps what is there: the server key pair (devices already deployed stay
    valid) and every client that has its keys; only missing clients are added. ``new_server_key=True`` replaces
    the server pair and rewrites every client's ``server.key`` (each device then needs its new folder). Secret
    files are owner-only from their first byte (and the process umask is 077 meanwhile); folders are 0700.
    Returns ``{"pc": folder, client: folder, ...}`` for every client named; raises ``KeysError``.
    """
    import zmq.auth

    out = Path(out_dir)
    pc, authorized = out / "pc", out / "pc" / "authorized_clients"
    if not clients:
        raise KeysError("at least one client name is needed")
    for client in clients:
        if not DEVICE_PATTERN.fullmatch(client) or client == "pc":
            raise KeysError(f"client name {client!r} must be 1-64 of [A-Za-z0-9._-] and not 'pc'")
    if out.exists() and not out.is_dir():
        raise KeysError(f"{out}: exists and is not a folder")
    old_umask = os.umask(0o077)
    try:
        for folder in (out, pc, authorized):
            _key_folder(folder)
        server_secret_file = pc / f"{SERVER_KEY}.key_secret"
        if server_secret_file.is_file() and not new_server_key:
            try:
                server_public, _ = zmq.auth.load_certificate(server_secret_file)
            except (ValueError, OSError) as exc:
                raise KeysError(f"{server_secret_file}: not a ZeroMQ certificate ({exc}); "
                                "--new_server_key replaces it") from None
        else:
            server_public, server_secret = zmq.curve_keypair()
            _write_certificate(server_secret_file, server_public, server_secret)
            _write_certificate(pc / f"{SERVER_KEY}.key", server_public, None)
        existing = sorted(p.parent.name for p in out.glob(f"*/{CLIENT_KEY}.key_secret") if p.parent.name != "pc")
        made = {"pc": pc}
        for client in dict.fromkeys([*clients, *existing]):  # named ones first, then every other existing one
            folder = out / client
            _key_folder(folder)
            secret_file = folder / f"{CLIENT_KEY}.key_secret"
            if not secret_file.is_file():
                public, secret = zmq.curve_keypair()
                _write_certificate(secret_file, public, secret)
                _write_certificate(folder / f"{CLIENT_KEY}.key", public, None)
            else:
                try:
                    public, _ = zmq.auth.load_certificate(secret_file)
                except (ValueError, OSError) as exc:
                    raise KeysError(f"{secret_file}: not a ZeroMQ certificate ({exc})") from None
            _write_certificate(authorized / f"{client}.key", public, None)
            _write_certificate(folder / f"{SERVER_KEY}.key", server_public, None)
            if client in clients:
                made[client] = folder
    finally:
        os.umask(old_umask)
    return made


def _load_key(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise FileNotFoundError(f"{path}: CURVE key file not found (make them with PC.py --make_keys=DIR)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise KeysError(f"{path}: not a ZeroMQ certificate ({exc})") from None
    if secret and not secret_key:
        raise KeysError(f"{path}: holds no secret key")
    return public, secret_key


# ---------------------------------------------------------------------------------------------- sender
class Sender:
    """PUSH socket that connects to a receiver and never blocks the caller.

    Frames wait in a small queue of our own (``queue`` messages; when full the oldest is dropped and counted) and
    are handed to ZeroMQ with NOBLOCK; ZeroMQ's own high-water mark is kept tiny and ``IMMEDIATE`` stops it
    queueing for a receiver that is not connected, so stale frames do not pile up while the PC is away. ZeroMQ
    reconnects by itself when the receiver comes back. Every header gets this sender's ``run`` id (one per
    Sender), so a receiver saving frames tells two runs of the same device apart.
    """

    def __init__(self, address: str, queue: int = 4, curve_dir: str | Path | None = None,
                 context: zmq.Context | None = None, run: str | None = None):
        self.context = context or zmq.Context.instance()
        self.run = run or new_run_id()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, 4)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        # Heartbeats notice a receiver that vanished without closing TCP (cable pulled, PC crashed).
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        try:
            if curve_dir:
                folder = Path(curve_dir)
                public, secret = _load_key(folder / f"{CLIENT_KEY}.key_secret", secret=True)
                server_public, _ = _load_key(folder / f"{SERVER_KEY}.key", secret=False)
                self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
                self.socket.curve_serverkey = server_public
            self.socket.connect(address)
        except BaseException:
            self.socket.close(linger=0)
            raise
        self.address = address
        self.pending: collections.deque[list[bytes]] = collections.deque(maxlen=max(1, queue))
        self.sent = 0
        self.dropped = 0

    def send(self, header: dict, jpeg: bytes) -> None:
        """Queue one frame (dropping the oldest when the queue is full) and push what ZeroMQ takes now."""
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        if "run" not in header:
            header = {**header, "run": self.run}
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
    image: np.ndarray | None  # RGB; None when the receiver was made with keep_images=False (decoded, then dropped)
    received: float = 0.0  # UNIX seconds when it came off the socket


SUMMARY_DEVICES = 20  # the status line names each device up to this many, then summarises
LIGHT_PIXELS = 1920 * 1088  # frames up to this size decode in their own lane, never behind a large one


class Receiver:
    """PULL socket bound to ``address``; ``receive`` returns the next valid message or None on timeout.

    Every message is checked on the calling thread without decoding pixels (``check_message``: fields, JPEG
    structure, size against the header and ``max_pixels``), then decoded on a helper thread, one frame per device
    at a time, so frames of one device stay in order and a slow frame holds up only its own device. Frames up to
    ``LIGHT_PIXELS`` (Full HD) decode on ``decode_threads`` threads of their own; larger ones on one thread of
    their own, so at most one large image is in memory at once and a stream of the largest JPEGs (or a device
    sending nothing else) never delays the ordinary frames of other devices. At most ``decode_queue`` frames per device
    wait, and what waits, is being decoded or is decoded but not yet returned stays within a budget (``4 * max_bytes``
    of JPEG, plus three ``max_pixels`` images when ``keep_images``); beyond that frames are rejected as ``busy``. With
    ``keep_images=False`` (no window to show them) every JPEG is still fully decoded, then its pixels dropped. Only the
    first ``max_devices`` device names are admitted, later ones are rejected as ``devices``. Malformed messages are
    counted in ``rejected[reason]`` and skipped.
    ``zmq.MAXMSGSIZE`` makes ZeroMQ drop a peer that sends a frame above the limit before it is buffered.
    With ``curve_dir`` only clients whose public key is in ``curve_dir/authorized_clients`` get through.
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5555", max_bytes: int = MAX_MESSAGE_BYTES,
                 curve_dir: str | Path | None = None, context: zmq.Context | None = None, *,
                 max_pixels: int = MAX_PIXELS, max_devices: int = MAX_DEVICES, decode_threads: int = 2,
                 decode_queue: int = 4, keep_images: bool = True):
        # ZeroMQ allows one authenticator (ZAP handler) per context, so a CURVE receiver gets a context of its own.
        self._own_context = context is None and bool(curve_dir)
        self.context = context or (zmq.Context() if curve_dir else zmq.Context.instance())
        self.max_bytes, self.max_pixels, self.max_devices = int(max_bytes), int(max_pixels), int(max_devices)
        self.decode_queue = max(1, int(decode_queue))
        self.keep_images = bool(keep_images)
        self.max_pending_bytes = 4 * self.max_bytes + (3 * 3 * self.max_pixels if self.keep_images else 0)
        self.authenticator = None
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        self.socket.setsockopt(zmq.RCVHWM, 16)  # per peer: at most this many whole messages buffered in ZeroMQ
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
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
        except BaseException:
            self.close()
            raise
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.rejected: collections.Counter = collections.Counter()
        self.devices: dict[str, DeviceStats] = {}
        self._admitted: set[str] = set()
        self._waiting: dict[str, collections.deque] = {}
        self._busy: set[str] = set()
        self._done: collections.deque = collections.deque()   # (device, bytes, Received | MessageError)
        self._ready: collections.deque[Received] = collections.deque()
        self._pending_bytes = 0
        self._pools = (ThreadPoolExecutor(max(1, int(decode_threads)), thread_name_prefix="crackseg-decode"),
                       ThreadPoolExecutor(1, thread_name_prefix="crackseg-decode-large"))
        self._wake_r, self._wake_w = os.pipe()  # a finished decode wakes the poll below
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self._wake_r, zmq.POLLIN)

    # -- receiving thread
    def receive(self, timeout: float | None = 1.0) -> Received | None:
        """The next valid message, waiting up to ``timeout`` seconds (None: forever) in total."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._collect()
            if self._ready:
                return self._hand_out()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = dict(self.poller.poll(None if wait is None else int(wait * 1000)))
            if not events:
                self._collect()
                return self._hand_out() if self._ready else None
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            if self.socket in events:
                for _ in range(64):  # take what is there, but come back to finished decodes regularly
                    try:
                        frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=True)
                    except zmq.Again:  # a wake-up without a whole message (seen during CURVE handshakes)
                        break
                    self._take(frames)
                    del frames
            if deadline is not None and time.monotonic() >= deadline and not self._ready:
                self._collect()
                if not self._ready:
                    return None

    def _hand_out(self) -> Received:
        result = self._ready.popleft()
        self._pending_bytes -= self._cost(result.header, result.jpeg)
        return result

    def _take(self, frames: list[bytes]) -> None:
        try:
            header, jpeg = check_message(frames, self.max_bytes, self.max_pixels)
        except MessageError as exc:
            self.rejected[exc.reason] += 1
            return
        device = header["device"]
        if device not in self._admitted:
            if len(self._admitted) >= self.max_devices:
                self.rejected["devices"] += 1
                return
            self._admitted.add(device)
        waiting = self._waiting.setdefault(device, collections.deque())
        cost = self._cost(header, jpeg)
        if len(waiting) >= self.decode_queue or (
                self._pending_bytes and self._pending_bytes + cost > self.max_pending_bytes):
            self.rejected["busy"] += 1
            return
        waiting.append((header, jpeg, time.time()))
        self._pending_bytes += cost
        self._start(device)

    def _cost(self, header: dict, jpeg: bytes) -> int:
        """Memory a frame holds from admission until ``receive`` returns it."""
        return len(jpeg) + (3 * header["width"] * header["height"] if self.keep_images else 0)

    def _start(self, device: str) -> None:
        waiting = self._waiting.get(device)
        if device in self._busy or not waiting:
            return
        header, jpeg, received = waiting.popleft()
        self._busy.add(device)
        pool = self._pools[header["width"] * header["height"] > LIGHT_PIXELS]
        pool.submit(self._decode, device, header, jpeg, received)

    def _collect(self) -> None:
        while self._done:
            device, cost, result = self._done.popleft()
            self._busy.discard(device)
            if isinstance(result, MessageError):
                self._pending_bytes -= cost
                self.rejected[result.reason] += 1
            else:
                now = time.monotonic()
                stats = self.devices.setdefault(device, DeviceStats(first=now))
                stats.frames += 1
                stats.last, stats.last_frame = now, result.header["frame"]
                stats.times.append(now)
                self._ready.append(result)
            self._start(device)

    # -- decoding threads
    def _decode(self, device: str, header: dict, jpeg: bytes, received: float) -> None:
        try:
            image = decode_jpeg(header, jpeg)
            result: Received | MessageError = Received(header, jpeg, image if self.keep_images else None, received)
            del image
        except MessageError as exc:
            result = exc
        except Exception as exc:  # anything OpenCV throws is a bad JPEG, never a dead thread
            result = MessageError("jpeg", f"{type(exc).__name__}: {exc}"[:200])
        self._done.append((device, self._cost(header, jpeg), result))
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):  # pipe full (a wake-up is pending anyway) or closed
            pass

    def summary(self) -> str:
        """Per-device frames and FPS (summarised beyond ``SUMMARY_DEVICES`` devices) and rejected counts by
        reason, on one line of bounded length."""
        if len(self.devices) > SUMMARY_DEVICES:
            busiest = sorted(self.devices.items(), key=lambda kv: -kv[1].fps())[:3]
            total_fps = sum(s.fps() for s in self.devices.values())
            parts = [f"{len(self.devices)} devices: {sum(s.frames for s in self.devices.values())} frames "
                     f"{total_fps:.1f} FPS in all (busiest " + ", ".join(f"{k} {s.fps():.1f}" for k, s in busiest)
                     + ")"]
        else:
            parts = [f"{name}: {s.frames} frames {s.fps():.1f} FPS" for name, s in sorted(self.devices.items())]
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        return "; ".join(parts or ["no frames"]) + f" | rejected {rejected}" + (f" ({reasons})" if reasons else "")

    def close(self) -> None:
        if getattr(self, "_pools", None) is not None:
            for pool in self._pools:
                pool.shutdown(wait=False, cancel_futures=True)
            self._pools = None
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
        self.socket.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self._own_context:
            self.context.term()
            self._own_context = False


# ---------------------------------------------------------------------------------------------- saving
class FrameSaver:
    """Received frames into ``DIR/<device>/<run>-<frame>.jpg`` (atomically) plus one JSON line each in
    ``DIR/headers.jsonl``; nothing already there is ever overwritten.

    The sender's ``run`` id keeps two runs of one device apart (their frame numbers both start at 0); a header
    without one (an older sender) or any other clash gets a ``-1``, ``-2``, ... suffix. Each file is written under
    a temporary name and then hard-linked to its final name, which fails rather than replace an existing file.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise FileExistsError(f"{self.folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._headers = open(self.folder / "headers.jsonl", "a", encoding="utf-8")
        self._made: set[str] = set()

    def save(self, header: dict, jpeg: bytes, received: float | None = None) -> str:
        """Write one frame; returns its path relative to the folder (also in the JSON line as ``file``)."""
        device = header["device"]
        folder = self.folder / device
        if device not in self._made:
            folder.mkdir(exist_ok=True)
            self._made.add(device)
        stem = (f"{header['run']}-" if "run" in header else "") + f"{header['frame']:08d}"
        tmp = folder / f".{stem}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "xb") as f:
            f.write(jpeg)
            f.flush()
            os.fsync(f.fileno())
        try:
            for attempt in range(10_000):
                name = f"{stem}.jpg" if attempt == 0 else f"{stem}-{attempt}.jpg"
                try:
                    os.link(tmp, folder / name)
                    break
                except FileExistsError:
                    continue
                except OSError:  # no hard links on this file system (FAT, some network shares): check, rename
                    if (folder / name).exists():
                        continue
                    os.replace(tmp, folder / name)
                    break
            else:
                raise FileExistsError(f"{folder / stem}: 10000 files of this name already")
        finally:
            if tmp.exists():
                tmp.unlink()
        relative = f"{device}/{name}"
        line = {**{k: header[k] for k in KNOWN_FIELDS if k in header}, "file": relative,
                "received": time.time() if received is None else received}
        self._headers.write(json.dumps(line) + "\n")
        self._headers.flush()
        return relative

    def close(self) -> None:
        self._headers.close()
