"""PC.py: the workstation side: receive crack overlays from any number of camera.py devices over ZeroMQ.

    python PC.py                                           # listen on tcp://127.0.0.1:5555, a window per device
    python PC.py --bind=tcp://0.0.0.0:5555 --save=received/ --headless
    python PC.py --make_keys=keys --clients=truck1,truck2  # CURVE keys: keys/pc here, keys/truck1 on truck1, ...
    python PC.py --bind=tcp://0.0.0.0:5555 --curve=keys/pc # encrypted; only the listed devices get in

Needs numpy, OpenCV and pyzmq only (never TensorFlow or the model). Listening on anything but loopback needs an
explicit --bind. --save writes DIR/<device>/<frame>.jpg (atomically) and one JSON line per frame to
DIR/headers.jsonl. Malformed messages (wrong frame count, bad JSON or fields, bad base64 or JPEG, oversized, unknown
version) are counted by reason and skipped. Per-device FPS and rejected counts are printed every --report_every s.
"""
import json
import signal
import sys
import time
from pathlib import Path

from crackseg.config import configure

bind = "tcp://127.0.0.1:5555"     # where camera.py devices connect (--send on their side)
save = ""                         # folder for received frames + headers.jsonl; "" = do not save
headless = False                  # no windows
max_frames = 0                    # exit after this many valid frames (0: run until Ctrl+C)
max_seconds = 0.0                 # exit after this long (0: no limit)
max_message_mb = 8.0              # larger messages are refused
curve = ""                        # CURVE folder: server.key_secret + authorized_clients/*.key
make_keys = ""                    # write CURVE keys into this folder and exit
clients = "camera"                # device names for --make_keys, comma-separated
report_every = 5.0                # seconds between status lines

config = configure(globals(), __doc__)

import cv2  # noqa: E402
import zmq  # noqa: E402

from crackseg.io import atomic_write_bytes  # noqa: E402
from crackseg.stream import Receiver, make_keys as generate_keys  # noqa: E402


def show_windows() -> bool:
    try:
        cv2.namedWindow("PC", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("PC")
        return True
    except cv2.error:
        print("no display (OpenCV without GUI support, or no $DISPLAY): running headless", flush=True)
        return False


def run() -> int:
    if make_keys:
        try:
            made = generate_keys(make_keys, [c.strip() for c in clients.split(",") if c.strip()])
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"CURVE keys in {make_keys}: PC.py --curve={made['pc']}; on each device camera.py --curve=<its folder>: "
              + ", ".join(f"{k}: {v}" for k, v in made.items() if k != "pc"))
        return 0
    try:
        receiver = Receiver(bind, int(max_message_mb * 2**20), curve or None)
    except (zmq.ZMQError, OSError, ValueError) as exc:
        print(f"error: cannot listen on {bind}: {exc}", file=sys.stderr)
        return 1
    out = Path(save) if save else None
    headers_file = None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        headers_file = open(out / "headers.jsonl", "a", encoding="utf-8")
    show = not headless and not out and show_windows()
    print(f"listening on {receiver.address}" + (" (CURVE)" if curve else "") + (f"; saving to {out}" if out else ""),
          flush=True)
    valid, started, next_report = 0, time.monotonic(), time.monotonic() + report_every
    reason = "interrupted"
    try:
        while True:
            now = time.monotonic()
            if max_seconds and now - started >= max_seconds:
                reason = f"--max_seconds={max_seconds} reached"
                break
            wait = min(0.5, max(0.0, next_report - now))
            message = receiver.receive(timeout=wait)
            if message is not None:
                header = message.header
                valid += 1
                if out:
                    relative = f"{header['device']}/{header['frame']:08d}.jpg"
                    atomic_write_bytes(out / relative, message.jpeg)
                    headers_file.write(json.dumps({**header, "file": relative, "received": time.time()}) + "\n")
                    headers_file.flush()
                if show:
                    cv2.imshow(f"crack: {header['device']}", cv2.cvtColor(message.image, cv2.COLOR_RGB2BGR))
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        reason = "stopped from the window"
                        break
                if max_frames and valid >= max_frames:
                    reason = f"--max_frames={max_frames} reached"
                    break
            if time.monotonic() >= next_report:
                print(receiver.summary(), flush=True)
                next_report = time.monotonic() + report_every
    except KeyboardInterrupt:
        pass
    finally:
        if headers_file:
            headers_file.close()
        receiver.close()
        if show:
            cv2.destroyAllWindows()
    print(f"done: {valid} valid frames; {reason}; {receiver.summary()}", flush=True)
    return 0


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends like Ctrl+C: files closed, summary printed


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(run())
