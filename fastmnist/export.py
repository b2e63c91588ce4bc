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

from ._converted import REFERENCE_ATOL, REFERENCE_COUNT, as_unit_images, write_proven
from ._keras_convert import KerasConversion, convert_keras
from .errors import ExportError

__all__ = ["REFERENCE_ATOL", "REFERENCE_COUNT", "ExportError", "KerasConversion", "convert_keras", "export_keras"]


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
    images = as_unit_images(reference_images, ExportError)
    probabilities = conversion.keras_probabilities(images)
    arrays = {**conversion.arrays, "analysis/ideal_inputs": _ideal_inputs(conversion)}
    spec = {
        **conversion.spec,
        "metadata": {
            **conversion.spec["metadata"],
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(metadata or {}),
        },
    }
    return write_proven(path, spec, arrays, images, probabilities, source="Keras'", error=ExportError)


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
