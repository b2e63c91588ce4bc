"""A NumPy reference of every operation and of the whole forward pass: the oracle the C kernels are tested against.

Written for clarity, and independently of the C code (explicit padding, sliding windows and BLAS through einsum),
so that agreement between the two means something. Each op computes in its input's dtype: float64 for the
tests' oracle, float32 for the "plain NumPy" baseline of the benchmark.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import (Activation, ActivationSpec, AvgPool2D, BatchNorm, Conv2D, Dense, DepthwiseConv2D,
                     GlobalAvgPool2D, GlobalMaxPool2D, MaxPool2D, Padding, ZeroPad2D, activation_of,
                     explicit_pads, parse_activation, window_output)
from .spec import ModelSpec

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
# math.erfc keeps its relative accuracy in the tail, where 1 - erf cancels; speed does not matter here
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def activate(x: np.ndarray, activation: ActivationSpec | str | dict) -> np.ndarray:
    """Apply an activation (an ActivationSpec, or its format spelling: a name or an object), as the format's
    table defines it; softmax is over the last axis."""
    spec = activation if isinstance(activation, ActivationSpec) else parse_activation(activation)
    name, p = spec.name, dict(spec.params)
    if name == "relu":
        cap = np.inf if p["max_value"] is None else p["max_value"]
        below = p["negative_slope"] * (x - p["threshold"]) if p["negative_slope"] else np.zeros_like(x)
        return np.where(x >= cap, cap, np.where(x >= p["threshold"], x, below)).astype(x.dtype)
    if name == "elu":
        return np.where(x > 0, x, p["alpha"] * np.expm1(np.minimum(x, 0.0))).astype(x.dtype)
    if name == "selu":
        return (SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))).astype(x.dtype)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return _sigmoid(x).astype(x.dtype)
    if name == "hard_sigmoid":
        return np.clip(p["alpha"] * x + p["beta"], 0.0, 1.0).astype(x.dtype)
    if name == "silu":
        return (x * _sigmoid(x)).astype(x.dtype)
    if name == "gelu" and p["approximate"]:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
        return (x * _sigmoid(2.0 * inner)).astype(x.dtype)  # 0.5 (1 + tanh(y)) = sigmoid(2 y), without cancelling
    if name == "gelu":  # 0.5 (1 + erf(x / sqrt2)) = 0.5 erfc(-x / sqrt2), accurate for negative x too
        return (0.5 * x * _erfc(-np.asarray(x, np.float64) / math.sqrt(2.0))).astype(x.dtype)
    if name == "softplus":
        return (np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return x


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, activation="linear") -> np.ndarray:
    """x (n, in) @ kernel (in, out) + bias (out,)."""
    y = x @ kernel.astype(x.dtype)
    if bias is not None:
        y += bias.astype(x.dtype)
    return activate(y, activation)


def _pad(x: np.ndarray, window: tuple[int, int], strides: tuple[int, int], padding: Padding, value: float):
    """Pad (n, h, w, c) as `padding` says (TensorFlow's rule for "same"); returns the padded batch and the
    output size."""
    (top, bottom), (left, right) = explicit_pads(x.shape[1:3], window, strides, padding)
    h_out, w_out = window_output(x.shape[1:3], window, strides, padding)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)
    return padded, h_out, w_out


def _windows(padded: np.ndarray, window: tuple[int, int], strides: tuple[int, int], h_out: int, w_out: int):
    """(n, h_out, w_out, c, kh, kw) view of the windows of a padded batch."""
    view = sliding_window_view(padded, window, axis=(1, 2))
    return view[:, ::strides[0], ::strides[1]][:, :h_out, :w_out]


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, strides=(1, 1), padding: Padding = "valid",
           activation="linear") -> np.ndarray:
    """x (n, h, w, in_c) convolved with kernel (kh, kw, in_c, out_c), as tf.nn.conv2d (cross-correlation)."""
    window = kernel.shape[:2]
    padded, h_out, w_out = _pad(x, window, strides, padding, 0.0)
    patches = _windows(padded, window, strides, h_out, w_out)
    y = np.einsum("nyxcij,ijco->nyxo", patches, kernel.astype(x.dtype), optimize=True)
    if bias is not None:
        y += bias.astype(x.dtype)
    return activate(y, activation)


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, strides=(1, 1),
                     padding: Padding = "valid", activation="linear") -> np.ndarray:
    """x (n, h, w, c) with kernel (kh, kw, c, dm): output channel c * dm + m is input channel c convolved with
    kernel[:, :, c, m], as tf.nn.depthwise_conv2d."""
    window, (channels, multiplier) = kernel.shape[:2], kernel.shape[2:]
    padded, h_out, w_out = _pad(x, window, strides, padding, 0.0)
    patches = _windows(padded, window, strides, h_out, w_out)
    y = np.einsum("nyxcij,ijcm->nyxcm", patches, kernel.astype(x.dtype), optimize=True)
    y = y.reshape(*y.shape[:3], channels * multiplier)
    if bias is not None:
        y += bias.astype(x.dtype)
    return activate(y, activation)


def maxpool2d(x: np.ndarray, pool_size=(2, 2), strides=(2, 2), padding: Padding = "valid") -> np.ndarray:
    """Max over windows of (n, h, w, c); padded positions never win (TensorFlow's rule)."""
    padded, h_out, w_out = _pad(x, pool_size, strides, padding, -np.inf)
    return _windows(padded, pool_size, strides, h_out, w_out).max(axis=(-2, -1))


def avgpool2d(x: np.ndarray, pool_size=(2, 2), strides=(2, 2), padding: Padding = "valid",
              count_include_pad: bool = False) -> np.ndarray:
    """Mean over windows of (n, h, w, c): of the values inside the input, or of kh * kw values with the
    padding counted as zeros when count_include_pad."""
    padded, h_out, w_out = _pad(x, pool_size, strides, padding, 0.0)
    sums = _windows(padded, pool_size, strides, h_out, w_out).sum(axis=(-2, -1))
    if count_include_pad:
        return sums / (pool_size[0] * pool_size[1])
    ones, _, _ = _pad(np.ones((1, *x.shape[1:3], 1), x.dtype), pool_size, strides, padding, 0.0)
    counts = _windows(ones, pool_size, strides, h_out, w_out).sum(axis=(-2, -1))
    return sums / counts


def global_avgpool2d(x: np.ndarray) -> np.ndarray:
    """(n, h, w, c) -> (n, c): the mean over every position."""
    return x.mean(axis=(1, 2))


def global_maxpool2d(x: np.ndarray) -> np.ndarray:
    """(n, h, w, c) -> (n, c): the max over every position."""
    return x.max(axis=(1, 2))


def zeropad2d(x: np.ndarray, pads) -> np.ndarray:
    """(n, h, w, c) with ((top, bottom), (left, right)) rows and columns of zeros around each image."""
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def batchnorm(x: np.ndarray, gamma, beta, moving_mean, moving_variance, epsilon: float) -> np.ndarray:
    """Inference-time batch normalisation over the last axis."""
    scale = (gamma / np.sqrt(moving_variance.astype(np.float64) + epsilon)).astype(x.dtype)
    return (x - moving_mean.astype(x.dtype)) * scale + beta.astype(x.dtype)


def layer_outputs(model: ModelSpec, images: np.ndarray, dtype=np.float64) -> list[np.ndarray]:
    """Each layer's output, in `dtype`, for images (n, 28, 28) float in [0, 1], ink high."""
    lo, hi = model.input_range
    x = (lo + (hi - lo) * np.asarray(images, dtype=dtype)).reshape(len(images), *model.input_shape)
    outputs = []
    for planned in model.layers:
        layer, p = planned.layer, planned.params
        if isinstance(layer, Dense):
            x = dense(x, p["kernel"], p.get("bias"), layer.activation)
        elif isinstance(layer, Conv2D):
            x = conv2d(x, p["kernel"], p.get("bias"), layer.strides, layer.padding, layer.activation)
        elif isinstance(layer, DepthwiseConv2D):
            x = depthwise_conv2d(x, p["kernel"], p.get("bias"), layer.strides, layer.padding, layer.activation)
        elif isinstance(layer, MaxPool2D):
            x = maxpool2d(x, layer.pool_size, layer.strides, layer.padding)
        elif isinstance(layer, AvgPool2D):
            x = avgpool2d(x, layer.pool_size, layer.strides, layer.padding, layer.count_include_pad)
        elif isinstance(layer, GlobalAvgPool2D):
            x = global_avgpool2d(x)
        elif isinstance(layer, GlobalMaxPool2D):
            x = global_maxpool2d(x)
        elif isinstance(layer, ZeroPad2D):
            x = zeropad2d(x, layer.padding)
        elif isinstance(layer, BatchNorm):
            x = batchnorm(x, p["gamma"], p["beta"], p["moving_mean"], p["moving_variance"], layer.epsilon)
        elif isinstance(layer, Activation):
            x = activate(x, activation_of(layer))
        x = x.reshape(len(images), *planned.output_shape)  # flatten is a reshape (NHWC order); dropout is identity
        outputs.append(x)
    return outputs


def forward(model: ModelSpec, images: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Class probabilities (n, classes), in `dtype`, for images (n, 28, 28) float in [0, 1]."""
    return layer_outputs(model, images, dtype)[-1]
