"""Test images for the converters' parity checks, shared by the Keras and ONNX tests."""

from __future__ import annotations

import numpy as np


def blob_images(count: int, seed: int = 0) -> np.ndarray:
    """``(count, 28, 28) float32`` in [0, 1]: smooth blobs on blank paper (zeros at the borders), like digits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28]
    images = np.zeros((count, 28, 28), np.float32)
    for image in images:
        for _ in range(4):
            cy, cx, radius = rng.uniform(6, 22), rng.uniform(6, 22), rng.uniform(2, 5)
            image += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    return np.clip(images, 0.0, 1.0)
