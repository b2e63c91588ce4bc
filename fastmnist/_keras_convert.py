"""Keras layers -> the format's layer list: the one place that knows Keras layer classes and their settings.

`convert_keras` walks the model's chain of layers once. The leading preprocessing layers (Rescaling,
Normalization, a Reshape between the input shapes) become one affine map of the pixels; every other layer
becomes zero or more format layers (identities at inference become none, SeparableConv2D becomes two). The
folding (zero padding, BatchNorm, activations, the input map, the output softmax) is then done on that list by
`_fold`.
Keras must be importable when these functions are called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _fold
from . import _keras_activations as activations
from . import format as weights_format
from .errors import ExportError
from .spec import INPUT_SHAPES

CLASSES = tuple(str(digit) for digit in range(10))
# Keras layers that are the identity at inference (their training-time noise or penalty is off).
IDENTITY_LAYERS = ("Dropout", "SpatialDropout2D", "AlphaDropout", "GaussianNoise", "GaussianDropout",
                   "ActivityRegularization")
INPUT_LAYERS = ("Rescaling", "Normalization", "Reshape")  # only before the first computing layer
# Folded into the pixel map when they come before the first computing layer (a later BatchNorm is a layer).
PIXEL_MAP_LAYERS = (*INPUT_LAYERS, "BatchNormalization")
SUPPORTED_LAYERS = (
    "InputLayer, Rescaling, Normalization and Reshape at the input; Dense, Conv2D, DepthwiseConv2D, "
    "SeparableConv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, ZeroPadding2D, "
    "Flatten, Reshape to a vector, BatchNormalization, Activation, ReLU, LeakyReLU, ELU, Softmax; dropped as "
    f"identities: {', '.join(IDENTITY_LAYERS)}; nested Sequential/Functional models"
)
# A Rescaling by at most this marks a model fed raw 0..255 pixels (1/255, 1/127.5 with offset -1, ...).
RAW_PIXELS_RESCALING = 1.0 / 100.0
PADDINGS = ("valid", "same")


@dataclass(frozen=True)
class KerasConversion:
    """A Keras model in the format, before the reference arrays are added.

    spec: the weights file's JSON (without "reference"); arrays: float64 weights by "<layer>/<param>";
    input_max: what the Keras model is fed for full ink (1.0, or 255.0 for raw pixels); output: what the Keras
    model outputs and what became of it (the spec's ``metadata.output``); applied_layers: the Keras layers
    that compute something at inference, in order.
    """

    model: Any
    spec: dict[str, Any]
    arrays: dict[str, np.ndarray]
    input_max: float
    output: str
    applied_layers: tuple[Any, ...]

    @property
    def softmax_appended(self) -> bool:
        """The model outputs logits, and the format applies a softmax that Keras does not."""
        return self.output == _fold.SOFTMAX_APPENDED

    def keras_probabilities(self, images: np.ndarray) -> np.ndarray:
        """``(N, 10) float64``: Keras' class probabilities for ``(N, 28, 28) float32`` images in [0, 1]."""
        inputs = (images.astype(np.float32) * np.float32(self.input_max)).reshape((-1, *self.model.input_shape[1:]))
        outputs = np.asarray(self.model.predict(inputs, batch_size=1000, verbose=0), dtype=np.float64)
        if self.output == _fold.LOG_SOFTMAX_REPLACED:
            return np.exp(outputs)
        if not self.softmax_appended:
            return outputs
        exponentials = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)


def convert_keras(model: Any, *, input_max: float | None = None) -> KerasConversion:
    """Convert a built Keras model (Sequential or Functional chain) taking one MNIST image and giving 10 outputs.

    input_max: the value Keras expects for full ink: 1.0 (pixels in [0, 1]) or 255.0 (raw pixels); None picks
    255 when the model's first preprocessing layer is a Rescaling by at most 1/100, and 1 otherwise. Raises
    ExportError naming the layer and setting that the format cannot express.
    """
    from ._keras_graph import layer_chain

    chain = layer_chain(model)
    shape = tuple(model.input_shape[1:])
    if shape not in INPUT_SHAPES:
        raise ExportError(f"model '{model.name}' takes inputs of shape {shape}, expected one of "
                          f"{', '.join(str(s) for s in INPUT_SHAPES)}")
    if tuple(model.output_shape) != (None, len(CLASSES)):
        raise ExportError(f"model '{model.name}' outputs shape {tuple(model.output_shape)}, expected "
                          f"(None, {len(CLASSES)}) (one per digit)")
    input_max = _default_input_max(chain) if input_max is None else float(input_max)
    if not 0.0 < input_max <= 1e6:
        raise ExportError(f"input_max is {input_max}, expected the value of full ink: 1.0 or 255.0")

    pixels = _PixelMap(np.full(math.prod(shape), input_max), np.zeros(math.prod(shape)))
    entries: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    applied = []
    input_shape = shape
    for index, layer in enumerate(chain):
        kind = _kind(layer)
        if layer.compute_dtype != "float32":
            raise ExportError(f"layer '{layer.name}' ({kind}) computes in {layer.compute_dtype}, expected float32")
        if getattr(layer, "quantization_mode", None) is not None:
            raise ExportError(f"layer '{layer.name}' ({kind}) is quantized ({layer.quantization_mode}), expected "
                              "float32 weights: export the model before keras.Model.quantize")
        output_shape = tuple(layer.compute_output_shape((None, *shape)))[1:]
        if kind in IDENTITY_LAYERS:
            shape = output_shape
            continue
        at_input = all(entry["type"] == "flatten" for entry in entries)
        if kind in PIXEL_MAP_LAYERS and at_input and not (kind == "Reshape" and entries):
            pixels.apply(layer, shape)
            if kind == "Reshape":
                input_shape = _input_reshape(layer, output_shape)
        elif kind == "Reshape":
            _check_reshape_to_vector(layer, shape, output_shape)
            entries.append({"type": "flatten", "name": layer.name})
        elif kind in INPUT_LAYERS:
            raise ExportError(f"layer '{layer.name}' ({kind}) comes after layer '{entries[-1]['name']}'; the format "
                              f"takes {kind} only at the model's input, before the first computing layer")
        else:
            before = len(entries)
            _append(layer, shape, entries, arrays)
            if len(entries) == before:  # a linear activation layer
                shape = output_shape
                continue
            if kind.startswith("Global") and layer.keepdims:
                _check_flattened_next(layer, chain[index + 1:])
        applied.append(layer)
        shape = output_shape

    entries = _fold.fold_layers(entries, arrays)
    input_range = _fold.fold_input_map(entries, arrays, input_shape, pixels.scale, pixels.offset)
    output = _fold.finish_with_softmax(entries, model.name)
    spec = {
        "format": weights_format.FORMAT_NAME,
        "version": weights_format.FORMAT_VERSION,
        "input": {"shape": list(input_shape), "range": list(input_range)},
        "classes": list(CLASSES),
        "layers": entries,
        "metadata": {"source": "keras", "output": output},
    }
    return KerasConversion(model, spec, arrays, input_max, output, tuple(applied))


def _kind(layer: Any) -> str:
    """The Keras class name of ``layer``, or its qualified name when it is not exactly a ``keras.layers`` class."""
    import keras

    kind = type(layer).__name__
    if getattr(keras.layers, kind, None) is type(layer):
        return kind
    return f"{type(layer).__module__}.{type(layer).__qualname__}"


def _default_input_max(chain: list[Any]) -> float:
    for layer in chain:
        kind = _kind(layer)
        if kind == "Rescaling":
            return 255.0 if np.all(np.abs(np.asarray(layer.scale, np.float64)) <= RAW_PIXELS_RESCALING) else 1.0
        if kind not in IDENTITY_LAYERS and kind != "Reshape":
            return 1.0
    return 1.0


class _PixelMap:
    """What the leading preprocessing layers (and a leading BatchNorm) do to the pixels: scale * p + offset.

    The arrays are flat (784,) in row-major order, which every accepted input shape shares, so a Reshape
    between those shapes leaves them unchanged.
    """

    def __init__(self, scale: np.ndarray, offset: np.ndarray):
        self.scale, self.offset = scale, offset

    def apply(self, layer: Any, shape: tuple[int, ...]) -> None:
        kind = type(layer).__name__
        if kind == "Rescaling":
            factor = self._per_value(layer, np.asarray(layer.scale, np.float64), shape, "scale")
            shift = self._per_value(layer, np.asarray(layer.offset, np.float64), shape, "offset")
            self.scale, self.offset = self.scale * factor, self.offset * factor + shift
        elif kind == "Normalization":
            if layer.invert:
                raise ExportError(f"layer '{layer.name}' (Normalization) has invert=True, which the format does "
                                  "not support; expected invert=False")
            mean = self._per_value(layer, np.asarray(layer.mean, np.float64), shape, "mean")
            variance = self._per_value(layer, np.asarray(layer.variance, np.float64), shape, "variance")
            # Keras divides by max(sqrt(variance), epsilon) with its float epsilon, 1e-7.
            std = np.maximum(np.sqrt(variance), 1e-7)
            self.scale, self.offset = self.scale / std, (self.offset - mean) / std
        elif kind == "BatchNormalization":
            _check_batchnorm_axis(layer, shape)
            bn = _batchnorm_params(layer, shape[-1])
            factor = bn["gamma"] / np.sqrt(bn["moving_variance"] + layer.epsilon)
            shift = bn["beta"] - bn["moving_mean"] * factor
            positions = math.prod(shape[:-1])  # the channel is the fastest axis of the flat order
            factor, shift = np.tile(factor, positions), np.tile(shift, positions)
            self.scale, self.offset = self.scale * factor, self.offset * factor + shift

    @staticmethod
    def _per_value(layer: Any, values: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        """``values`` broadcast over one image of ``shape`` (a leading batch axis of 1 allowed), flattened."""
        if values.ndim == len(shape) + 1 and values.shape[0] == 1:
            values = values[0]
        try:
            return np.broadcast_to(values, shape).reshape(-1)
        except ValueError:
            raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) has {what} of shape {values.shape}, "
                              f"which does not broadcast over its input {shape}") from None


def _input_reshape(layer: Any, output_shape: tuple[int, ...]) -> tuple[int, ...]:
    if output_shape not in INPUT_SHAPES:
        raise ExportError(f"layer '{layer.name}' (Reshape) reshapes the input to {output_shape}, which the format "
                          f"does not support; expected one of {', '.join(str(s) for s in INPUT_SHAPES)}")
    return output_shape


def _check_reshape_to_vector(layer: Any, shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
    if output_shape != (math.prod(shape),):
        raise ExportError(
            f"layer '{layer.name}' (Reshape) reshapes {shape} to {output_shape}, which the format does not support "
            "after the input; expected a reshape to a vector (as Flatten)"
        )


def _check_flattened_next(layer: Any, rest: list[Any]) -> None:
    """A global pool with keepdims=True gives (1, 1, c), which the format only has as (c,): it must be flattened."""
    following = next((other for other in rest if _kind(other) not in IDENTITY_LAYERS), None)
    if following is None or _kind(following) not in ("Flatten", "Reshape"):
        found = (f"is followed by layer '{following.name}' ({type(following).__name__})" if following is not None
                 else "is the last layer")
        raise ExportError(
            f"layer '{layer.name}' ({type(layer).__name__}) has keepdims=True and {found}; the format's global "
            "pools output a vector, so it is supported with keepdims=False, or with keepdims=True followed by Flatten"
        )


def _append(layer: Any, shape: tuple[int, ...], entries: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
    """Append the format layers that compute ``layer`` on inputs of ``shape`` (no batch axis)."""
    kind = _kind(layer)
    rank = len(shape)
    if kind == "Dense":
        if rank != 1:
            raise ExportError(f"layer '{layer.name}' (Dense) gets a rank-{rank} input {shape}, expected a vector: "
                              "put a Flatten before it")
        entries.append({"type": "dense", "name": layer.name, "units": int(layer.units),
                        "activation": activations.from_function(layer, layer.activation, 1),
                        "use_bias": bool(layer.use_bias)})
        _store(arrays, layer.name, kernel=layer.kernel, bias=layer.bias if layer.use_bias else None)
    elif kind == "Conv2D":
        _check_image_layer(layer, dilation=True, groups=True)
        entries.append({"type": "conv2d", "name": layer.name, "filters": int(layer.filters),
                        **_window(layer, "kernel_size"),
                        "activation": activations.from_function(layer, layer.activation, 3),
                        "use_bias": bool(layer.use_bias)})
        _store(arrays, layer.name, kernel=layer.kernel, bias=layer.bias if layer.use_bias else None)
    elif kind == "DepthwiseConv2D":
        _check_image_layer(layer, dilation=True)
        entries.append({"type": "depthwise_conv2d", "name": layer.name, **_window(layer, "kernel_size"),
                        "depth_multiplier": int(layer.depth_multiplier),
                        "activation": activations.from_function(layer, layer.activation, 3),
                        "use_bias": bool(layer.use_bias)})
        _store(arrays, layer.name, kernel=layer.kernel, bias=layer.bias if layer.use_bias else None)
    elif kind == "SeparableConv2D":
        # A depthwise convolution (linear, no bias) then a 1x1 convolution with the bias and the activation.
        _check_image_layer(layer, dilation=True)
        depthwise, pointwise = f"{layer.name}.depthwise", f"{layer.name}.pointwise"
        entries.append({"type": "depthwise_conv2d", "name": depthwise, **_window(layer, "kernel_size"),
                        "depth_multiplier": int(layer.depth_multiplier), "activation": "linear",
                        "use_bias": False})
        entries.append({"type": "conv2d", "name": pointwise, "filters": int(layer.filters), "kernel_size": [1, 1],
                        "strides": [1, 1], "padding": "valid",
                        "activation": activations.from_function(layer, layer.activation, 3),
                        "use_bias": bool(layer.use_bias)})
        _store(arrays, depthwise, kernel=layer.depthwise_kernel)
        _store(arrays, pointwise, kernel=layer.pointwise_kernel, bias=layer.bias if layer.use_bias else None)
    elif kind in ("MaxPooling2D", "AveragePooling2D"):
        _check_image_layer(layer)
        entry = {"type": "maxpool2d" if kind == "MaxPooling2D" else "avgpool2d", "name": layer.name,
                 **_window(layer, "pool_size")}
        if kind == "AveragePooling2D":
            entry["count_include_pad"] = False  # Keras averages over the values inside the input
        entries.append(entry)
    elif kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        _check_image_layer(layer)
        entries.append({"type": "global_avgpool2d" if kind == "GlobalAveragePooling2D" else "global_maxpool2d",
                        "name": layer.name})
    elif kind == "ZeroPadding2D":
        _check_image_layer(layer)
        (top, bottom), (left, right) = layer.padding
        entries.append({"type": "zeropad2d", "name": layer.name,
                        "padding": [[int(top), int(bottom)], [int(left), int(right)]]})
    elif kind == "Flatten":
        if rank >= 2:  # channels_first moves axis 1 last before flattening, even for a (28, 28) input
            _check_setting(layer, "data_format", layer.data_format, ("channels_last",))
        entries.append({"type": "flatten", "name": layer.name})
    elif kind == "BatchNormalization":
        _append_batchnorm(layer, shape, entries, arrays)
    elif kind in activations.ACTIVATION_LAYERS:
        activation = activations.from_layer(layer, rank)
        if activation != "linear":
            entries.append({"type": "activation", "name": layer.name, "activation": activation})
    else:
        raise ExportError(f"layer '{layer.name}' is a {kind}, which the fastmnist format does not support; "
                          f"supported layers: {SUPPORTED_LAYERS}")


def _append_batchnorm(layer: Any, shape: tuple[int, ...], entries: list[dict[str, Any]],
                      arrays: dict[str, np.ndarray]) -> None:
    _check_batchnorm_axis(layer, shape)
    entries.append({"type": "batchnorm", "name": layer.name, "epsilon": float(layer.epsilon)})
    _store(arrays, layer.name, **_batchnorm_params(layer, shape[-1]))


def _check_batchnorm_axis(layer: Any, shape: tuple[int, ...]) -> None:
    if layer.axis not in (-1, len(shape)):
        raise ExportError(f"layer '{layer.name}' (BatchNormalization) normalises axis {layer.axis}, expected the "
                          "last axis (-1, the channels in NHWC)")


def _batchnorm_params(layer: Any, channels: int) -> dict[str, np.ndarray]:
    """gamma, beta, moving_mean, moving_variance as float64 (channels,), with Keras' 1 and 0 where it has none."""
    return {"gamma": np.asarray(layer.gamma, np.float64) if layer.scale else np.ones(channels),
            "beta": np.asarray(layer.beta, np.float64) if layer.center else np.zeros(channels),
            "moving_mean": np.asarray(layer.moving_mean, np.float64),
            "moving_variance": np.asarray(layer.moving_variance, np.float64)}


def _store(arrays: dict[str, np.ndarray], name: str, **params: Any) -> None:
    for param, value in params.items():
        if value is not None:
            arrays[f"{name}/{param}"] = np.asarray(value, dtype=np.float64)


def _window(layer: Any, size: str) -> dict[str, Any]:
    """A convolution's or pool's window, strides and padding as the format writes them."""
    _check_setting(layer, "padding", layer.padding, PADDINGS)
    return {size: [int(v) for v in getattr(layer, size)], "strides": [int(v) for v in layer.strides],
            "padding": layer.padding}


def _check_image_layer(layer: Any, dilation: bool = False, groups: bool = False) -> None:
    # Keras itself only builds these layers on (height, width, channels) maps.
    _check_setting(layer, "data_format", layer.data_format, ("channels_last",))
    if dilation:
        _check_setting(layer, "dilation_rate", tuple(layer.dilation_rate), ((1, 1),))
    if groups:
        _check_setting(layer, "groups", layer.groups, (1,))


def _check_setting(layer: Any, setting: str, found: Any, supported: tuple[Any, ...]) -> None:
    if found not in supported:
        expected = " or ".join(repr(value) for value in supported)
        raise ExportError(f"layer '{layer.name}' ({type(layer).__name__}) has {setting}={found!r}, which the format "
                          f"does not support; expected {expected}")
