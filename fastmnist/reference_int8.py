"""A NumPy reference of the int8 graph (fastmnist.int8_format): the oracle the integer kernels are tested
against, and what the quantizer stores as a file's reference outputs.

Written independently of the C code: convolutions pad the input with the zero point and take sliding windows,
the requantization follows gemmlowp's two roundings literally (with comparisons, where the C code is
branch-free), and the logits' softmax is in float64.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .int8_format import (Quantization, dequantize_scales, input_quantization, output_quantization,
                          requantization)
from .layers import Activation, Conv2D, Dense, Dropout, MaxPool2D, explicit_pads
from .spec import ModelSpec


def quantize_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 784): uint8 images as they are; float pixels p in [0, 1] as rint(255 p), in float32."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.reshape(-1, 784)
    return np.rint(images.astype(np.float32) * np.float32(255.0)).astype(np.uint8).reshape(-1, 784)


def rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """round(a * b / 2^31) as gemmlowp computes it: a nudge of 2^30 (1 - 2^30 below zero), then a division that
    rounds toward zero, so ties go up; for int64 arrays holding int32 values (b never -2^31)."""
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    return np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """round(x / 2^exponent), ties away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def requantize(acc: np.ndarray, rq) -> np.ndarray:
    """int64 accumulators (..., out) -> uint8 outputs, by int8_format.Requantization `rq`."""
    multiplier, shift = rq.multiplier.astype(np.int64), rq.shift.astype(np.int64)
    y = rq.zero_point + rounding_divide_by_pot(rounding_doubling_high_mul(acc, multiplier), shift)
    y = np.clip(y, rq.lo, 255).astype(np.uint8)
    return rq.table[y] if rq.table is not None else y


def _pads(x: np.ndarray, window, strides, padding):
    (top, bottom), (left, right) = explicit_pads(x.shape[1:3], window, strides, padding)
    return ((0, 0), (top, bottom), (left, right), (0, 0))


def _windows(padded: np.ndarray, window, strides, out_shape) -> np.ndarray:
    """(n, out_h, out_w, c, kh, kw) view of the windows of a padded batch."""
    view = sliding_window_view(padded, tuple(window), axis=(1, 2))
    return view[:, ::strides[0], ::strides[1]][:, :out_shape[0], :out_shape[1]]


def _accumulate(x: np.ndarray, planned, in_q: Quantization) -> np.ndarray:
    """int64 accumulators of a dense or conv2d layer: bias + sum (x - zero_point) * kernel."""
    layer, p = planned.layer, planned.params
    kernel = p["kernel"].astype(np.float64)  # float64 sums of these products are exact (below 2^53)
    if isinstance(layer, Dense):
        acc = (x.astype(np.float64) - in_q.zero_point) @ kernel
    else:
        padded = np.pad(x.astype(np.int64), _pads(x, layer.kernel_size, layer.strides, layer.padding),
                        constant_values=in_q.zero_point)
        patches = _windows(padded, layer.kernel_size, layer.strides, planned.output_shape)
        acc = np.einsum("nyxcij,ijco->nyxo", patches.astype(np.float64) - in_q.zero_point, kernel, optimize=True)
    acc = acc.astype(np.int64)
    return acc + p["bias"].astype(np.int64) if "bias" in p else acc


def layer_outputs(model: ModelSpec, images: np.ndarray) -> list[np.ndarray]:
    """Each layer's output for `images` ((n, 28, 28) or (n, 784), uint8 or float in [0, 1]): uint8 arrays
    (n, *layer shape), and for the last layer the float64 probabilities (n, classes)."""
    if model.precision != "int8":
        raise ValueError(f"reference_int8 runs int8 models; this one's precision is {model.precision!r}")
    q = input_quantization(model.input_range)
    x = quantize_pixels(images).reshape(-1, *model.input_shape)
    last = max(i for i, p in enumerate(model.layers) if not isinstance(p.layer, Dropout))
    outputs = []
    for i, planned in enumerate(model.layers):
        layer, p = planned.layer, planned.params
        if isinstance(layer, (Dense, Conv2D)) and i == last:
            logits = _accumulate(x, planned, q).astype(np.float32) * dequantize_scales(p, q)
            e = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
            x = e / e.sum(axis=-1, keepdims=True)
        elif isinstance(layer, (Dense, Conv2D)):
            x = requantize(_accumulate(x, planned, q), requantization(layer, p, q))
        elif isinstance(layer, MaxPool2D):
            padded = np.pad(x.astype(np.int16), _pads(x, layer.pool_size, layer.strides, layer.padding),
                            constant_values=-1)  # below every byte: the padding never wins
            x = _windows(padded, layer.pool_size, layer.strides, planned.output_shape).max(axis=(-2, -1))
            x = x.astype(np.uint8)
        elif isinstance(layer, Activation):
            x = p["table"].astype(np.uint8)[x]
        x = x.reshape(len(x), *planned.output_shape)
        outputs.append(x)
        q = output_quantization(layer, p, q)
    return outputs


def dequantized_outputs(model: ModelSpec, images: np.ndarray) -> list[np.ndarray]:
    """layer_outputs as real values, float32: scale * (q - zero_point); the last layer's probabilities."""
    q = input_quantization(model.input_range)
    result = []
    for planned, output in zip(model.layers, layer_outputs(model, images)):
        q = output_quantization(planned.layer, planned.params, q)
        is_int = output.dtype == np.uint8
        result.append((np.float32(q.scale) * (output.astype(np.float32) - q.zero_point)) if is_int
                      else output.astype(np.float32))
    return result


def forward(model: ModelSpec, images: np.ndarray) -> np.ndarray:
    """(n, classes) float64 probabilities."""
    return layer_outputs(model, images)[-1]
