"""Synthetic pavement crack data for tests and the demo (no real data needed).

    python datasets/synthetic.py --out DIR --count N [--size H W] [--seed S] [--video FILE.mp4]

Writes the generic layout ``DIR/images/NNNN.png`` + ``DIR/masks/NNNN.png`` (0/255): a procedural asphalt
texture (blurred noise, aggregate speckles, lighting gradient) with random-walk cracks of varying width.
``--video`` also writes the images as a video, e.g. for camera.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crackseg.io import atomic_write_bytes


def pavement(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Asphalt-like RGB uint8 texture."""
    base = rng.normal(0, 1, (h, w)).astype(np.float32)
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 6)
    fine = cv2.GaussianBlur(base, (0, 0), 0.8)
    speck = (rng.random((h, w)) > 0.985).astype(np.float32) * rng.uniform(-1, 1, (h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * rng.uniform(0, 25)
    gray = rng.uniform(95, 150) + 14 * fine + 40 * coarse + 45 * speck + light
    tint = rng.uniform(-6, 6, 3)
    rgb = np.clip(gray[..., None] + tint, 0, 255)
    return rgb.astype(np.uint8)


def crack_mask(rng: np.random.Generator, h: int, w: int, cracks: int) -> np.ndarray:
    """Random-walk polylines of width 1..6 px (width drifts along the crack), uint8 0/1."""
    mask = np.zeros((h, w), np.uint8)
    for _ in range(cracks):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        heading = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(1, 5)
        for _ in range(int(rng.integers(20, 60))):
            heading += rng.normal(0, 0.35)
            step = rng.uniform(4, 10)
            nx, ny = x + step * np.cos(heading), y + step * np.sin(heading)
            width = float(np.clip(width + rng.normal(0, 0.5), 1, 6))
            cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 1, int(round(width)))
            x, y = nx, ny
            if not (0 <= x < w and 0 <= y < h):
                break
    return mask


def sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, bool mask) pair; cracks are darker than the surface with soft edges."""
    image = pavement(rng, h, w).astype(np.float32)
    mask = crack_mask(rng, h, w, int(rng.integers(1, 4)))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    depth = rng.uniform(0.35, 0.65)
    image = image * (1 - depth * np.clip(soft * 1.3, 0, 1))[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), mask > 0


def make_dataset(out: str | Path, count: int, size: tuple[int, int] = (128, 128), seed: int = 0,
                 video: str | Path | None = None, fps: float = 10.0) -> Path:
    """Write ``count`` pairs in the generic layout (and optionally a video of the images); returns ``out``."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    h, w = size
    writer = None
    tmp_video = None
    if video:
        Path(video).parent.mkdir(parents=True, exist_ok=True)
        tmp_video = Path(video).with_name(f".{Path(video).stem}.tmp{Path(video).suffix}")
        writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(count):
        image, mask = sample(rng, h, w)
        ok1, img_png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        ok2, mask_png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
        atomic_write_bytes(out / "images" / f"{i:04d}.png", img_png.tobytes())
        atomic_write_bytes(out / "masks" / f"{i:04d}.png", mask_png.tobytes())
        if writer is not None:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
        tmp_video.replace(video)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (images/ and masks/ are created)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video", default=None, help="also write the images as this video file (.mp4)")
    parser.add_argument("--fps", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.count < 1 or min(args.size) < 8:
        parser.error("--count must be >= 1 and --size at least 8 8")
    make_dataset(args.out, args.count, tuple(args.size), args.seed, args.video, args.fps)
    print(f"wrote {args.count} images of {args.size[0]}x{args.size[1]} to {args.out}"
          + (f" and video {args.video}" if args.video else ""))


if __name__ == "__main__":
    main()
