"""PC.py: the workstation side: receive crack overlays from any number of camera.py devices over ZeroMQ and show
them live in a browser.

    python PC.py                                           # listen on tcp://127.0.0.1:5555; page at 127.0.0.1:8080
    python PC.py --bind=tcp://0.0.0.0:5555 --save=received/ --http=""
    python PC.py --make_keys=keys --clients=truck1,truck2  # CURVE keys: keys/pc here, keys/truck1 on truck1, ...
    python PC.py --bind=tcp://0.0.0.0:5555 --curve=keys/pc # encrypted; only the listed devices get in

Needs numpy, OpenCV, pyzmq and aiohttp only (never TensorFlow or the model). Listening on anything but loopback
needs an explicit --bind (devices) or --http (the page). The page (docs/workstation.md) has one tile per device:
latest overlay, FPS, latency, crack statistics, last seen, online/offline and a live chart; JSON at /api/devices.
With --curve or a non-loopback --http it needs a token (--http_token, else one is made and printed).
--save writes DIR/<device>/<run>-<frame>.jpg (atomically, never over an existing file) and one JSON line per frame
to DIR/headers.jsonl. Malformed messages (wrong frame count, bad JSON or fields, bad base64 or JPEG, a JPEG whose
own frame header differs from the message's or exceeds --max_pixels, oversized, unknown version, beyond
--max_devices) are counted by reason and skipped. Per-device FPS and rejected counts are printed every
--report_every s. --make_keys on an existing folder keeps its server key and adds only missing clients.
At start the soft open-file limit is raised to the hard one; the page keeps its connections below it (idle and
stalled browsers are closed, docs/workstation.md). A frame that cannot be saved for want of file descriptors is
one line (rate-limited) and counted, and receiving goes on; a --save disk that fills up or goes away ends the run.
"""
import errno
import os
import signal
import sys
import time
from pathlib import Path

from crackseg.config import configure

bind = "tcp://127.0.0.1:5555"     # where camera.py devices connect (--send on their side)
http = "127.0.0.1:8080"           # the live page (HOST:PORT; port 0 picks a free one); "" = no page
http_token = ""                   # token the page asks for; "" = made up and printed when one is needed
                                  # (with --curve or a non-loopback --http)
save = ""                         # folder for received frames + headers.jsonl; "" = do not save
headless = False                  # no OpenCV windows (the page still runs)
max_frames = 0                    # exit after this many valid frames (0: run until Ctrl+C)
max_seconds = 0.0                 # exit after this long (0: no limit)
max_message_mb = 8.0              # larger messages are refused
max_pixels = 4096 * 4096          # larger JPEGs (width x height, read from the JPEG's own header) are refused
max_devices = 64                  # distinct device names admitted; frames from further devices are refused
curve = ""                        # CURVE folder: server.key_secret + authorized_clients/*.key
make_keys = ""                    # write CURVE keys into this folder and exit (keeps an existing server key)
clients = "camera"                # device names for --make_keys, comma-separated
new_server_key = False            # --make_keys: replace the server key too (every device needs its new folder)
report_every = 5.0                # seconds between status lines

config = configure(globals(), __doc__)

# OpenCV's own pixel cap, read once when cv2 loads: a second line of defence behind the JPEG header check.
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max(1, max_pixels))

import cv2  # noqa: E402
import zmq  # noqa: E402

from crackseg.stream import FrameSaver, KeysError, Receiver, make_keys as generate_keys  # noqa: E402


def fail(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


def check_flags() -> str | None:
    """The first bad flag, as one line; None when all are usable."""
    if max_message_mb <= 0:
        return f"--max_message_mb={max_message_mb}: must be > 0"
    if max_pixels < 1:
        return f"--max_pixels={max_pixels}: must be >= 1"
    if max_devices < 1:
        return f"--max_devices={max_devices}: must be >= 1"
    if report_every <= 0:
        return f"--report_every={report_every}: must be > 0"
    if max_frames < 0 or max_seconds < 0:
        return "--max_frames and --max_seconds must be >= 0"
    if save and Path(save).exists() and not Path(save).is_dir():
        return f"--save={save}: exists and is not a folder"
    if curve and not Path(curve).is_dir():
        return f"--curve={curve}: no such folder (make one with --make_keys=DIR)"
    return None


def show_windows() -> bool:
    try:
        cv2.namedWindow("PC", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("PC")
        return True
    except cv2.error:
        print("no display (OpenCV without GUI support, or no $DISPLAY): no windows"
              + ("; the dashboard page shows the streams" if http
                 else "; --http=127.0.0.1:8080 shows them in a browser"),
              flush=True)
        return False


def keys() -> int:
    names = [c.strip() for c in clients.split(",") if c.strip()]
    try:
        made = generate_keys(make_keys, names, new_server_key=new_server_key)
    except (KeysError, OSError) as exc:
        return fail(str(exc))
    print(f"CURVE keys in {make_keys}: PC.py --curve={made['pc']}; on each device camera.py --curve=<its folder>: "
          + ", ".join(f"{k}: {v}" for k, v in made.items() if k != "pc")
          + ("; new server key: copy every device's folder again" if new_server_key else ""))
    return 0


def raise_open_file_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard one (the page's connections, ZeroMQ's peers and the saved frames
    all count against it); returns the soft limit now (None: unlimited, or not Unix). Never fails."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. macOS refuses an unlimited hard limit: keep what there is
            pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


# A saver error of these kinds passes (another process or a flood of connections holds the descriptors): the frame
# is not saved, the run goes on. Any other (disk full, folder gone) ends the run.
TRANSIENT_SAVE_ERRORS = (errno.EMFILE, errno.ENFILE)


class Lines:
    """One line per kind of trouble, at most every ``every`` seconds each, with how many happened in between."""

    def __init__(self, every: float = 5.0):
        self.every = every
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def say(self, kind: str, text: str) -> None:
        self._count[kind] = self._count.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.every:
            more = self._count[kind] - 1
            print(f"warning: {text}" + (f" ({more} more since the last such line)" if more > 0 else ""),
                  file=sys.stderr, flush=True)
            self._last[kind], self._count[kind] = now, 0


def start_page():
    """(state, dashboard) for --http, or (None, None); raises DashboardError / ImportError."""
    if not http:
        return None, None
    from crackseg.dashboard import Dashboard, DashboardState, is_loopback, new_token, parse_address

    host, _ = parse_address(http)
    needs_token = bool(curve) or not is_loopback(host)
    token = http_token or (new_token() if needs_token else "")
    state = DashboardState(title="PC.py")
    page = Dashboard(state, http, token or None)
    url = page.start()
    print(f"dashboard: {url}" + (" (token required; keep it private)" if token else ""), flush=True)
    return state, page


def run() -> int:
    if make_keys:
        return keys()
    problem = check_flags()
    if problem:
        return fail(problem)
    raise_open_file_limit()
    show = not headless and not save and show_windows()
    try:
        receiver = Receiver(bind, int(max_message_mb * 2**20), curve or None, max_pixels=max_pixels,
                            max_devices=max_devices, keep_images=show)
    except (zmq.ZMQError, OSError, ValueError) as exc:
        return fail(f"cannot listen on {bind}: {exc}", 1)
    saver = state = page = None
    try:
        saver = FrameSaver(save) if save else None
        state, page = start_page()
    except ImportError as exc:
        receiver.close()
        return fail(f"--http needs aiohttp (pip install -r requirements-pc.txt): {exc}", 1)
    except Exception as exc:  # DashboardError, or an OSError from --save: one line either way
        receiver.close()
        if page is not None:
            page.close()
        return fail(f"--save={save}: {exc}" if isinstance(exc, OSError) else str(exc), 1)
    valid, started, next_report = 0, time.monotonic(), time.monotonic() + report_every
    reason, status, unsaved, lines = "interrupted", 0, 0, Lines()
    try:
        print(f"listening on {receiver.address}" + (" (CURVE)" if curve else "")
              + (f"; saving to {saver.folder}" if saver else ""), flush=True)
        while True:
            now = time.monotonic()
            if max_seconds and now - started >= max_seconds:
                reason = f"--max_seconds={max_seconds} reached"
                break
            wait = min(0.5, max(0.0, next_report - now))
            message = receiver.receive(timeout=wait)
            if state is not None:
                try:  # the page is a view: its trouble never stops receiving or saving
                    state.set_rejected(receiver.rejected)
                except Exception as exc:  # any error of the page: one line, receiving goes on
                    lines.say("page", f"dashboard: {type(exc).__name__}: {exc}")
            if message is not None:
                header = message.header
                valid += 1
                if state is not None:
                    try:
                        state.update(header, message.jpeg, message.received)
                    except Exception as exc:  # any error of the page: one line, receiving goes on
                        lines.say("page", f"dashboard: {type(exc).__name__}: {exc}")
                if saver:
                    try:
                        saver.save(header, message.jpeg, message.received)
                    except OSError as exc:
                        if exc.errno not in TRANSIENT_SAVE_ERRORS:
                            raise
                        unsaved += 1
                        lines.say("save", f"--save={save}: frame {header['frame']} of {header['device']} not "
                                          f"saved: {exc.strerror or exc}")
                if show:
                    cv2.imshow(f"crack: {header['device']}", cv2.cvtColor(message.image, cv2.COLOR_RGB2BGR))
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        reason = "stopped from the window"
                        break
                del message
                if max_frames and valid >= max_frames:
                    reason = f"--max_frames={max_frames} reached"
                    break
            if time.monotonic() >= next_report:
                print(receiver.summary(), flush=True)
                next_report = time.monotonic() + report_every
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the --save disk filled up or went away
        reason, status = f"error: --save={save}: {exc}", 1
    finally:
        if saver:
            saver.close()
        if page is not None:
            page.close()
        receiver.close()
        if show:
            cv2.destroyAllWindows()
    print(f"done: {valid} valid frames" + (f" ({unsaved} not saved: out of file descriptors)" if unsaved else "")
          + f"; {reason}; {receiver.summary()}", flush=True)
    return status


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends like Ctrl+C: files closed, summary printed


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    try:
        sys.exit(run())
    except KeyboardInterrupt:  # stopped while still starting up
        print("done: 0 valid frames; interrupted while starting", flush=True)
        sys.exit(130)
