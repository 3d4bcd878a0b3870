"""camera.py: crack segmentation on the edge device, live: overlay, FPS, crack statistics, stream to PC.py.

    python camera.py --source=0 --model=weights/student.engine             # camera 0 on a Jetson (TensorRT)
    python camera.py --source=road.mp4 --headless --save=out/ --max_frames=100
    python camera.py --source=rtsp://10.0.0.5/stream --send=tcp://10.0.0.2:5555 --device=truck1 --headless
    python camera.py --source=photos/ --model=student                      # untrained preset: toolchain check

--source: a camera index, a video file, an RTSP/HTTP(S) URL or a folder of images. --model: .onnx, .engine, .keras or
a preset; TensorFlow is imported only for the Keras backend. The threshold comes from the model card beside the
model (student.json) unless --threshold is given. End of file, a disconnected camera and Ctrl+C end cleanly;
images in a folder that cannot be read (or hold more than --max_pixels) are skipped with one line each. A --save
folder keeps what is already in it (a name that is taken gets -1, -2, ...); a --save video that exists is refused.
--send never blocks the loop: while PC.py is away frames are dropped (counted) and the stream resumes when it
returns.
"""
import os
import signal
import socket
import sys
import time
from itertools import islice

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crackseg.config import configure

source = "0"                      # camera index | video file | rtsp:// http:// URL | folder of images
model = "weights/student.onnx"    # .onnx | .engine | .keras | preset name (untrained)
backend = "auto"                  # auto (CPU: openvino, see README.md (Inference speed)) | openvino | onnx | tensorrt
                                  # | keras
threshold = None                  # None: from the model card (default 0.5)
precision = "auto"                # auto | fp32 | bf16 | int8 (OpenVINO). auto: int8 (student_int8.xml beside --model)
                                  # where the CPU has VNNI / AMX / AVX2 and its card records validation F1 within
                                  # 0.5 pt, else bf16 where the CPU reports BF16, else fp32; the model: line says
                                  # which and why (docs/speed.md)
max_side = 0                      # shrink frames so the longer side is at most this before inference (0: as read)
max_pixels = 64 << 20             # skip (one line, undecoded) a folder image whose header declares more pixels
                                  # (0: no limit)
mm_per_px = 0.0                   # millimetres per pixel of the frames as read (docs/measure.md): overlay, printed
                                  # line and stream stats in mm with the frame's worst severity (0: pixels)
severity = "ltpp"                 # with --mm_per_px: ltpp (<=6, 6-19, >19 mm) | astm (<10, 10-76, >76 mm) | edges
headless = False                  # no window
save = ""                         # folder for overlay images, or a .mp4 / .avi file for an overlay video
max_frames = 0                    # stop after this many frames (0: until the source ends)
fps_limit = 0.0                   # pace the loop to at most this many frames per second (0: as fast as it runs)
send = ""                         # stream to PC.py, e.g. tcp://192.168.1.10:5555
preview = ""                      # serve PC.py's live page for this stream alone, e.g. 127.0.0.1:8081 ("" = none)
device = ""                       # device name in the stream; "" = this host's name
curve = ""                        # CURVE key folder (client.key_secret + server.key) from PC.py --make_keys
send_queue = 4                    # frames waiting for the network; the oldest is dropped beyond this
jpeg_quality = 80
read_retries = 20                 # failed reads in a row before a camera / URL counts as disconnected
quiet = False                     # no per-frame line
overlap = True                    # read the next frame and post-process (overlay, save, send) the previous one on a
                                  # helper thread while this one is inferred; False: one stage after another
throughput = "auto"               # auto: on for a folder or a video file, off for a live camera / URL | on | off:
                                  # several inference requests in flight (OpenVINO), frames read ahead, still in order

config = configure(globals(), __doc__)

import cv2  # noqa: E402
import zmq  # noqa: E402

from crackseg.engines import EngineError, open_engine  # noqa: E402
from crackseg.measure import MeasureError, MeasureSettings, crack_stats, format_stats, frame_measure  # noqa: E402
from crackseg.pipeline import FramePipeline  # noqa: E402
from crackseg.sources import FrameSource, OverlaySaver, SourceError  # noqa: E402
from crackseg.stream import Sender, device_name  # noqa: E402

def open_window() -> bool:
    """True when a window can be shown (OpenCV with GUI support and a display)."""
    try:
        cv2.namedWindow("crack", cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        print("no display (OpenCV without GUI support, or no $DISPLAY): no window"
              + ("; the --preview page shows the stream" if preview
                 else "; --preview=127.0.0.1:8081 shows it in a browser"), flush=True)
        return False


THROUGHPUT_CHOICES = ("auto", "on", "off")


def run() -> int:
    if throughput not in THROUGHPUT_CHOICES:
        print(f"error: --throughput={throughput}: expected auto, on or off", file=sys.stderr)
        return 1
    if max_pixels < 0:
        print(f"error: --max_pixels={max_pixels}: expected a pixel count, or 0 for no limit", file=sys.stderr)
        return 1
    try:
        frames = FrameSource(source, read_retries, max_pixels)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        measure = crack_stats
        if mm_per_px:
            native = 0
            if max_side:  # --mm_per_px is per pixel as read: the pipeline measures the shrunk frames
                if frames.kind == "folder":
                    raise MeasureError("--mm_per_px with --max_side needs a camera or video (photos in a folder can "
                                       "differ in size); drop --max_side, or use report.py for photos")
                native = int(max(frames.capture.get(cv2.CAP_PROP_FRAME_WIDTH),
                                 frames.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            measure = frame_measure(MeasureSettings(mm_per_px=mm_per_px, severity=severity), native)
        saver = OverlaySaver(save, frames.fps) if save else None  # refuses to replace a video file up front
    except (MeasureError, SourceError) as exc:
        frames.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = device_name(device or socket.gethostname())
    try:
        # Connect before loading the model: the connection is up by the time the first frame is ready.
        sender = Sender(send, send_queue, curve or None) if send else None
    except (OSError, ValueError, zmq.ZMQError) as exc:
        frames.close()
        print(f"error: --send={send}: {exc}", file=sys.stderr)
        return 1
    try:
        engine = open_engine(model, backend, threshold, precision)
    except EngineError as exc:
        frames.close()
        if sender:
            sender.close(timeout=0)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"model: {engine.describe()}; source: {frames.kind} {source}; device: {name}", flush=True)
    page = None
    if preview:
        try:
            from crackseg.dashboard import Preview

            page = Preview(preview, name)
            print(f"preview: {page.start()}", flush=True)
        except (ImportError, RuntimeError) as exc:  # no aiohttp, or DashboardError: bad address, port taken
            frames.close()
            if sender:
                sender.close(timeout=0)
            engine.close()
            print(f"error: {exc}" if isinstance(exc, RuntimeError)
                  else f"error: --preview needs aiohttp (pip install aiohttp==3.14.5): {exc}", file=sys.stderr)
            return 1
    show = not headless and open_window()
    outlet = sender.send if sender else None
    if page:
        outlet = page.outlet(outlet)  # every frame to the page, then to PC.py
    pipeline = FramePipeline(engine, max_side=max_side, saver=saver, send=outlet,
                             device=name, jpeg_quality=jpeg_quality, overlap=overlap, measure=measure,
                             throughput=throughput == "on" or (throughput == "auto"
                                                               and frames.kind in ("folder", "video")))
    # islice: no frame beyond --max_frames is read or inferred, even one ahead on the helper thread.
    results = pipeline.results(islice(frames.frames(), max_frames or None))
    count, started, paced, status = 0, time.monotonic(), time.monotonic(), 0
    try:
        for result in results:
            stop = False
            if show:
                cv2.imshow("crack", cv2.cvtColor(result.overlay, cv2.COLOR_RGB2BGR))
                stop = cv2.waitKey(1) & 0xFF in (27, ord("q"))
            if fps_limit > 0:
                time.sleep(max(0.0, 1.0 / fps_limit - (time.monotonic() - paced)))
                paced = time.monotonic()
            if not quiet:
                print(f"frame {result.index} {result.name}: {format_stats(result.stats)}  {result.infer_ms:.0f} ms  "
                      f"{result.fps:.1f} FPS" + (f"  sent {sender.sent} dropped {sender.dropped}" if sender else ""),
                      flush=True)
            count += 1
            if stop:
                frames.end_reason = "stopped from the window"
                break
        else:
            if max_frames and count >= max_frames:
                frames.end_reason = f"--max_frames={max_frames} reached"
    except KeyboardInterrupt:
        frames.end_reason = "interrupted"
    except (EngineError, SourceError) as exc:
        frames.end_reason, status = f"error: {exc}", 1
    finally:
        results.close()  # joins the pipeline's helper thread before the source, saver and sender are closed
        frames.close()
        if saver:
            saver.close()
        if sender:
            sender.close()
        engine.close()
        if page:
            page.close()
        if show:
            cv2.destroyAllWindows()
    elapsed = max(time.monotonic() - started, 1e-6)
    print(f"done: {count} frames in {elapsed:.1f} s ({count / elapsed:.2f} FPS); {frames.end_reason}"
          + (f"; {frames.skipped} skipped (unreadable or over --max_pixels)" if frames.skipped else "")
          + (f"; sent {sender.sent}, dropped {sender.dropped}" if sender else ""), flush=True)
    return status


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends like Ctrl+C: the video and the sender are closed properly


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(run())
