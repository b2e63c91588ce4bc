"""Writing a converted model, for every converter: the file appears only once the engine has proved it.

A converter hands over the format's spec and arrays, the reference images and the probabilities that the
source framework (or an independent executor) computed for them. The first images and their probabilities are
stored in the file, so that every later load can check them; the file is written beside its target, loaded by
the engine, compared with all the probabilities, and only then renamed to its path. Nothing here knows which
framework the model came from: the caller names the source for the messages and passes its error type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import format as weights_format

IMAGE_SIDE = 28
REFERENCE_COUNT = 16  # images (with the source's probabilities) stored in the file for load() to check
REFERENCE_ATOL = 1e-5  # engine vs the source, on probabilities in [0, 1]


def as_unit_images(images: np.ndarray | None, error: type[ValueError]) -> np.ndarray:
    """Reference images as ``(N, 28, 28) float32`` in [0, 1], N >= 1.

    images: ``(N, 28, 28)``, ``(N, 784)`` or ``(N, 28, 28, 1)``, uint8 0..255 or floats in [0, 1]; None gives
    16 fixed pseudo-random images. Raises ``error`` for any other shape or range.
    """
    if images is None:
        # Fixed pseudo-random images keep a conversion reproducible when no real images are given.
        return np.random.default_rng(0).random((REFERENCE_COUNT, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    images = np.asarray(images)
    if images.ndim < 2 or images[0].size != IMAGE_SIDE * IMAGE_SIDE or not len(images):
        raise error(f"reference images have shape {images.shape}, expected (N, 28, 28), (N, 784) or (N, 28, 28, 1)")
    if images.dtype == np.uint8:
        return images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32) / 255.0
    images = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)
    if not (np.isfinite(images).all() and 0.0 <= images.min() and images.max() <= 1.0):
        raise error(f"reference images range from {images.min()} to {images.max()}, expected uint8 or floats in "
                    "[0, 1]")
    return images


def write_proven(path: str | os.PathLike, spec: dict[str, Any], arrays: dict[str, np.ndarray], images: np.ndarray,
                 probabilities: np.ndarray, *, source: str, error: type[ValueError]) -> Path:
    """Write ``spec`` and ``arrays`` with their reference to ``path``, once the engine reproduces ``probabilities``.

    images: ``(N, 28, 28) float32`` in [0, 1] (see ``as_unit_images``); probabilities: ``(N, classes)``, the
    source's for those images, of which the first 16 pairs are stored (``reference/inputs``,
    ``reference/probabilities``, ``reference.atol`` 1e-5). source: whose probabilities they are, possessive, for
    the messages ("Keras'"). Raises ``error`` when the engine refuses the file or differs by more than 1e-5 (or
    picks another top class where the source's is clear); the file then does not exist. Returns the path.
    """
    arrays = {**arrays, "reference/inputs": images[:REFERENCE_COUNT],
              "reference/probabilities": probabilities[:REFERENCE_COUNT]}
    spec = {**spec, "reference": {"atol": REFERENCE_ATOL}}
    path = Path(path)
    # Write beside the target and rename only after the check, so a failed conversion never leaves a file
    # that looks usable.
    staging = path.with_name(path.stem + ".partial.npz")
    weights_format.save(staging, spec, arrays)
    try:
        _check_parity(staging, images, probabilities, source, error)
    except BaseException:
        staging.unlink()
        raise
    staging.replace(path)
    return path


def _check_parity(path: Path, images: np.ndarray, expected: np.ndarray, source: str,
                  error: type[ValueError]) -> None:
    from . import load

    try:
        probabilities = load(path).predict_proba(images)
    except (ValueError, FloatingPointError) as failure:  # a WeightsFormatError (e.g. the stored reference already
        # disagrees), an engine limit, or weights so large that the engine's float32 overflows
        raise error(f"the engine does not accept the converted file: {failure}") from failure
    difference = np.abs(probabilities - expected)
    worst = int(difference.max(axis=1).argmax())
    if not difference[worst].max() <= REFERENCE_ATOL:
        raise error(f"the engine's probabilities differ from {source} by {difference[worst].max():.3g} on reference "
                    f"image {worst}, expected at most {REFERENCE_ATOL}")
    # Where the source's two best classes are within the tolerance the top class is a tie, which either answer
    # satisfies; everywhere else the engine must pick the source's class.
    top_two = np.sort(expected, axis=1)[:, -2:]
    decided = top_two[:, 1] - top_two[:, 0] > 2 * REFERENCE_ATOL
    disagree = np.flatnonzero(decided & (probabilities.argmax(1) != expected.argmax(1)))
    if disagree.size:
        raise error(f"the engine's top class differs from {source} on {disagree.size} reference images (first: "
                    f"image {disagree[0]}), expected none")
