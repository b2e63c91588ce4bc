"""The layer types of the weights format: their fields, output shapes and the arrays each one needs.

Each class parses one entry of the spec's "layers" list strictly (unknown or out-of-range fields are refused),
so that the rest of the engine can trust it. Shapes exclude the batch axis; images are (h, w, c), NHWC.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

ACTIVATIONS = ("linear", "relu", "elu", "softmax")
PADDINGS = ("same", "valid")
MAX_DIM = 65536
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

Shape = tuple[int, ...]


class LayerError(ValueError):
    """A layer entry is malformed; the caller adds which file it came from."""


class _Fields:
    """Reads a layer's fields, each checked for type and range, and refuses fields nobody read."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        self.read = {"type", "name"}

    def integer(self, key: str, default: int | None = None, low: int = 1, high: int = MAX_DIM) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise LayerError(f"'{key}' is {value!r}, expected an integer from {low} to {high}")
        return value

    def pair(self, key: str, default: tuple[int, int] | None = None) -> tuple[int, int]:
        value = self._get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value, value)
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DIM for v in value)):
            raise LayerError(f"'{key}' is {value!r}, expected two integers from 1 to {MAX_DIM}")
        return int(value[0]), int(value[1])

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self._get(key, default)
        if value not in options:
            raise LayerError(f"'{key}' is {value!r}, expected one of {', '.join(options)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise LayerError(f"'{key}' is {value!r}, expected true or false")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise LayerError(f"'{key}' is {value!r}, expected a number from {low} to {high}")
        return float(value)

    def _get(self, key: str, default: Any) -> Any:
        self.read.add(key)
        if key not in self.raw:
            if default is None:
                raise LayerError(f"'{key}' is missing")
            return default
        return self.raw[key]

    def check_all_read(self) -> None:
        unknown = sorted(set(self.raw) - self.read)
        if unknown:
            raise LayerError(f"unknown field(s) {', '.join(map(repr, unknown))}")


def _expect_rank(shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        raise LayerError(f"input has shape {shape}, expected {what}")


def output_size(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) along one axis, exactly as TensorFlow computes them."""
    if padding == "same":
        out = math.ceil(size / stride)
        return out, max((out - 1) * stride + window - size, 0) // 2
    if window > size:
        raise LayerError(f"window {window} is larger than the input size {size} with padding 'valid'")
    return (size - window) // stride + 1, 0


def _kernel_and_bias(kernel_shape: Shape, use_bias: bool) -> dict[str, Shape]:
    """A kernel whose last axis is the outputs, and a bias per output when the layer has one."""
    shapes = {"kernel": kernel_shape}
    if use_bias:
        shapes["bias"] = (kernel_shape[-1],)
    return shapes


@dataclass(frozen=True)
class Layer:
    type: ClassVar[str]
    name: str

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Dense(Layer):
    type: ClassVar[str] = "dense"
    units: int
    activation: str
    use_bias: bool

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Dense":
        return cls(name, f.integer("units"), f.choice("activation", ACTIVATIONS, "linear"),
                   f.boolean("use_bias", True))

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 1, "a vector (put a 'flatten' layer before 'dense')")
        return (self.units,)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return _kernel_and_bias((input_shape[0], self.units), self.use_bias)


@dataclass(frozen=True)
class Conv2D(Layer):
    type: ClassVar[str] = "conv2d"
    filters: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    activation: str
    use_bias: bool

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Conv2D":
        return cls(name, f.integer("filters"), f.pair("kernel_size"), f.pair("strides", (1, 1)),
                   f.choice("padding", PADDINGS, "valid"), f.choice("activation", ACTIVATIONS, "linear"),
                   f.boolean("use_bias", True))

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 3, "(height, width, channels)")
        (h, w, _), (kh, kw), (sy, sx) = input_shape, self.kernel_size, self.strides
        return output_size(h, kh, sy, self.padding)[0], output_size(w, kw, sx, self.padding)[0], self.filters

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return _kernel_and_bias((*self.kernel_size, input_shape[2], self.filters), self.use_bias)


@dataclass(frozen=True)
class MaxPool2D(Layer):
    type: ClassVar[str] = "maxpool2d"
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "MaxPool2D":
        pool_size = f.pair("pool_size")
        return cls(name, pool_size, f.pair("strides", pool_size), f.choice("padding", PADDINGS, "valid"))

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 3, "(height, width, channels)")
        (h, w, c), (ph, pw), (sy, sx) = input_shape, self.pool_size, self.strides
        return output_size(h, ph, sy, self.padding)[0], output_size(w, pw, sx, self.padding)[0], c


@dataclass(frozen=True)
class BatchNorm(Layer):
    type: ClassVar[str] = "batchnorm"
    epsilon: float

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "BatchNorm":
        return cls(name, f.number("epsilon", 0.001, 1e-12, 1.0))

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        channels = (input_shape[-1],)
        return {"gamma": channels, "beta": channels, "moving_mean": channels, "moving_variance": channels}


@dataclass(frozen=True)
class Activation(Layer):
    type: ClassVar[str] = "activation"
    activation: str

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Activation":
        return cls(name, f.choice("activation", ACTIVATIONS))


@dataclass(frozen=True)
class Flatten(Layer):
    type: ClassVar[str] = "flatten"

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Flatten":
        return cls(name)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)


@dataclass(frozen=True)
class Dropout(Layer):
    type: ClassVar[str] = "dropout"
    rate: float

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Dropout":
        return cls(name, f.number("rate", 0.0, 0.0, 1.0))


LAYER_TYPES = {cls.type: cls for cls in (Dense, Conv2D, MaxPool2D, BatchNorm, Activation, Flatten, Dropout)}


def parse_layer(raw: Any) -> Layer:
    """One entry of the spec's "layers" list -> a Layer. Raises LayerError."""
    if not isinstance(raw, dict):
        raise LayerError(f"is a JSON {type(raw).__name__}, expected an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LayerError(f"name {name!r} is not 1 to 64 of the characters A-Z a-z 0-9 _ . -")
    kind = raw.get("type")
    cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise LayerError(f"type {raw.get('type')!r} is not supported; supported: {', '.join(LAYER_TYPES)}")
    fields = _Fields(raw)
    layer = cls.parse(name, fields)
    fields.check_all_read()
    return layer


def activation_of(layer: Layer) -> str:
    """The activation a layer applies to its output ("linear" for layers without one)."""
    return getattr(layer, "activation", "linear")
