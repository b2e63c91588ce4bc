"""The layer types of the weights format: their fields, output shapes and the arrays each one needs.

Each class parses one entry of the spec's "layers" list strictly (unknown or out-of-range fields are refused),
so that the rest of the engine can trust it. Shapes exclude the batch axis; images are (h, w, c), NHWC.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Union

PADDINGS = ("same", "valid")
MAX_DIM = 65536
MAX_PADDED_VALUES = 16 << 20  # a padded input per image, like any activation (spec.MAX_ACTIVATION_VALUES)
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

Shape = tuple[int, ...]
Pads = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))
Padding = Union[str, Pads]                     # "same", "valid" or explicit pads


class LayerError(ValueError):
    """A layer entry is malformed; the caller adds which file it came from."""


# name -> {parameter: default}; the order of the names is the order of the format's table (docs/FORMAT.md)
ACTIVATION_PARAMS: dict[str, dict[str, Any]] = {
    "linear": {},
    "relu": {"max_value": None, "negative_slope": 0.0, "threshold": 0.0},
    "elu": {"alpha": 1.0},
    "selu": {},
    "tanh": {},
    "sigmoid": {},
    "hard_sigmoid": {"alpha": 0.2, "beta": 0.5},
    "silu": {},
    "gelu": {"approximate": False},
    "softplus": {},
    "softmax": {},
}
ACTIVATIONS = tuple(ACTIVATION_PARAMS)  # the supported activation names, for the converters
MAX_ACTIVATION_PARAM = 1e6


@dataclass(frozen=True)
class ActivationSpec:
    """An activation and its parameters, every one present (defaults filled in), as (key, value) pairs in the
    order of ACTIVATION_PARAMS. `ActivationSpec("relu")` is relu with its defaults."""
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.name not in ACTIVATION_PARAMS:
            raise LayerError(f"activation {self.name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        given = dict(self.params)
        unknown = sorted(set(given) - set(ACTIVATION_PARAMS[self.name]))
        if unknown:
            raise LayerError(f"activation {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(ACTIVATION_PARAMS[self.name]) or 'none'}")
        full = tuple((key, given.get(key, default)) for key, default in ACTIVATION_PARAMS[self.name].items())
        object.__setattr__(self, "params", full)

    def __getitem__(self, key: str) -> Any:
        return dict(self.params)[key]

    def to_json(self) -> str | dict[str, Any]:
        """The format's spelling: the bare name when every parameter has its default, else an object with the
        parameters that differ."""
        defaults = ACTIVATION_PARAMS[self.name]
        changed = {key: value for key, value in self.params if value != defaults[key]}
        return {"name": self.name, **changed} if changed else self.name


def _activation_number(name: str, key: str, value: Any, low: float, allow_null: bool = False) -> float | None:
    if value is None and allow_null:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= MAX_ACTIVATION_PARAM):
        null = " or null" if allow_null else ""
        raise LayerError(f"activation {name!r} parameter '{key}' is {value!r}, expected a number from {low} "
                         f"to {MAX_ACTIVATION_PARAM}{null}")
    return float(value)


def parse_activation(raw: Any) -> ActivationSpec:
    """The format's "activation" value (a name, or an object with "name" and parameters) -> ActivationSpec.
    Raises LayerError naming what is wrong and what is supported."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise LayerError(f"activation {raw!r:.80} is neither a name nor an object with a 'name'; "
                         f"supported names: {', '.join(ACTIVATIONS)}")
    name = raw["name"]
    given = {key: value for key, value in raw.items() if key != "name"}
    spec = ActivationSpec(name, tuple(given.items()))  # refuses unknown names and parameters
    params = dict(spec.params)
    if name == "relu":
        params["threshold"] = _activation_number(name, "threshold", params["threshold"], 0.0)
        params["negative_slope"] = _activation_number(name, "negative_slope", params["negative_slope"], 0.0)
        # below the threshold the slope takes over, so a cap under it would make the pieces overlap
        params["max_value"] = _activation_number(name, "max_value", params["max_value"], params["threshold"],
                                                 allow_null=True)
    elif name in ("elu", "hard_sigmoid"):
        for key in ACTIVATION_PARAMS[name]:
            params[key] = _activation_number(name, key, params[key], -MAX_ACTIVATION_PARAM)
    elif name == "gelu" and not isinstance(params["approximate"], bool):
        raise LayerError(f"activation 'gelu' parameter 'approximate' is {params['approximate']!r}, "
                         "expected true or false")
    return ActivationSpec(name, tuple(params.items()))


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

    def activation(self, key: str = "activation", default: str | None = "linear") -> ActivationSpec:
        try:
            return parse_activation(self._get(key, default))
        except LayerError as e:
            raise LayerError(f"'{key}': {e}") from None

    def padding(self, key: str = "padding", default: str | None = "valid", named: bool = True) -> Padding:
        """"same", "valid" (when `named`) or explicit [[top, bottom], [left, right]] of non-negative integers."""
        value = self._get(key, default)
        if named and value in PADDINGS:
            return value
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value)
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DIM
                        for p in value for v in p)):
            return (int(value[0][0]), int(value[0][1])), (int(value[1][0]), int(value[1][1]))
        expected = f"{' or '.join(map(repr, PADDINGS))} or " if named else ""
        raise LayerError(f"'{key}' is {value!r}, expected {expected}[[top, bottom], [left, right]] "
                         f"with integers from 0 to {MAX_DIM}")

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
    """(output size, padding before) along one axis for "same" or "valid", exactly as TensorFlow computes them."""
    if padding == "same":
        out = math.ceil(size / stride)
        return out, max((out - 1) * stride + window - size, 0) // 2
    if window > size:
        raise LayerError(f"window {window} is larger than the input size {size} with padding 'valid'")
    return (size - window) // stride + 1, 0


def explicit_pads(size_hw: tuple[int, int], window: tuple[int, int], strides: tuple[int, int],
                  padding: Padding) -> Pads:
    """The ((top, bottom), (left, right)) that `padding` amounts to on an input of size_hw: TensorFlow's split
    for "same" (the odd one at the bottom/right), zeros for "valid", the pads themselves when explicit."""
    if not isinstance(padding, str):
        return padding
    pads = []
    for size, k, stride in zip(size_hw, window, strides):
        out, before = output_size(size, k, stride, padding)
        total = max((out - 1) * stride + k - size, 0) if padding == "same" else 0
        pads.append((before, total - before))
    return pads[0], pads[1]


def window_output(size_hw: tuple[int, int], window: tuple[int, int], strides: tuple[int, int],
                  padding: Padding) -> tuple[int, int]:
    """(out_h, out_w) of a sliding window: floor((in + before + after - k) / stride) + 1 along each axis."""
    if isinstance(padding, str):
        return tuple(output_size(size, k, s, padding)[0] for size, k, s in zip(size_hw, window, strides))
    sizes = []
    for axis, size, k, stride, (before, after) in zip(("height", "width"), size_hw, window, strides, padding):
        if size + before + after < k:
            raise LayerError(f"window {k} is larger than the padded input {axis} {size} + {before} + {after}")
        sizes.append((size + before + after - k) // stride + 1)
    return sizes[0], sizes[1]


def _check_padded_size(input_shape: Shape, padding: Padding) -> None:
    if isinstance(padding, str):  # "same" pads less than a window, "valid" not at all
        return
    (top, bottom), (left, right) = padding
    values = (input_shape[0] + top + bottom) * (input_shape[1] + left + right) * input_shape[2]
    if values > MAX_PADDED_VALUES:
        raise LayerError(f"the padded input ({input_shape[0] + top + bottom}, {input_shape[1] + left + right}, "
                         f"{input_shape[2]}) exceeds {MAX_PADDED_VALUES} values per image")


def _check_pool_pads(padding: Padding, pool_size: tuple[int, int]) -> None:
    """A pooling window must hold at least one input value: each pad smaller than the window (as ONNX asks)."""
    if isinstance(padding, str):
        return
    for (before, after), k, axis in zip(padding, pool_size, ("top/bottom", "left/right")):
        if before >= k or after >= k:
            raise LayerError(f"{axis} pads {[before, after]} must each be smaller than the pool size {k}, "
                             "so that no window lies in the padding only")


def _sliding_output(input_shape: Shape, window: tuple[int, int], strides: tuple[int, int], padding: Padding,
                    channels: int) -> Shape:
    _expect_rank(input_shape, 3, "(height, width, channels)")
    _check_padded_size(input_shape, padding)
    return (*window_output(input_shape[:2], window, strides, padding), channels)


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
    activation: ActivationSpec
    use_bias: bool

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Dense":
        return cls(name, f.integer("units"), f.activation(), f.boolean("use_bias", True))

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
    padding: Padding
    activation: ActivationSpec
    use_bias: bool

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Conv2D":
        return cls(name, f.integer("filters"), f.pair("kernel_size"), f.pair("strides", (1, 1)), f.padding(),
                   f.activation(), f.boolean("use_bias", True))

    def output_shape(self, input_shape: Shape) -> Shape:
        return _sliding_output(input_shape, self.kernel_size, self.strides, self.padding, self.filters)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return _kernel_and_bias((*self.kernel_size, input_shape[2], self.filters), self.use_bias)


@dataclass(frozen=True)
class DepthwiseConv2D(Layer):
    """Each input channel convolved with its own depth_multiplier filters: output channel c * dm + m reads
    input channel c through kernel[:, :, c, m]."""
    type: ClassVar[str] = "depthwise_conv2d"
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: Padding
    depth_multiplier: int
    activation: ActivationSpec
    use_bias: bool

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "DepthwiseConv2D":
        return cls(name, f.pair("kernel_size"), f.pair("strides", (1, 1)), f.padding(),
                   f.integer("depth_multiplier", 1), f.activation(), f.boolean("use_bias", True))

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 3, "(height, width, channels)")
        return _sliding_output(input_shape, self.kernel_size, self.strides, self.padding,
                               input_shape[2] * self.depth_multiplier)

    def param_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        shapes = {"kernel": (*self.kernel_size, input_shape[2], self.depth_multiplier)}
        if self.use_bias:
            shapes["bias"] = (input_shape[2] * self.depth_multiplier,)
        return shapes


@dataclass(frozen=True)
class _Pool2D(Layer):
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: Padding

    @classmethod
    def _parse_window(cls, f: _Fields) -> tuple:
        pool_size = f.pair("pool_size")
        padding = f.padding()
        _check_pool_pads(padding, pool_size)
        return pool_size, f.pair("strides", pool_size), padding

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 3, "(height, width, channels)")
        return _sliding_output(input_shape, self.pool_size, self.strides, self.padding, input_shape[2])


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """The max of each window's values inside the input (padding never wins)."""
    type: ClassVar[str] = "maxpool2d"

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "MaxPool2D":
        return cls(name, *cls._parse_window(f))


@dataclass(frozen=True)
class AvgPool2D(_Pool2D):
    """The mean of each window: over its values inside the input (TensorFlow), or with the padding counted as
    zeros, dividing by kh * kw (count_include_pad, as ONNX's AveragePool with count_include_pad=1)."""
    type: ClassVar[str] = "avgpool2d"
    count_include_pad: bool = False

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "AvgPool2D":
        return cls(name, *cls._parse_window(f), f.boolean("count_include_pad", False))


@dataclass(frozen=True)
class _GlobalPool2D(Layer):
    @classmethod
    def parse(cls, name: str, f: _Fields) -> "_GlobalPool2D":
        return cls(name)

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 3, "(height, width, channels)")
        return (input_shape[2],)


@dataclass(frozen=True)
class GlobalAvgPool2D(_GlobalPool2D):
    type: ClassVar[str] = "global_avgpool2d"


@dataclass(frozen=True)
class GlobalMaxPool2D(_GlobalPool2D):
    type: ClassVar[str] = "global_maxpool2d"


@dataclass(frozen=True)
class ZeroPad2D(Layer):
    type: ClassVar[str] = "zeropad2d"
    padding: Pads

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "ZeroPad2D":
        return cls(name, f.padding(default=None, named=False))

    def output_shape(self, input_shape: Shape) -> Shape:
        _expect_rank(input_shape, 3, "(height, width, channels)")
        (top, bottom), (left, right) = self.padding
        return input_shape[0] + top + bottom, input_shape[1] + left + right, input_shape[2]


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
    activation: ActivationSpec

    @classmethod
    def parse(cls, name: str, f: _Fields) -> "Activation":
        return cls(name, f.activation(default=None))


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


LAYER_TYPES = {cls.type: cls for cls in (Dense, Conv2D, DepthwiseConv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D,
                                         GlobalMaxPool2D, ZeroPad2D, BatchNorm, Activation, Flatten, Dropout)}


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


_LINEAR = ActivationSpec("linear")


def activation_of(layer: Layer) -> ActivationSpec:
    """The activation a layer applies to its output (linear for layers without one)."""
    return getattr(layer, "activation", _LINEAR)
