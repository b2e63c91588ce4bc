"""A whole model as the weights file describes it, checked: input, classes, layers with their shapes and arrays.

`parse` is the one place that decides whether a spec and its arrays make a model; the engine and the NumPy
reference both build from its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import WeightsFormatError
from .layers import Dropout, Layer, LayerError, Shape, activation_of, parse_layer

INPUT_SHAPES = ((28, 28, 1), (28, 28), (784,))
MAX_LAYERS = 64
MAX_CLASSES = 65536
MAX_ACTIVATION_VALUES = 16 << 20
MAX_REFERENCE_ATOL = 1e-3
_TOP_LEVEL_KEYS = {"format", "version", "input", "classes", "layers", "reference", "metadata"}


@dataclass(frozen=True)
class PlannedLayer:
    """A layer with the shapes that flow through it and its weight arrays (float32, Keras layouts)."""
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    params: dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelSpec:
    input_shape: Shape
    input_range: tuple[float, float]
    classes: tuple[str, ...]
    layers: tuple[PlannedLayer, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    reference_inputs: np.ndarray | None = None        # (k, 28, 28) float32 in [0, 1]
    reference_probabilities: np.ndarray | None = None  # (k, classes) float32
    reference_atol: float = 0.0
    ideal_inputs: np.ndarray | None = None             # (classes, 28, 28) float32

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def parse(spec: dict[str, Any], arrays: dict[str, np.ndarray], source: str) -> ModelSpec:
    """Check that `spec` and `arrays` (from fastmnist.format.read) describe a model. Raises WeightsFormatError."""
    where = f"weights file '{source}'"

    def fail(message: str) -> WeightsFormatError:
        return WeightsFormatError(f"{where}: {message}")

    unknown = sorted(set(spec) - _TOP_LEVEL_KEYS)
    if unknown:
        raise fail(f"unknown spec field(s) {', '.join(map(repr, unknown))}")
    input_shape, input_range = _parse_input(spec.get("input"), fail)
    classes = spec.get("classes")
    if (not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES
            or not all(isinstance(c, str) for c in classes)):
        raise fail(f"'classes' is {classes!r:.80}, expected a non-empty list of strings")
    raw_layers = spec.get("layers")
    if not isinstance(raw_layers, list) or not 1 <= len(raw_layers) <= MAX_LAYERS:
        raise fail(f"'layers' must be a list of 1 to {MAX_LAYERS} layers")

    unused = dict(arrays)
    planned, names, shape = [], set(), input_shape
    for index, raw in enumerate(raw_layers):
        label = f"layer {index}" + (f" '{raw['name']}'" if isinstance(raw, dict) and "name" in raw else "")
        try:
            layer = parse_layer(raw)
            if layer.name in names:
                raise LayerError("the name is used by an earlier layer")
            names.add(layer.name)
            output_shape = layer.output_shape(shape)
            if math.prod(output_shape) > MAX_ACTIVATION_VALUES:
                raise LayerError(f"output shape {output_shape} exceeds {MAX_ACTIVATION_VALUES} values per image")
            params = {key: _take_param(unused, f"{layer.name}/{key}", expected)
                      for key, expected in layer.param_shapes(shape).items()}
        except LayerError as e:
            raise fail(f"{label} ({raw.get('type') if isinstance(raw, dict) else '?'}): {e}") from None
        if "moving_variance" in params and not (params["moving_variance"] + layer.epsilon > 0).all():
            raise fail(f"{label} (batchnorm): 'moving_variance' + epsilon must be positive")
        planned.append(PlannedLayer(layer, shape, output_shape, params))
        shape = output_shape

    _check_ends_in_softmax(planned, shape, len(classes), fail)
    reference = _take_reference(spec.get("reference"), unused, input_shape, len(classes), fail)
    ideal_inputs = unused.pop("analysis/ideal_inputs", None)
    if ideal_inputs is not None and (ideal_inputs.dtype != np.float32 or ideal_inputs.shape != (len(classes), 28, 28) or not _finite(ideal_inputs)):
        raise fail(f"'analysis/ideal_inputs' is {ideal_inputs.dtype} {ideal_inputs.shape} or has non-finite "
                   f"values, expected finite float32 ({len(classes)}, 28, 28)")
    if unused:
        raise fail(f"array(s) {', '.join(sorted(unused))} belong to no layer")
    metadata = spec.get("metadata", {})
    if not isinstance(metadata, dict):
        raise fail("'metadata' must be a JSON object")
    return ModelSpec(input_shape, input_range, tuple(classes), tuple(planned), metadata, *reference,
                     ideal_inputs=ideal_inputs)


def _parse_input(raw: Any, fail) -> tuple[Shape, tuple[float, float]]:
    if not isinstance(raw, dict) or set(raw) - {"shape", "range"}:
        raise fail(f"'input' is {raw!r:.80}, expected an object with 'shape' and 'range'")
    shape = tuple(raw.get("shape", ())) if isinstance(raw.get("shape"), list) else None
    if shape not in INPUT_SHAPES:
        raise fail(f"input shape {raw.get('shape')!r}, expected one of {', '.join(map(str, map(list, INPUT_SHAPES)))}")
    value_range = raw.get("range", [0.0, 1.0])
    if (not isinstance(value_range, list) or len(value_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1e6
                       for v in value_range)):
        raise fail(f"input range {value_range!r}, expected [lo, hi], two finite numbers")
    return shape, (float(value_range[0]), float(value_range[1]))


def _take_param(unused: dict[str, np.ndarray], name: str, expected: Shape) -> np.ndarray:
    if name not in unused:
        raise LayerError(f"array '{name}' is missing (expected shape {expected})")
    array = unused.pop(name)
    if array.dtype != np.float32:  # every float layer's weights; integer arrays belong to reduced-precision layers
        raise LayerError(f"array '{name}' has dtype {array.dtype}, expected float32")
    if array.shape != expected:
        raise LayerError(f"array '{name}' has shape {array.shape}, expected {expected}")
    if not _finite(array):
        raise LayerError(f"array '{name}' holds NaN or infinite values")
    return array


def _finite(array: np.ndarray) -> bool:
    return bool(np.isfinite(array).all())


def _check_ends_in_softmax(planned: list[PlannedLayer], shape: Shape, num_classes: int, fail) -> None:
    last = next((p.layer for p in reversed(planned) if not isinstance(p.layer, Dropout)), planned[-1].layer)
    if activation_of(last).name != "softmax":
        raise fail(f"the last layer '{last.name}' ends in {activation_of(last).to_json()!r}, expected softmax "
                   "(the model must output probabilities)")
    if shape != (num_classes,):
        raise fail(f"the model outputs shape {shape}, expected ({num_classes},) for {num_classes} classes")


def _take_reference(raw: Any, unused: dict[str, np.ndarray], input_shape: Shape, num_classes: int, fail):
    inputs = unused.pop("reference/inputs", None)
    probabilities = unused.pop("reference/probabilities", None)
    if inputs is None and probabilities is None and raw is None:
        return None, None, 0.0
    if inputs is None or probabilities is None or not isinstance(raw, dict) or set(raw) != {"atol"}:
        raise fail("a reference needs 'reference/inputs', 'reference/probabilities' and spec 'reference': {'atol'}")
    atol = raw["atol"]
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not 0 < atol <= MAX_REFERENCE_ATOL:
        raise fail(f"reference atol {atol!r}, expected a number in (0, {MAX_REFERENCE_ATOL}]")
    for name, array in (("reference/inputs", inputs), ("reference/probabilities", probabilities)):
        if array.dtype != np.float32:
            raise fail(f"'{name}' has dtype {array.dtype}, expected float32")
    if inputs.ndim != 3 or inputs.shape[1:] != (28, 28) or not 1 <= inputs.shape[0] <= 4096:
        raise fail(f"'reference/inputs' has shape {inputs.shape}, expected (k, 28, 28) with 1 <= k <= 4096")
    if probabilities.shape != (inputs.shape[0], num_classes):
        raise fail(f"'reference/probabilities' has shape {probabilities.shape}, "
                   f"expected ({inputs.shape[0]}, {num_classes})")
    if not (_finite(inputs) and inputs.min() >= 0.0 and inputs.max() <= 1.0):
        raise fail("'reference/inputs' must be finite and in [0, 1]")
    if not _finite(probabilities):
        raise fail("'reference/probabilities' holds NaN or infinite values")
    return inputs, probabilities, float(atol)
