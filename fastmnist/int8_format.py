"""The int8 section of the weights format (docs/FORMAT.md, "Int8 models"): the arrays a quantized layer holds,
their checks, and the fixed-point multipliers the integer kernels requantize with.

A quantized model keeps the layer list of a float model; `"precision": "int8"` in the spec says that its
layers hold int8 kernels, int32 biases and per-tensor uint8 activation parameters instead of float32 weights.
Every real value v of a tensor is scale * (q - zero_point) for its uint8 q; a kernel's is
kernel_scale[o] * k (symmetric, per output channel); a bias's is input_scale * kernel_scale[o] * b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layers import Activation, ActivationSpec, Conv2D, Dense, Dropout, Flatten, Layer, LayerError, MaxPool2D, Shape

PRECISIONS = ("float32", "int8")
TABLE_SIZE = 256
MIN_REAL_MULTIPLIER = 2.0 ** -32  # below it the right shift would exceed 31
MAX_ACCUMULATOR = 2 ** 31 - 1
_SUPPORTED = "dense, conv2d, maxpool2d, activation, flatten, dropout"


@dataclass(frozen=True)
class Quantization:
    """A uint8 tensor's affine map: real = scale * (q - zero_point)."""
    scale: float
    zero_point: int


def input_quantization(input_range: tuple[float, float]) -> Quantization:
    """The model input: the pixel byte itself, p = q / 255, mapped by input.range [0, hi]."""
    return Quantization(input_range[1] / 255.0, 0)


def is_plain_relu(activation: ActivationSpec) -> bool:
    """relu with no cap, slope or threshold: a clamp at the zero point, with no table."""
    return activation == ActivationSpec("relu")


def uses_table(layer: Layer, is_output: bool) -> bool:
    """Whether the layer's activation is a 256-entry lookup table (every activation but linear and plain relu)."""
    if isinstance(layer, Activation):
        return True
    if isinstance(layer, (Dense, Conv2D)) and not is_output:
        return not (layer.activation.name == "linear" or is_plain_relu(layer.activation))
    return False


def param_specs(layer: Layer, input_shape: Shape, is_output: bool) -> dict[str, tuple[Shape, np.dtype]]:
    """name -> (shape, dtype) of every array an int8 layer holds. Raises LayerError for a layer type or
    activation that an int8 model cannot hold."""
    scalar_f32, scalar_i32 = ((1,), np.dtype(np.float32)), ((1,), np.dtype(np.int32))  # one per tensor
    if isinstance(layer, (Dense, Conv2D)):
        kernel_shape = layer.param_shapes(input_shape)["kernel"]
        out = kernel_shape[-1]
        specs = {"kernel": (kernel_shape, np.dtype(np.int8)), "kernel_scale": ((out,), np.dtype(np.float32))}
        if layer.use_bias:
            specs["bias"] = ((out,), np.dtype(np.int32))
        if is_output:
            if not isinstance(layer, Dense) or layer.activation.name != "softmax":
                raise LayerError("the last layer of an int8 model must be a dense layer with softmax (its "
                                 "logits are dequantized to float)")
            return specs
        if layer.activation.name == "softmax":
            raise LayerError("softmax is only allowed in the last layer of an int8 model")
    elif isinstance(layer, Activation):
        if is_output or layer.activation.name == "softmax":
            raise LayerError("an int8 model ends in a dense layer with softmax, not an activation layer")
        specs = {}
    elif isinstance(layer, (MaxPool2D, Flatten, Dropout)):
        return {}
    else:
        raise LayerError(f"type {layer.type!r} cannot be in an int8 model; supported: {_SUPPORTED}")
    if uses_table(layer, is_output):  # an activation layer's table reads its input's quantization
        if not isinstance(layer, Activation):
            specs.update(table_input_scale=scalar_f32, table_input_zero_point=scalar_i32)
        specs["table"] = ((TABLE_SIZE,), np.dtype(np.int32))
    specs.update(output_scale=scalar_f32, output_zero_point=scalar_i32)
    return specs


def take_params(layer: Layer, input_shape: Shape, is_output: bool, unused: dict[str, np.ndarray]) -> dict:
    """Pop the layer's arrays from `unused`, checking names, dtypes, shapes and finiteness. Raises LayerError."""
    params = {}
    for key, (shape, dtype) in param_specs(layer, input_shape, is_output).items():
        name = f"{layer.name}/{key}"
        if name not in unused:
            raise LayerError(f"array '{name}' is missing (expected {dtype} {shape})")
        array = unused.pop(name)
        if array.dtype != dtype:
            raise LayerError(f"array '{name}' has dtype {array.dtype}, expected {dtype}")
        if array.shape != shape:
            raise LayerError(f"array '{name}' has shape {array.shape}, expected {shape}")
        if dtype == np.float32 and not np.isfinite(array).all():
            raise LayerError(f"array '{name}' holds NaN or infinite values")
        params[key] = array
    return params


def quantized_multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) with real ~= multiplier * 2^-31 * 2^-shift, multiplier in [2^30, 2^31), shift in
    [0, 31]: the mantissa of `real` rounded to 31 bits. Raises LayerError for a real multiplier outside
    [2^-32, 1), which the kernels' right shift cannot express."""
    if not MIN_REAL_MULTIPLIER <= real < 1.0:
        raise LayerError(f"requantization multiplier {real:.6g} is outside [2^-32, 1): the output scale must "
                         "exceed input_scale * kernel_scale, and not by more than 2^32 times")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = math.floor(mantissa * 2 ** 31 + 0.5)
    if multiplier == 2 ** 31:
        multiplier, exponent = 2 ** 30, exponent + 1
    if exponent > 0 or -exponent > 31:
        raise LayerError(f"requantization multiplier {real:.6g} rounds to 2^{exponent}, outside [2^-32, 1)")
    return multiplier, -exponent


@dataclass(frozen=True)
class Requantization:
    """What a kernel needs to turn a layer's int32 accumulators into its output (NumPy arrays per channel)."""
    multiplier: np.ndarray   # int32 (out,)
    shift: np.ndarray        # int32 (out,)
    zero_point: int
    lo: int                  # the clamp: lo is the zero point for a plain relu, else 0
    table: np.ndarray | None  # uint8 (256,) applied after the clamp


def requantization(layer: Layer, params: dict, in_q: Quantization) -> Requantization:
    """The requantization of a dense or conv2d layer that is not the last. Raises LayerError."""
    table = uses_table(layer, False)
    out_scale = params["table_input_scale" if table else "output_scale"].item()
    zero_point = params["table_input_zero_point" if table else "output_zero_point"].item()
    pairs = [quantized_multiplier(in_q.scale * float(s) / out_scale) for s in params["kernel_scale"]]
    lo = zero_point if not table and layer.activation.name == "relu" else 0
    return Requantization(np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32),
                          zero_point, lo, params["table"].astype(np.uint8) if table else None)


def dequantize_scales(params: dict, in_q: Quantization) -> np.ndarray:
    """float32 (out,): the last layer's logit = float32(acc) * this, per output channel."""
    return (in_q.scale * params["kernel_scale"].astype(np.float64)).astype(np.float32)


def output_quantization(layer: Layer, params: dict, in_q: Quantization) -> Quantization:
    """The quantization of a layer's output, given its input's."""
    if "output_scale" in params:
        return Quantization(params["output_scale"].item(), params["output_zero_point"].item())
    return in_q  # maxpool2d, flatten and dropout keep the values, so their map


def check(planned: list, input_range: tuple[float, float]) -> None:
    """The checks that need the whole chain: value ranges, the multipliers each layer's scales give, and that no
    accumulator can overflow int32. `planned`: spec.PlannedLayer with take_params' arrays. Raises LayerError
    naming the layer."""
    lo, hi = input_range
    if lo != 0.0 or not hi > 0.0:
        raise LayerError(f"input range {[lo, hi]}: an int8 model's input range is [0, hi] with hi > 0, so that "
                         "a blank pixel is the zero point 0")
    q = input_quantization(input_range)
    last = max(i for i, p in enumerate(planned) if not isinstance(p.layer, Dropout))
    for i, p in enumerate(planned):
        try:
            _check_layer(p, q, i == last)
        except LayerError as e:
            raise LayerError(f"layer '{p.layer.name}': {e}") from None
        q = output_quantization(p.layer, p.params, q)


def _check_layer(p, in_q: Quantization, is_output: bool) -> None:
    params = p.params
    for key in ("kernel_scale", "output_scale", "table_input_scale"):
        if key in params and not (params[key] > 0).all():
            raise LayerError(f"'{key}' must be positive")
    for key in ("output_zero_point", "table_input_zero_point"):
        if key in params and not 0 <= params[key].item() <= 255:
            raise LayerError(f"'{key}' is {params[key].item()}, expected 0 to 255")
    if "table" in params and not ((params["table"] >= 0) & (params["table"] <= 255)).all():
        raise LayerError("'table' entries must be 0 to 255")
    if "kernel" not in params:
        return
    taps = math.prod(params["kernel"].shape[:-1])
    largest_bias = int(np.abs(params["bias"].astype(np.int64)).max()) if "bias" in params else 0
    if largest_bias + taps * 255 * 128 > MAX_ACCUMULATOR:
        raise LayerError(f"|bias| up to {largest_bias} with {taps} taps could overflow the int32 accumulator")
    if is_output:
        scales = dequantize_scales(params, in_q)
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            raise LayerError("input_scale * kernel_scale is not a positive finite float32")
    else:
        requantization(p.layer, params, in_q)
