"""Principal component analysis of the training images, for the `pca_mlp_bn_elu` model's input projection."""

from __future__ import annotations

import numpy as np


def principal_components(images: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(mean, components)`` of ``images``.

    images: ``(N, ...)`` floats, each image flattened to D values. mean: ``(D,) float32``; components:
    ``(D, num_components) float32``, orthonormal columns, largest variance first, each column's sign fixed so
    that its largest-magnitude entry is positive (so the result does not depend on the eigensolver).
    Projecting is ``(x - mean) @ components``.
    """
    flat = images.reshape(len(images), -1).astype(np.float64)
    if not 1 <= num_components <= flat.shape[1]:
        raise ValueError(f"num_components is {num_components}, expected 1..{flat.shape[1]}")
    mean = flat.mean(axis=0)
    centred = flat - mean
    covariance = centred.T @ centred / (len(flat) - 1)
    # eigh returns ascending eigenvalues; the top components are the last columns.
    _, eigenvectors = np.linalg.eigh(covariance)
    components = eigenvectors[:, ::-1][:, :num_components]
    largest = np.abs(components).argmax(axis=0)
    components = components * np.sign(components[largest, np.arange(num_components)])
    return mean.astype(np.float32), components.astype(np.float32)
