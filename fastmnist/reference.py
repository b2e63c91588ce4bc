"""A NumPy reference of every operation and of the whole forward pass: the oracle the C kernels are tested against.

Written for clarity, and independently of the C code (explicit padding, sliding windows and BLAS through einsum),
so that agreement between the two means something. Each op computes in its input's dtype: float64 for the
tests' oracle, float32 for the "plain NumPy" baseline of the benchmark.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import Activation, BatchNorm, Conv2D, Dense, MaxPool2D, activation_of, output_size
from .spec import ModelSpec


def activate(x: np.ndarray, activation: str) -> np.ndarray:
    """Apply `activation` ("linear", "relu", "elu", "softmax" over the last axis)."""
    if activation == "relu":
        return np.maximum(x, 0.0)
    if activation == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
    if activation == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return x


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, activation: str = "linear") -> np.ndarray:
    """x (n, in) @ kernel (in, out) + bias (out,)."""
    y = x @ kernel.astype(x.dtype)
    if bias is not None:
        y += bias.astype(x.dtype)
    return activate(y, activation)


def _pad(x: np.ndarray, window: tuple[int, int], strides: tuple[int, int], padding: str, value: float):
    """Pad (n, h, w, c) the way TensorFlow does; returns the padded batch and the output size."""
    (h_out, top), (w_out, left) = (output_size(x.shape[i + 1], window[i], strides[i], padding) for i in (0, 1))
    bottom = max((h_out - 1) * strides[0] + window[0] - x.shape[1] - top, 0)
    right = max((w_out - 1) * strides[1] + window[1] - x.shape[2] - left, 0)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)
    return padded, h_out, w_out


def _windows(padded: np.ndarray, window: tuple[int, int], strides: tuple[int, int], h_out: int, w_out: int):
    """(n, h_out, w_out, c, kh, kw) view of the windows of a padded batch."""
    view = sliding_window_view(padded, window, axis=(1, 2))
    return view[:, ::strides[0], ::strides[1]][:, :h_out, :w_out]


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, strides=(1, 1), padding="valid",
           activation: str = "linear") -> np.ndarray:
    """x (n, h, w, in_c) convolved with kernel (kh, kw, in_c, out_c), as tf.nn.conv2d (cross-correlation)."""
    window = kernel.shape[:2]
    padded, h_out, w_out = _pad(x, window, strides, padding, 0.0)
    patches = _windows(padded, window, strides, h_out, w_out)
    y = np.einsum("nyxcij,ijco->nyxo", patches, kernel.astype(x.dtype), optimize=True)
    if bias is not None:
        y += bias.astype(x.dtype)
    return activate(y, activation)


def maxpool2d(x: np.ndarray, pool_size=(2, 2), strides=(2, 2), padding="valid") -> np.ndarray:
    """Max over windows of (n, h, w, c); padded positions never win (TensorFlow's rule)."""
    padded, h_out, w_out = _pad(x, pool_size, strides, padding, -np.inf)
    return _windows(padded, pool_size, strides, h_out, w_out).max(axis=(-2, -1))


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
        elif isinstance(layer, MaxPool2D):
            x = maxpool2d(x, layer.pool_size, layer.strides, layer.padding)
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
