"""Export a trained Keras Sequential model to a fastmnist weights file (docs/FORMAT.md).

The exporter is the only place that knows Keras layer classes. It turns the model into the format's flat
layer list, folding what inference does not need to see: Dropout disappears, a BatchNormalization right
after a linear Dense or Conv2D is folded into that layer's kernel and bias, and an activation layer right
after a linear Dense or Conv2D becomes that layer's fused activation. It stores reference images with Keras'
own probabilities, and per-class ideal inputs, then reloads the file with the engine and checks that the
engine computes what Keras computed.

TensorFlow is imported inside the functions, so ``import fastmnist`` stays light.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import format as weights_format
from .layers import ACTIVATIONS
from .spec import INPUT_SHAPES

CLASSES = [str(digit) for digit in range(10)]
IMAGE_SIDE = 28
REFERENCE_COUNT = 16  # images (with Keras' probabilities) stored in the file for load() to check
REFERENCE_ATOL = 1e-5  # engine vs Keras, on probabilities in [0, 1]
FUSABLE = ("dense", "conv2d")  # layer types with a kernel and a fused activation
SUPPORTED_LAYERS = (
    "InputLayer, Dense, Conv2D, MaxPooling2D, Flatten, Dropout, BatchNormalization, "
    "Activation, ReLU, ELU (alpha 1), Softmax"
)


class ExportError(ValueError):
    """A Keras model cannot be written in the fastmnist format, or the written file does not match Keras."""


def export_keras(
    keras_model: Any,
    path: str | os.PathLike,
    *,
    reference_images: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``keras_model`` (a built ``keras.Sequential``) to the weights file ``path`` and verify it.

    reference_images: ``(N, 28, 28)`` (or ``(N, 784)``, ``(N, 28, 28, 1)``) images, uint8 0..255 or floats
    in [0, 1], ink high. The first 16 are stored with Keras' probabilities; all N are used to check that
    the engine's probabilities are within 1e-5 of Keras' with the same top class. Without them, 16 fixed
    pseudo-random images are used. metadata: extra JSON-able fields for the spec's ``metadata`` (the
    TensorFlow and Keras versions and the UTC date are always added).

    Returns the path. Raises ``ExportError`` naming the layer and setting that is not supported, or the
    parity failure; the file is only written (atomically) when the check passes.
    """
    import keras
    import tensorflow as tf

    from .training.ideal_inputs import ideal_inputs

    layers, arrays = convert_layers(keras_model)
    input_shape = tuple(keras_model.input_shape[1:])
    images = _as_unit_images(reference_images)
    probabilities = keras_model.predict(images.reshape((-1, *input_shape)), batch_size=1000, verbose=0)
    arrays["reference/inputs"] = images[:REFERENCE_COUNT]
    arrays["reference/probabilities"] = probabilities[:REFERENCE_COUNT]
    arrays["analysis/ideal_inputs"] = ideal_inputs(keras_model)
    spec = {
        "format": weights_format.FORMAT_NAME,
        "version": weights_format.FORMAT_VERSION,
        "input": {"shape": list(input_shape), "range": [0.0, 1.0]},
        "classes": CLASSES,
        "layers": layers,
        "reference": {"atol": REFERENCE_ATOL},
        "metadata": {
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


def convert_layers(keras_model: Any) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The format's layer list and arrays for ``keras_model``, with BatchNorm and activations folded.

    Arrays are float64 while folding and become float32 when saved. Raises ``ExportError``.
    """
    import keras

    if not isinstance(keras_model, keras.Sequential):
        raise ExportError(
            f"model '{getattr(keras_model, 'name', keras_model)}' is a {type(keras_model).__name__}, "
            "expected a keras.Sequential"
        )
    if not keras_model.built or not keras_model.inputs:
        raise ExportError(f"model '{keras_model.name}' has no input shape; start it with keras.Input((28, 28, 1))")
    _check_input_shape(keras_model)
    output_shape = tuple(keras_model.output_shape)
    if output_shape != (None, len(CLASSES)):
        raise ExportError(
            f"model '{keras_model.name}' outputs shape {output_shape}, expected (None, {len(CLASSES)}) (one per digit)"
        )
    layers: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for layer in keras_model.layers:
        _convert_layer(layer, layers, arrays)
    last = layers[-1] if layers else {"name": keras_model.name, "activation": "linear"}
    if last.get("activation") != "softmax":
        raise ExportError(
            f"model '{keras_model.name}' ends in layer '{last['name']}' with output activation "
            f"'{last.get('activation', 'none')}'; the format's output is probabilities, so the model must end in "
            "a softmax: add activation='softmax' to the last Dense (or a Softmax layer) and export again"
        )
    return layers, arrays


def _convert_layer(layer: Any, layers: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
    """Append ``layer`` to ``layers`` (or fold it into the last one)."""
    import keras

    if layer.compute_dtype != "float32":
        raise ExportError(f"layer '{layer.name}' computes in {layer.compute_dtype}, expected float32")
    kind = type(layer)
    if kind is keras.layers.InputLayer or kind is keras.layers.Dropout:
        return  # Dropout is the identity at inference
    if kind is keras.layers.Dense:
        _append_dense(layer, layers, arrays)
    elif kind is keras.layers.Conv2D:
        _append_conv2d(layer, layers, arrays)
    elif kind is keras.layers.MaxPooling2D:
        _check_channels_last(layer)
        _check_setting(layer, "padding", layer.padding, ("valid", "same"))
        layers.append(
            {
                "type": "maxpool2d",
                "name": layer.name,
                "pool_size": list(layer.pool_size),
                "strides": list(layer.strides),
                "padding": layer.padding,
            }
        )
    elif kind is keras.layers.Flatten:
        _check_channels_last(layer)
        layers.append({"type": "flatten", "name": layer.name})
    elif kind is keras.layers.BatchNormalization:
        _append_batchnorm(layer, layers, arrays)
    elif kind in (keras.layers.Activation, keras.layers.ReLU, keras.layers.ELU, keras.layers.Softmax):
        _append_activation(layer.name, _activation_layer_name(layer), layers)
    else:
        raise ExportError(
            f"layer '{layer.name}' is a {kind.__name__}, which the fastmnist format does not support; "
            f"supported layers: {SUPPORTED_LAYERS}"
        )


def _append_dense(layer: Any, layers: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
    input_rank = len(layer.input.shape) - 1
    if input_rank != 1:
        raise ExportError(
            f"layer '{layer.name}' (Dense) gets a rank-{input_rank} input {tuple(layer.input.shape)[1:]}, "
            "expected a vector: put a Flatten before it"
        )
    layers.append(
        {
            "type": "dense",
            "name": layer.name,
            "units": int(layer.units),
            "activation": _activation_function_name(layer, layer.activation),
            "use_bias": bool(layer.use_bias),
        }
    )
    _store_kernel_and_bias(layer, arrays)


def _append_conv2d(layer: Any, layers: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
    _check_channels_last(layer)
    _check_setting(layer, "padding", layer.padding, ("valid", "same"))
    _check_setting(layer, "dilation_rate", tuple(layer.dilation_rate), ((1, 1),))
    _check_setting(layer, "groups", layer.groups, (1,))
    layers.append(
        {
            "type": "conv2d",
            "name": layer.name,
            "filters": int(layer.filters),
            "kernel_size": list(layer.kernel_size),
            "strides": list(layer.strides),
            "padding": layer.padding,
            "activation": _activation_function_name(layer, layer.activation),
            "use_bias": bool(layer.use_bias),
        }
    )
    _store_kernel_and_bias(layer, arrays)


def _store_kernel_and_bias(layer: Any, arrays: dict[str, np.ndarray]) -> None:
    arrays[f"{layer.name}/kernel"] = np.asarray(layer.kernel, dtype=np.float64)
    if layer.use_bias:
        arrays[f"{layer.name}/bias"] = np.asarray(layer.bias, dtype=np.float64)


def _append_batchnorm(layer: Any, layers: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
    rank = len(layer.input.shape)
    if layer.axis not in (-1, rank - 1):
        raise ExportError(
            f"layer '{layer.name}' (BatchNormalization) normalises axis {layer.axis}, expected the last "
            "axis (-1, the channels in NHWC)"
        )
    channels = int(layer.input.shape[-1])
    gamma = np.asarray(layer.gamma, np.float64) if layer.scale else np.ones(channels)
    beta = np.asarray(layer.beta, np.float64) if layer.center else np.zeros(channels)
    mean = np.asarray(layer.moving_mean, np.float64)
    variance = np.asarray(layer.moving_variance, np.float64)
    previous = layers[-1] if layers else None
    if previous is not None and previous["type"] in FUSABLE and previous["activation"] == "linear":
        # y = (x @ W + b - mean) * gamma / sqrt(var + eps) + beta, exactly, as one layer: W and b are scaled
        # per output channel (the kernel's last axis in both Dense and HWIO Conv2D layouts).
        scale = gamma / np.sqrt(variance + layer.epsilon)
        name = previous["name"]
        bias = arrays.get(f"{name}/bias", np.zeros(channels))
        arrays[f"{name}/kernel"] = arrays[f"{name}/kernel"] * scale
        arrays[f"{name}/bias"] = (bias - mean) * scale + beta
        previous["use_bias"] = True
        return
    layers.append({"type": "batchnorm", "name": layer.name, "epsilon": float(layer.epsilon)})
    for param, values in (("gamma", gamma), ("beta", beta), ("moving_mean", mean), ("moving_variance", variance)):
        arrays[f"{layer.name}/{param}"] = values


def _append_activation(name: str, activation: str, layers: list[dict[str, Any]]) -> None:
    if activation == "linear":
        return
    previous = layers[-1] if layers else None
    if previous is not None and previous["type"] in FUSABLE and previous["activation"] == "linear":
        previous["activation"] = activation  # fused into the producing kernel's epilogue
        return
    layers.append({"type": "activation", "name": name, "activation": activation})


def _activation_layer_name(layer: Any) -> str:
    import keras

    kind = type(layer)
    if kind is keras.layers.Activation:
        return _activation_function_name(layer, layer.activation)
    if kind is keras.layers.ReLU:
        settings = (layer.max_value, float(layer.negative_slope), float(layer.threshold))
        _check_setting(layer, "(max_value, negative_slope, threshold)", settings, ((None, 0.0, 0.0),))
        return "relu"
    if kind is keras.layers.ELU:
        _check_setting(layer, "alpha", float(layer.alpha), (1.0,))
        return "elu"
    _check_setting(layer, "axis", layer.axis, (-1, len(layer.input.shape) - 1))
    return "softmax"


def _activation_function_name(layer: Any, function: Any) -> str:
    import keras

    for name in ACTIVATIONS:
        if function is keras.activations.get(name):
            return name
    found = getattr(function, "__name__", repr(function))
    raise ExportError(
        f"layer '{layer.name}' uses activation '{found}', which the format does not support; "
        f"supported: {', '.join(ACTIVATIONS)} (elu with alpha 1)"
    )


def _check_channels_last(layer: Any) -> None:
    _check_setting(layer, "data_format", layer.data_format, ("channels_last",))


def _check_setting(layer: Any, setting: str, found: Any, supported: tuple[Any, ...]) -> None:
    if found not in supported:
        expected = " or ".join(repr(value) for value in supported)
        raise ExportError(
            f"layer '{layer.name}' ({type(layer).__name__}) has {setting}={found!r}, which the format does not "
            f"support; expected {expected}"
        )


def _check_input_shape(keras_model: Any) -> None:
    shape = tuple(keras_model.input_shape[1:])
    if shape not in INPUT_SHAPES:
        raise ExportError(
            f"model '{keras_model.name}' takes inputs of shape {shape}, expected one of "
            f"{', '.join(str(s) for s in INPUT_SHAPES)}"
        )


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
    from . import WeightsFormatError, load

    try:
        engine_probabilities = load(path).predict_proba(images)
    except WeightsFormatError as error:  # e.g. the stored reference images already disagree
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
