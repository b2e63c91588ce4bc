"""Folding on the format's layer list, for converters: one place for every exact simplification.

- a zeropad2d right before a conv2d / depthwise_conv2d with "valid" padding becomes that layer's explicit pads;
- a BatchNorm (or another per-channel affine map) right after a linear dense / conv2d / depthwise_conv2d is folded
  into its kernel and bias;
- an activation layer right after a linear one of those becomes its fused activation;
- the affine map of the pixels that the source model's preprocessing applies is folded into the first
  linear layer where that is exact (so a blank pixel stays exactly 0), else into ``input.range``;
- a model that ends in logits gets a softmax, and one that ends in a log_softmax gets a softmax instead.

The Keras converter folds its whole layer list at once (`fold_layers`); the ONNX converter, which decides as it
walks, calls the single steps.

Layers are the spec's JSON objects; arrays are float64 by "<layer>/<param>" and are changed in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ExportError

FUSABLE = ("dense", "conv2d", "depthwise_conv2d")  # layer types with a kernel, a bias and a fused activation
SOFTMAX = "softmax"
SOFTMAX_APPENDED = "logits, softmax appended"
LOG_SOFTMAX = "log_softmax"
LOG_SOFTMAX_REPLACED = "log_softmax, replaced by softmax"

Layer = dict[str, Any]


def activation_name(layer: Layer) -> str:
    activation = layer.get("activation", "linear")
    return activation if isinstance(activation, str) else activation["name"]


def is_linear_producer(layer: Layer) -> bool:
    """Whether ``layer`` has a kernel and a bias that an affine map after it can fold into, and no activation yet."""
    return layer["type"] in FUSABLE and activation_name(layer) == "linear"


def fold_layers(layers: list[Layer], arrays: dict[str, np.ndarray]) -> list[Layer]:
    """``layers`` with zero padding folded into the convolution after it, and each BatchNorm and activation layer
    folded into a linear producer right before it."""
    folded: list[Layer] = []
    for layer in layers:
        previous = folded[-1] if folded else None
        producer = previous is not None and is_linear_producer(previous)
        if (previous is not None and previous["type"] == "zeropad2d" and layer["type"] in ("conv2d", "depthwise_conv2d")
                and layer["padding"] == "valid"):
            # A convolution over zero-padded values is the convolution with those pads (the format pads with 0).
            folded[-1] = {**layer, "padding": previous["padding"]}
        elif producer and layer["type"] == "batchnorm":
            _fold_batchnorm(previous, layer, arrays)
        elif producer and layer["type"] == "activation":
            previous["activation"] = layer["activation"]  # computed in the producing kernel's epilogue
        else:
            folded.append(layer)
    return folded


def _fold_batchnorm(producer: Layer, batchnorm: Layer, arrays: dict[str, np.ndarray]) -> None:
    # y = (x @ W + b - mean) * gamma / sqrt(var + eps) + beta is one linear layer.
    bn = {param: arrays.pop(f"{batchnorm['name']}/{param}") for param in
          ("gamma", "beta", "moving_mean", "moving_variance")}
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + batchnorm["epsilon"])
    fold_channel_affine(producer, arrays, scale, bn["beta"], bn["moving_mean"])


def fold_channel_affine(producer: Layer, arrays: dict[str, np.ndarray], scale: np.ndarray, shift: np.ndarray,
                        mean: np.ndarray | float = 0.0) -> None:
    """Fold "y = (producer's output - mean) * scale + shift" into the linear ``producer``'s kernel and bias.

    scale, shift, mean: one float64 value per output channel, ``(channels,)`` (mean may be a scalar). The kernel
    is scaled per output channel: its last axis (dense, conv2d HWIO), or its last two (depthwise: channel
    c * dm + m).
    """
    name = producer["name"]
    kernel = arrays[f"{name}/kernel"]
    per_output = scale.reshape(kernel.shape[-2:]) if producer["type"] == "depthwise_conv2d" else scale
    bias = arrays.get(f"{name}/bias", np.zeros_like(scale))
    arrays[f"{name}/kernel"] = kernel * per_output
    arrays[f"{name}/bias"] = (bias - mean) * scale + shift
    producer["use_bias"] = True


def fold_input_map(layers: list[Layer], arrays: dict[str, np.ndarray], input_shape: tuple[int, ...],
                   scale: np.ndarray, offset: np.ndarray) -> tuple[float, float]:
    """Fold "model input = scale * p + offset" (flat (784,) arrays, p the pixel in [0, 1]) into ``layers``.

    Returns the ``input.range`` that is left to the engine: (0, 1) when the map went into the first layer.
    """
    if np.all(scale == 1.0) and np.all(offset == 0.0):
        return 0.0, 1.0
    first = next(layer for layer in layers if layer["type"] != "flatten")
    uniform = bool(np.all(scale == scale[0]) and np.all(offset == offset[0]))
    if first["type"] == "dense":
        # x @ W + b with x = s * p + o is p @ (s[:, None] * W) + (b + o @ W).
        kernel = arrays[f"{first['name']}/kernel"]
        _add_bias(first, arrays, offset @ kernel)
        arrays[f"{first['name']}/kernel"] = scale[:, None] * kernel
        return 0.0, 1.0
    if first["type"] in ("conv2d", "depthwise_conv2d") and first["padding"] == "valid" and uniform:
        # Without padding every window sees only pixels, so the same rule holds with sums over the window.
        kernel = arrays[f"{first['name']}/kernel"]
        window_sum = kernel.sum(axis=(0, 1, 2)) if first["type"] == "conv2d" else kernel.sum(axis=(0, 1)).reshape(-1)
        _add_bias(first, arrays, offset[0] * window_sum)
        arrays[f"{first['name']}/kernel"] = scale[0] * kernel
        return 0.0, 1.0
    if uniform:
        return float(offset[0]), float(offset[0] + scale[0])
    raise ExportError(
        f"the model's input preprocessing scales or shifts each pixel differently (input shape {input_shape}), "
        f"which only a first dense layer can absorb; the first layer '{first['name']}' is a {first['type']}"
    )


def _add_bias(layer: Layer, arrays: dict[str, np.ndarray], extra: np.ndarray) -> None:
    key = f"{layer['name']}/bias"
    arrays[key] = arrays.get(key, np.zeros_like(extra)) + extra
    layer["use_bias"] = True


def finish_with_softmax(layers: list[Layer], model_name: str) -> str:
    """Make ``layers`` end in a softmax; returns the ``metadata.output`` note.

    A model that ends in a softmax is kept; one that ends linearly outputs logits and gets a softmax (fused into
    a last linear layer, or as an activation layer); one that ends in a log_softmax (the log of the
    probabilities) gets a softmax in its place; one that ends in another activation is refused.
    """
    for layer in layers[:-1]:
        if activation_name(layer) == LOG_SOFTMAX:
            raise ExportError(f"model '{model_name}': layer '{layer['name']}' uses activation 'log_softmax', which "
                              "the format supports only as the model's output (where a softmax replaces it)")
    last = layers[-1]
    ending = activation_name(last)
    if ending == SOFTMAX:
        return SOFTMAX
    if ending == LOG_SOFTMAX:
        last["activation"] = SOFTMAX
        return LOG_SOFTMAX_REPLACED
    if ending != "linear":
        raise ExportError(
            f"model '{model_name}': the last layer '{last['name']}' uses activation '{ending}', which does not give "
            "probabilities over the classes; expected a softmax, or a linear output (logits), to which the "
            "exporter appends a softmax"
        )
    return append_softmax(layers)


def append_softmax(layers: list[Layer]) -> str:
    """Make ``layers``, whose output are logits, end in their softmax; returns the ``metadata.output`` note.

    The softmax is fused into a last linear layer with a kernel, else appended as an activation layer.
    """
    last = layers[-1]
    if is_linear_producer(last):
        last["activation"] = SOFTMAX
    else:
        names = {layer["name"] for layer in layers}
        name = next(candidate for candidate in ("softmax", *(f"softmax{i}" for i in range(1, len(layers) + 2)))
                    if candidate not in names)
        layers.append({"type": "activation", "name": name, "activation": SOFTMAX})
    return SOFTMAX_APPENDED
