"""Frame sources for the edge side (camera index, video file, RTSP/HTTP URL, folder of images) and the overlay
saver (a folder of atomic JPEGs or one video file). numpy/OpenCV only."""
from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from . import viz
from .data import IMAGE_EXTS, DataError, error_line, read_image

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


class SourceError(RuntimeError):
    """A source that cannot be opened; one line naming it."""


def frame_names(paths: list[Path]) -> list[str]:
    """One distinct name per file, for report rows and saved overlays: its stem, or its whole file name where
    several files share the stem (``a.jpg`` and ``a.png`` give ``a.jpg`` and ``a.png``), with ``~2``, ``~3`` ...
    where even that clashes (``a.png`` beside ``a.png.jpg`` and ``a.jpg``). Depends on the list only, not on order
    of reading."""
    stems = Counter(p.stem for p in paths)
    first = [p.stem if stems[p.stem] == 1 else p.name for p in paths]
    wanted, taken, names = set(first), set(), []
    for name in first:
        final, n = name, 2
        while final in taken or (final != name and final in wanted):
            final, n = f"{name}~{n}", n + 1
        taken.add(final)
        names.append(final)
    return names


def skip_line(path: Path | str, exc: BaseException) -> str:
    """One line for a file that could not be used: DataError messages name the file already."""
    return str(exc) if isinstance(exc, DataError) else f"{path}: {error_line(exc)}"


class FrameSource:
    """Frames as RGB uint8 from a camera index, a video file, a URL or a folder of images."""

    def __init__(self, spec: str, retries: int = 20, max_pixels: int | None = None,
                 on_skip: Callable[[str], None] | None = None):
        # max_pixels: folder images whose header declares more are skipped undecoded (None: data.MAX_PIXELS)
        # on_skip: gets the one line of each folder image skipped (default: printed as "skip: ...")
        self.spec, self.retries, self.skipped = spec, retries, 0
        self.max_pixels, self.on_skip = max_pixels, on_skip
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
            self.names = frame_names(self.files)
            return
        elif path.is_file():
            self.kind, self.capture = "video", cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        else:
            raise SourceError(f"{spec}: not a camera index, URL, video file or image folder")
        if not self.capture.isOpened():
            raise SourceError(f"{spec}: cannot open {self.kind}")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames(self):
        """Yield (name, RGB frame) until the source ends; ``end_reason`` says why it ended. A folder image that
        cannot be used (unreadable, over ``max_pixels``, out of memory: any failure) is one line and the next."""
        if self.kind == "folder":
            for path, name in zip(self.files, self.names):
                try:
                    image = read_image(path, self.max_pixels)
                except Exception as exc:  # one file never ends a folder run
                    self.skipped += 1
                    line = skip_line(path, exc)
                    if self.on_skip is None:
                        print(f"skip: {line}", flush=True)
                    else:
                        self.on_skip(line)
                    continue
                yield name, image
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


def place_new(tmp: Path, path: Path) -> Path:
    """Move the finished file ``tmp`` to ``path``, or to ``stem-1.ext``, ``stem-2.ext`` ... when that name is taken:
    a file already there is never replaced (a hard link fails on an existing name; where the file system has no
    hard links, as FAT, a check and a rename). Returns where it went (as ``stream.FrameSaver`` does)."""
    for attempt in range(10_000):
        target = path if attempt == 0 else path.with_name(f"{path.stem}-{attempt}{path.suffix}")
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        except OSError:
            if target.exists():
                continue
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        return target
    raise SourceError(f"{path}: 10000 files of this name already")


class OverlaySaver:
    """Overlay frames into a folder (one JPEG each, ``<name>.jpg``) or one video file (moved into place at the end);
    a file already there is never replaced: a folder image whose name is taken gets ``-1``, ``-2`` ... (a second
    run into the same folder), and a video file that exists is refused up front."""

    def __init__(self, target: str, fps: float):
        self.target = Path(target)
        self.is_video = self.target.suffix.lower() in VIDEO_EXTS
        self.writer, self.fps, self._tmp = None, fps if fps > 0 else 10.0, None
        if self.is_video and self.target.exists():
            raise SourceError(f"{self.target}: exists; overlays never replace a file (choose a new name)")
        if not self.is_video and self.target.exists() and not self.target.is_dir():
            raise SourceError(f"{self.target}: exists and is not a folder (overlays go into a folder, or a "
                              f"{' / '.join(VIDEO_EXTS)} file)")

    def _temporary(self, suffix: str) -> Path:
        """A fresh hidden name beside the target (a kill leaves only a dot file, never a half-written target)."""
        folder = self.target if not self.is_video else self.target.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".overlay.", suffix=suffix, dir=folder)
        os.close(fd)
        return Path(tmp)

    def write(self, name: str, image: np.ndarray) -> Path | None:
        """Save one overlay; returns the file written (folder), or None (video: one file, written at close)."""
        if not self.is_video:
            tmp = self._temporary(".jpg")
            try:
                with open(tmp, "wb") as f:
                    f.write(viz.encode(image, ".jpg"))
                    f.flush()
                    os.fsync(f.fileno())
                return place_new(tmp, self.target / f"{name}.jpg")
            finally:
                if tmp.exists():
                    tmp.unlink()
        if self.writer is None:
            self._tmp = self._temporary(self.target.suffix)
            self._tmp.unlink()  # some video writers refuse to open an existing file
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.target.suffix.lower() == ".avi" else "mp4v"))
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise SourceError(f"{self.target}: cannot write this video format")
        if (image.shape[1], image.shape[0]) != self.size:  # a video has one frame size
            image = cv2.resize(image, self.size)
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            self.target = place_new(self._tmp, self.target)  # a file made there meanwhile keeps its name
