"""The one preprocessing used by training, evaluation, export checks and every inference backend.

numpy/OpenCV only (the edge side has no TensorFlow); ``normalize`` also works on TensorFlow tensors.
"""
from __future__ import annotations

import numpy as np

MULTIPLE = 4  # the network downsamples twice


def normalize(image):
    """uint8-range RGB -> float in [-1, 1] (the paper's input scaling). Works on numpy arrays and tf tensors."""
    return image * (1.0 / 127.5) - 1.0


def pad_to_multiple(batch: np.ndarray, multiple: int = MULTIPLE) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad an NHWC batch at the bottom/right (edge-replicated) so H and W are multiples; return it and (H, W)."""
    h, w = batch.shape[1:3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        batch = np.pad(batch, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return batch, (h, w)


def prepare(images: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 image (HWC) or batch (NHWC) -> float32 NHWC in [-1, 1] padded to a multiple of 4, and (H, W)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected an RGB image HxWx3 or a batch NxHxWx3, got shape {images.shape}")
    return pad_to_multiple(normalize(images.astype(np.float32)).astype(np.float32))


def crop_back(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Undo ``pad_to_multiple``: NHW[C] network output -> the original (H, W), crack channel as NHW."""
    probs = np.asarray(probs)
    if probs.ndim == 4:
        probs = probs[..., -1]  # (N,H,W,1) crack probability, or (N,H,W,2) softmax whose crack channel is last
    return probs[:, : size[0], : size[1]]
