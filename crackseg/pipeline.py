"""camera.py's per-frame work as one pipeline, shared by camera.py and ``crackseg.bench`` (so the benchmark times
the code the camera runs): read -> shrink to ``max_side`` -> ``engine.predict`` + ``engine.mask`` -> crack
statistics -> overlay -> save -> JPEG encode + send.

With ``overlap=True`` inference stays on the calling thread while one helper thread reads the next frame and
post-processes (statistics, overlay, save, encode, send) the previous one, so on a CPU-bound device the loop runs at
close to the pure inference rate. With ``throughput=True`` (camera.py on a folder or a video file) inference goes
through ``engine.predict_many`` instead: OpenVINO keeps several requests in flight while the calling thread reads and
decodes the next frames, and the helper thread post-processes the finished ones; frames still come out in order.
Its own module rather than ``sources.py``: it ties engines, measure, viz and
stream together, while ``sources.py`` stays frame I/O only.

    pipeline = FramePipeline(engine, saver=saver, send=sender.send, device="truck1")
    with contextlib.closing(pipeline.results(source.frames())) as results:
        for result in results:            # FrameResult, in input order
            print(result.index, result.stats, result.infer_ms)
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generator, Iterable, Iterator

import cv2
import numpy as np

from . import viz
from .engines import Engine
from .measure import STREAM_KEYS, crack_stats, format_stats
from .sources import OverlaySaver
from .stream import encode_jpeg, make_header

HELPER_THREAD_NAME = "crackseg-pipeline"


@dataclass
class FrameResult:
    """One processed frame, in the order the frames came in."""

    index: int            # 0, 1, ... (the frame number in the stream header)
    name: str             # the source's name for it (sources.frame_names for a folder, the frame number else)
    mask: np.ndarray      # boolean crack mask at the engine's threshold
    stats: dict           # crackseg.measure.crack_stats (or the ``measure`` given to the pipeline)
    infer_ms: float       # engine.predict + engine.mask on the calling thread
    fps: float            # smoothed frames per second of the whole loop when this frame was inferred
    overlay: np.ndarray   # the annotated RGB frame that was saved / sent (what a window shows)


def shrunk_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most ``max_side`` (0: unchanged); each side stays >= 1 px
    (a 4000 x 1 strip at 1024 is 1024 x 1, not 1024 x 0)."""
    longest = max(width, height)
    if not max_side or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(frame: np.ndarray, max_side: int) -> np.ndarray:
    """``frame`` scaled down so its longer side is at most ``max_side`` (0: unchanged; see ``shrunk_size``)."""
    size = shrunk_size(frame.shape[1], frame.shape[0], max_side)
    if size == (frame.shape[1], frame.shape[0]):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class FramePipeline:
    """Frames (name, RGB uint8) in, ``FrameResult`` out, in input order.

    ``saver`` / ``send`` are optional outputs (``send(header, jpeg)``, e.g. ``Sender.send``); they are only ever
    called from one thread at a time and in frame order. Close the generator of ``results`` (``contextlib.closing``)
    before closing the source, saver or sender: that joins the helper thread, which may still be using them.
    """

    def __init__(self, engine: Engine, *, max_side: int = 0, saver: OverlaySaver | None = None,
                 send: Callable[[dict, bytes], None] | None = None, device: str = "camera", jpeg_quality: int = 80,
                 overlap: bool = True, measure: Callable[[np.ndarray], dict] = crack_stats, throughput: bool = False):
        # measure: mask -> stats, e.g. functools.partial(measure.frame_stats, settings=...) for millimetres
        # throughput: inference through engine.predict_many (folders / video files: several requests in flight)
        self.engine, self.max_side, self.saver, self.send, self.measure = engine, max_side, saver, send, measure
        self.device, self.jpeg_quality, self.overlap, self.throughput = device, jpeg_quality, overlap, throughput
        self._fps, self._last_tick = 0.0, 0.0

    def results(self, frames: Iterable[tuple[str, np.ndarray]]) -> Generator[FrameResult, None, None]:
        """Process ``frames`` lazily (overlapped: one frame is read ahead of the one being inferred)."""
        self._fps, self._last_tick = 0.0, time.monotonic()
        iterator = iter(frames)
        if self.throughput:
            return self._throughput(iterator)
        return self._overlapped(iterator) if self.overlap else self._sequential(iterator)

    # -- the stages
    def _read(self, frames: Iterator[tuple[str, np.ndarray]]) -> tuple[str, np.ndarray] | None:
        """The next (name, frame) shrunk for inference, or None at the end (a StopIteration must not cross a
        Future into a generator, where it would become a RuntimeError)."""
        item = next(frames, None)
        return None if item is None else (item[0], shrink(item[1], self.max_side))

    def _tick(self) -> float:
        now = time.monotonic()
        rate = 1.0 / max(now - self._last_tick, 1e-6)
        self._fps = rate if self._fps == 0.0 else 0.9 * self._fps + 0.1 * rate
        self._last_tick = now
        return self._fps

    def _infer(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(mask, inference ms, loop FPS); the FPS ticks once per frame, so it includes every stage and the
        consumer's own time (display, --fps_limit pacing)."""
        start = time.perf_counter()
        mask = self.engine.mask(self.engine.predict(frame))
        infer_ms = (time.perf_counter() - start) * 1000
        return mask, infer_ms, self._tick()

    def _finish(self, index: int, name: str, frame: np.ndarray, mask: np.ndarray, infer_ms: float,
                fps: float) -> FrameResult:
        """Statistics, overlay, save, encode + send: everything after inference."""
        engine = self.engine
        stats = self.measure(mask)
        out = viz.annotate(frame, mask, [f"{engine.name} [{engine.backend}] {fps:.1f} FPS", format_stats(stats)])
        if self.saver:
            self.saver.write(name, out)
        if self.send:
            numbers = {**{k: stats[k] for k in STREAM_KEYS if k in stats}, "fps": fps, "infer_ms": infer_ms}
            header = make_header(self.device, index, out.shape[1], out.shape[0], numbers, engine.name)
            self.send(header, encode_jpeg(out, self.jpeg_quality))
        return FrameResult(index, name, mask, stats, infer_ms, fps, out)

    # -- the two schedules
    def _sequential(self, frames: Iterator[tuple[str, np.ndarray]]) -> Generator[FrameResult, None, None]:
        index = 0
        while (item := self._read(frames)) is not None:
            name, frame = item
            yield self._finish(index, name, frame, *self._infer(frame))
            index += 1

    def _overlapped(self, frames: Iterator[tuple[str, np.ndarray]]) -> Generator[FrameResult, None, None]:
        # One worker runs its tasks in submission order, so saving / sending stay in frame order and at most one
        # read and one post-processing task are ever queued: memory stays bounded whatever the consumer does.
        helper = ThreadPoolExecutor(1, thread_name_prefix=HELPER_THREAD_NAME)
        try:
            upcoming = helper.submit(self._read, frames)
            finishing: Future[FrameResult] | None = None
            index = 0
            while (item := upcoming.result()) is not None:
                upcoming = helper.submit(self._read, frames)  # decoded while this frame is inferred
                name, frame = item
                inferred = self._infer(frame)
                if finishing is not None:
                    # Yielded before this frame's post-processing is queued: a consumer that stops here (window
                    # closed) leaves nothing saved or sent that it did not see.
                    yield finishing.result()
                finishing = helper.submit(self._finish, index, name, frame, *inferred)
                index += 1
            if finishing is not None:
                yield finishing.result()
        finally:
            # Runs on normal end, on an exception (ours or the helper's, re-raised by result()) and on close():
            # nothing is left running on a source, saver or sender the caller is about to close.
            helper.shutdown(wait=True, cancel_futures=True)

    def _throughput(self, frames: Iterator[tuple[str, np.ndarray]]) -> Generator[FrameResult, None, None]:
        # The frames read ahead wait here in order until their prediction comes back (at most the engine's requests
        # in flight plus one); ``infer_ms`` is the time between two finished frames (requests overlap).
        waiting: deque[tuple[str, np.ndarray]] = deque()

        def images():
            while (item := self._read(frames)) is not None:
                waiting.append(item)
                yield item[1]

        helper = ThreadPoolExecutor(1, thread_name_prefix=HELPER_THREAD_NAME)
        predictions = self.engine.predict_many(images())
        try:
            finishing: Future[FrameResult] | None = None
            index, last = 0, time.perf_counter()
            for prob in predictions:
                name, frame = waiting.popleft()
                mask = self.engine.mask(prob)
                now = time.perf_counter()
                infer_ms, last = (now - last) * 1000, now
                fps = self._tick()
                if finishing is not None:
                    yield finishing.result()
                finishing = helper.submit(self._finish, index, name, frame, mask, infer_ms, fps)
                index += 1
            if finishing is not None:
                yield finishing.result()
        finally:
            predictions.close()  # no request left in flight on a source the caller is about to close
            helper.shutdown(wait=True, cancel_futures=True)
