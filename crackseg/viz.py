"""Overlays, side-by-side previews and training curves (numpy/OpenCV; matplotlib only for curves)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .io import atomic_path, atomic_write_bytes

CRACK_RGB = (255, 40, 40)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55, color=CRACK_RGB) -> np.ndarray:
    """Blend ``color`` into the crack pixels of an RGB uint8 image."""
    out = image.copy()
    m = np.asarray(mask, bool)
    out[m] = (out[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha).astype(np.uint8)
    return out


def draw_text(image: np.ndarray, lines: list[str], scale: float | None = None) -> np.ndarray:
    """Write ``lines`` at the top left of an RGB image, white on a dark box so they read on any pavement."""
    out = image.copy()
    if not lines:
        return out
    scale = scale or max(0.35, min(out.shape[:2]) / 900)
    thickness = 1 if scale < 0.8 else 2
    sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0] for line in lines]
    pad, step = 4, max(h for _, h in sizes) + 6
    box_w, box_h = max(w for w, _ in sizes) + 2 * pad, step * len(lines) + pad
    region = out[:box_h, :box_w]
    region[:] = (region * 0.4).astype(np.uint8)  # darken instead of a solid box: the frame stays visible
    for i, line in enumerate(lines):
        cv2.putText(out, line, (pad, pad + step * (i + 1) - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return out


def annotate(image: np.ndarray, mask: np.ndarray, lines: list[str], alpha: float = 0.55) -> np.ndarray:
    """The camera overlay: crack pixels tinted, then ``lines`` of text (FPS, crack statistics)."""
    return draw_text(overlay(image, mask, alpha), lines)


def side_by_side(image: np.ndarray, truth: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """image | truth | prediction (probability as grey levels), RGB uint8."""
    gray = lambda a: np.repeat((np.clip(a, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    sep = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, sep, gray(truth.astype(np.float32)), sep, gray(prob)], axis=1)


def encode(image_rgb: np.ndarray, ext: str = ".png", quality: int = 90) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode image as {ext}")
    return buf.tobytes()


def save_image(path: str | Path, image_rgb: np.ndarray) -> None:
    """Write an RGB image atomically (format from the extension)."""
    atomic_write_bytes(path, encode(image_rgb, Path(path).suffix.lower()))


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Loss and every validation metric per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "val_loss"):
        if key in history[0]:
            ax1.plot(epochs, [h[key] for h in history], label=key)
    ax1.set_xlabel("epoch"), ax1.set_title("loss"), ax1.set_yscale("log"), ax1.legend()
    for key in sorted(k for k in history[0] if k.startswith("val_") and k != "val_loss"):
        ax2.plot(epochs, [h[key] for h in history], label=key[4:])
    ax2.set_xlabel("epoch"), ax2.set_title("validation"), ax2.set_ylim(0, 1), ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
