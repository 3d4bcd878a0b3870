"""Frame sources for the edge side (camera index, video file, RTSP/HTTP URL, folder of images) and the overlay
saver (a folder of atomic JPEGs or one video file). numpy/OpenCV only."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from . import viz
from .data import IMAGE_EXTS, DataError, read_image
from .io import atomic_path

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


class SourceError(RuntimeError):
    """A source that cannot be opened; one line naming it."""


class FrameSource:
    """Frames as RGB uint8 from a camera index, a video file, a URL or a folder of images."""

    def __init__(self, spec: str, retries: int = 20):
        self.spec, self.retries, self.skipped = spec, retries, 0
        self.end_reason = "end of source"
        self.fps = 0.0
        path = Path(spec)
        if spec.isdigit():
            self.kind, self.capture = "camera", cv2.VideoCapture(int(spec))
        elif "://" in spec:
            self.kind, self.capture = "url", cv2.VideoCapture(spec, cv2.CAP_FFMPEG)
        elif path.is_dir():
            self.kind, self.capture = "folder", None
            self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
            if not self.files:
                raise SourceError(f"{spec}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
            return
        elif path.is_file():
            self.kind, self.capture = "video", cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        else:
            raise SourceError(f"{spec}: not a camera index, URL, video file or image folder")
        if not self.capture.isOpened():
            raise SourceError(f"{spec}: cannot open {self.kind}")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames(self):
        """Yield (name, RGB frame) until the source ends; ``end_reason`` says why it ended."""
        if self.kind == "folder":
            for path in self.files:
                try:
                    yield path.stem, read_image(path)
                except DataError as exc:
                    self.skipped += 1
                    print(f"skip: {exc}", flush=True)
            return
        failures, index = 0, 0
        while True:
            ok, frame = self.capture.read()
            if ok and frame is not None and frame.ndim == 3 and frame.size:
                failures = 0
                yield f"{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
                continue
            if self.kind == "video":  # a file that stops decoding has ended
                return
            failures += 1
            if failures >= self.retries:
                self.end_reason = f"{self.kind} disconnected ({failures} failed reads in a row)"
                return
            time.sleep(0.05)

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()


class OverlaySaver:
    """Overlay frames into a folder (one atomic JPEG each) or one video file (renamed into place at the end)."""

    def __init__(self, target: str, fps: float):
        self.target = Path(target)
        self.is_video = self.target.suffix.lower() in VIDEO_EXTS
        self.writer, self.fps, self._tmp = None, fps if fps > 0 else 10.0, None

    def write(self, name: str, image: np.ndarray) -> None:
        if not self.is_video:
            viz.save_image(self.target / f"{name}.jpg", image)
            return
        if self.writer is None:
            self._context = atomic_path(self.target)
            self._tmp = self._context.__enter__()
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.target.suffix.lower() == ".avi" else "mp4v"))
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise SourceError(f"{self.target}: cannot write this video format")
        if (image.shape[1], image.shape[0]) != self.size:  # a video has one frame size
            image = cv2.resize(image, self.size)
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self._context.__exit__(None, None, None)  # renames the finished video into place
            self.writer = None
