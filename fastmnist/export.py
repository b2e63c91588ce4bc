"""Export a trained Keras model to a fastmnist weights file (docs/FORMAT.md), and prove the file computes the same.

`fastmnist._keras_convert` turns the model into the format's layer list (Sequential or Functional chains;
zero padding, BatchNorm, activations and input preprocessing folded by `fastmnist._fold`). This module adds
reference images with Keras' own probabilities and per-class ideal inputs, writes the file, reloads it with the
engine and checks that the engine computes what Keras computed; only then does the file appear at its path.

TensorFlow is imported inside the functions, so ``import fastmnist`` stays light.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import format as weights_format
from ._keras_convert import KerasConversion, convert_keras
from .errors import ExportError

__all__ = ["REFERENCE_ATOL", "REFERENCE_COUNT", "ExportError", "KerasConversion", "convert_keras", "export_keras"]

IMAGE_SIDE = 28
REFERENCE_COUNT = 16  # images (with Keras' probabilities) stored in the file for load() to check
REFERENCE_ATOL = 1e-5  # engine vs Keras, on probabilities in [0, 1]


def export_keras(
    keras_model: Any,
    path: str | os.PathLike,
    *,
    reference_images: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    input_max: float | None = None,
) -> Path:
    """Write ``keras_model`` (a built ``keras.Sequential``, or a Functional chain) to ``path`` and verify it.

    reference_images: ``(N, 28, 28)`` (or ``(N, 784)``, ``(N, 28, 28, 1)``) images, uint8 0..255 or floats
    in [0, 1], ink high. The first 16 are stored with Keras' probabilities; all N are used to check that
    the engine's probabilities are within 1e-5 of Keras' with the same top class. Without them, 16 fixed
    pseudo-random images are used. metadata: extra JSON-able fields for the spec's ``metadata`` (the
    source, the output note, the TensorFlow and Keras versions and the UTC date are always added).
    input_max: what Keras is fed for full ink, 1.0 or 255.0 (see ``convert_keras``); the engine always takes
    pixels as uint8 0..255 or floats in [0, 1], and Keras is given ``input_max`` times those floats.

    A model that ends in logits gets a softmax (``metadata.output`` says so) and is compared with the softmax of
    Keras' outputs. Returns the path. Raises ``ExportError`` naming the layer and setting that is not
    supported, or the parity failure; the file is only written (atomically) when the check passes.
    """
    import keras
    import tensorflow as tf

    conversion = convert_keras(keras_model, input_max=input_max)
    images = _as_unit_images(reference_images)
    probabilities = conversion.keras_probabilities(images)
    arrays = dict(conversion.arrays)
    arrays["reference/inputs"] = images[:REFERENCE_COUNT]
    arrays["reference/probabilities"] = probabilities[:REFERENCE_COUNT]
    arrays["analysis/ideal_inputs"] = _ideal_inputs(conversion)
    spec = {
        **conversion.spec,
        "reference": {"atol": REFERENCE_ATOL},
        "metadata": {
            **conversion.spec["metadata"],
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(metadata or {}),
        },
    }
    path = Path(path)
    # Write beside the target and rename only after the check, so a failed export never leaves a file
    # that looks usable.
    staging = path.with_name(path.stem + ".partial.npz")
    weights_format.save(staging, spec, arrays)
    try:
        _check_parity(staging, images, probabilities)
    except BaseException:
        staging.unlink()
        raise
    staging.replace(path)
    return path


def _ideal_inputs(conversion: KerasConversion) -> np.ndarray:
    """Per-class ideal inputs of the converted model, in the engine's pixel units.

    The optimiser works on a Sequential that ends in its softmax and takes pixels in [0, 1], so it is given the
    layers that compute something, after a Rescaling to Keras' pixel range and before an appended softmax.
    """
    import keras

    from .training.ideal_inputs import ideal_inputs

    model = conversion.model
    layers = [keras.Input(model.input_shape[1:])]
    if conversion.input_max != 1.0:
        layers.append(keras.layers.Rescaling(conversion.input_max))
    layers.extend(conversion.applied_layers)
    if conversion.softmax_appended:
        layers.append(keras.layers.Softmax())
    return ideal_inputs(keras.Sequential(layers, name=f"{model.name}_pixels"))


def _as_unit_images(images: np.ndarray | None) -> np.ndarray:
    """Reference images as ``(N, 28, 28) float32`` in [0, 1]."""
    if images is None:
        # Fixed pseudo-random images keep an export reproducible when no real images are given.
        return np.random.default_rng(0).random((REFERENCE_COUNT, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    images = np.asarray(images)
    if images.ndim < 2 or images[0].size != IMAGE_SIDE * IMAGE_SIDE:
        raise ExportError(
            f"reference images have shape {images.shape}, expected (N, 28, 28), (N, 784) or (N, 28, 28, 1)"
        )
    if images.dtype == np.uint8:
        return images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32) / 255.0
    images = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)
    if images.size and not (0.0 <= images.min() and images.max() <= 1.0):
        raise ExportError(
            f"reference images range from {images.min()} to {images.max()}, expected uint8 or floats in [0, 1]"
        )
    return images


def _check_parity(path: Path, images: np.ndarray, keras_probabilities: np.ndarray) -> None:
    from . import load

    try:
        engine_probabilities = load(path).predict_proba(images)
    except ValueError as error:  # a WeightsFormatError (e.g. the stored references disagree), or an engine limit
        raise ExportError(f"the engine does not accept the exported file: {error}") from error
    difference = np.abs(engine_probabilities - keras_probabilities)
    worst = int(difference.max(axis=1).argmax())
    if difference[worst].max() > REFERENCE_ATOL:
        raise ExportError(
            f"the engine's probabilities differ from Keras' by {difference[worst].max():.3g} on reference image "
            f"{worst}, expected at most {REFERENCE_ATOL}"
        )
    # Where Keras' two best classes are within the tolerance the top class is a tie, which either answer
    # satisfies; everywhere else the engine must pick Keras' class.
    top_two = np.sort(keras_probabilities, axis=1)[:, -2:]
    decided = top_two[:, 1] - top_two[:, 0] > 2 * REFERENCE_ATOL
    disagree = np.flatnonzero(decided & (engine_probabilities.argmax(1) != keras_probabilities.argmax(1)))
    if disagree.size:
        raise ExportError(
            f"the engine's top class differs from Keras' on {disagree.size} reference images (first: image "
            f"{disagree[0]}), expected none"
        )
