"""Post-training static quantization: a float32 weights file -> an int8 one (fastmnist.int8_format).

    fastmnist.quantize("cnn", "cnn_int8.npz", calibration_images)

1. The layer list is simplified where that is exact: dropout goes, a batchnorm folds into the dense or conv2d
   before it, an activation layer after a linear dense or conv2d becomes its fused activation.
2. A forward pass in float64 over the calibration images (a few hundred MNIST training digits) measures the
   range of every tensor that gets a uint8 quantization.
3. Kernels become int8, symmetric per output channel (scale = max |w| / 127); biases int32 at the scale
   input_scale * kernel_scale; activations uint8 with a zero point, affine per tensor over the measured range
   widened to hold 0 (so a ReLU output, like the input pixels, has zero point 0 and zero stays exactly zero).
   An activation other than linear and plain relu becomes a 256-entry table from the pre-activation's
   quantization to the output's. The last layer's softmax stays float: its logits are dequantized.

Ranges are the calibration set's min and max (RANGE_METHOD): on these models percentile clipping and an MSE
search were no better at any layer (docs/INT8.md gives the measurements), and min/max never clips a value
that was seen.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import format, int8_format, reference, reference_int8, spec
from .layers import (Activation, ActivationSpec, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                     activation_of)

DEFAULT_CALIBRATION_IMAGES = 512
REFERENCE_IMAGES = 6     # few: with 16 float32 images the smallest model's file would exceed 0.3x its source
REFERENCE_ATOL = 1e-5    # the engine's float32 softmax against the reference's float64 one, same logits
RANGE_METHODS = ("minmax", "percentile", "mse")
RANGE_METHOD = "minmax"
PERCENTILE = 99.99
KERNEL_LEVELS = 127      # symmetric: -127..127, so that -w is representable whenever w is


@dataclasses.dataclass
class _Stage:
    """One layer of the simplified float graph: the layer, its raw spec entry and its float64 weights."""
    layer: Any
    raw: dict
    params: dict


def quantize(source: str | os.PathLike, path: str | os.PathLike, calibration_images: np.ndarray,
             range_method: str = RANGE_METHOD, test_set: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Quantize the float model `source` (a weights file, or a shipped model's name) to an int8 weights file
    at `path`, calibrated on `calibration_images` ((n, 28, 28) or (n, 784); uint8 0..255 or float in [0, 1];
    a few hundred MNIST training digits). Checks that the engine reproduces the file's reference outputs (the
    NumPy integer reference's) before writing it; returns the path. `test_set` (images, labels), when given,
    is classified by the int8 model and its accuracy recorded as the file's `metadata.test_accuracy`."""
    from .model import load, shipped_models, shipped_weights_dir  # they need the engine; the helpers do not

    source_path = Path(source)
    if not source_path.suffix and not source_path.exists() and str(source) in shipped_models():
        source_path = shipped_weights_dir() / f"{source}.npz"
    raw_spec, arrays = format.read(source_path)
    model = spec.parse(raw_spec, arrays, str(source_path))
    if model.precision != "float32":
        raise ValueError(f"'{source_path}' is already {model.precision}; quantize a float32 model")
    if range_method not in RANGE_METHODS:
        raise ValueError(f"range_method {range_method!r}, expected one of {', '.join(RANGE_METHODS)}")
    images = _as_float_images(calibration_images)
    stages = _simplify(model, raw_spec)
    layers, params = _quantize_stages(stages, model, images, range_method)
    out_spec = {key: value for key, value in raw_spec.items() if key not in ("layers", "reference", "precision")}
    out_spec.update(version=format.FORMAT_VERSION, precision="int8", layers=layers,
                    reference={"atol": REFERENCE_ATOL})
    metadata = dict(raw_spec.get("metadata", {}))
    float_accuracy = metadata.pop("test_accuracy", None)  # the float model's, not this one's
    out_spec["metadata"] = {**metadata, "quantization": {
        "source": source_path.name, "source_test_accuracy": float_accuracy, "calibration_images": len(images),
        "activation_ranges": range_method, "kernels": "int8 symmetric per output channel",
        "activations": "uint8 per tensor"}}
    reference_inputs = _reference_inputs(model)
    quantized = spec.parse({**out_spec, "reference": None}, dict(params), str(path))
    params["reference/inputs"] = reference_inputs
    params["reference/probabilities"] = reference_int8.forward(quantized, reference_inputs).astype(np.float32)
    path = Path(path)
    staging = path.with_name(path.name + ".partial")
    format.save(staging, out_spec, params)
    try:
        quantized_model = load(staging)  # refuses a file whose reference outputs the engine does not reproduce
        if test_set is not None:
            images, labels = test_set
            accuracy = float(np.mean(quantized_model.predict(images) == np.asarray(labels)))
            out_spec["metadata"]["test_accuracy"] = round(accuracy, 6)
            format.save(staging, out_spec, params)
    except Exception:
        staging.unlink()
        raise
    staging.replace(path)
    return path


def calibration_set(train_images: np.ndarray, count: int = DEFAULT_CALIBRATION_IMAGES) -> np.ndarray:
    """`count` training images drawn without replacement with a fixed seed: every run calibrates alike."""
    if not 1 <= count <= len(train_images):
        raise ValueError(f"calibration images: {count}, expected 1 to {len(train_images)}")
    return train_images[np.sort(np.random.default_rng(0).choice(len(train_images), count, replace=False))]


def _as_float_images(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim not in (2, 3) or a.shape[1:] not in ((28, 28), (784,)) or len(a) == 0:
        raise ValueError(f"calibration images: shape {a.shape}, expected (n, 28, 28) or (n, 784) with n >= 1")
    if a.dtype == np.uint8:
        return a.reshape(-1, 28, 28).astype(np.float64) / 255.0
    if a.dtype.kind != "f" or not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
        raise ValueError(f"calibration images: dtype {a.dtype}, expected uint8 (0..255) or float in [0, 1]")
    return a.reshape(-1, 28, 28).astype(np.float64)


def _reference_inputs(model: spec.ModelSpec) -> np.ndarray:
    if model.reference_inputs is not None:
        return model.reference_inputs[:REFERENCE_IMAGES].astype(np.float32)
    return np.random.default_rng(0).random((REFERENCE_IMAGES, 28, 28), np.float32)


def _simplify(model: spec.ModelSpec, raw_spec: dict) -> list[_Stage]:
    """The layer list with dropout removed, batchnorm folded and activation layers fused where exact."""
    lo, hi = model.input_range
    stages: list[_Stage] = []
    for planned, raw in zip(model.layers, raw_spec["layers"]):
        layer, params = planned.layer, {k: v.astype(np.float64) for k, v in planned.params.items()}
        previous = stages[-1] if stages else None
        fusable = (previous is not None and isinstance(previous.layer, (Dense, Conv2D))
                   and previous.layer.activation.name == "linear")
        if isinstance(layer, Dropout):
            continue
        if isinstance(layer, BatchNorm):
            if not fusable:
                raise ValueError(f"layer '{layer.name}': a batchnorm that does not follow a linear dense or "
                                 "conv2d cannot be quantized")
            _fold_batchnorm(previous, params, layer.epsilon)
        elif isinstance(layer, Activation) and fusable:
            previous.layer = dataclasses.replace(previous.layer, activation=layer.activation)
            previous.raw = {**previous.raw, "activation": raw["activation"]}
        elif isinstance(layer, (Dense, Conv2D, MaxPool2D, Flatten, Activation)):
            stages.append(_Stage(layer, dict(raw), params))
        else:
            raise ValueError(f"layer '{layer.name}' ({layer.type}) cannot be quantized; int8 models hold "
                             "dense, conv2d, maxpool2d, activation and flatten layers")
    if (lo, hi) != (0.0, 1.0):
        _fold_input_range(stages, lo, hi)
    return stages


def _fold_batchnorm(stage: _Stage, bn: dict, epsilon: float) -> None:
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + epsilon)
    bias = stage.params.get("bias", np.zeros(scale.shape))
    stage.params["kernel"] = stage.params["kernel"] * scale
    stage.params["bias"] = (bias - bn["moving_mean"]) * scale + bn["beta"]
    stage.layer = dataclasses.replace(stage.layer, use_bias=True)
    stage.raw = {**stage.raw, "use_bias": True}


def _fold_input_range(stages: list[_Stage], lo: float, hi: float) -> None:
    """Make input.range [0, 1]: x = lo + (hi - lo) p folds into a first dense (or unpadded conv2d) layer."""
    first = next((s for s in stages if not isinstance(s.layer, Flatten)), None)
    if first is None or not isinstance(first.layer, (Dense, Conv2D)) or (
            isinstance(first.layer, Conv2D) and first.layer.padding != "valid"):
        raise ValueError(f"input range {[lo, hi]} cannot be quantized: it folds only into a first dense or "
                         "'valid' conv2d layer")
    kernel = first.params["kernel"]
    bias = first.params.get("bias", np.zeros(kernel.shape[-1]))
    first.params["bias"] = bias + lo * kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
    first.params["kernel"] = kernel * (hi - lo)
    first.layer = dataclasses.replace(first.layer, use_bias=True)
    first.raw = {**first.raw, "use_bias": True}


def _float_forward(stages: list[_Stage], x: np.ndarray):
    """Yields (pre-activation, output) of each stage on float64 x (n, 28, 28) in [0, 1]."""
    for stage in stages:
        layer, p = stage.layer, stage.params
        if isinstance(layer, Dense):
            pre = reference.dense(x.reshape(len(x), -1), p["kernel"], p.get("bias"))
        elif isinstance(layer, Conv2D):
            pre = reference.conv2d(x if x.ndim == 4 else x.reshape(len(x), 28, 28, 1), p["kernel"], p.get("bias"),
                                   layer.strides, layer.padding)
        elif isinstance(layer, MaxPool2D):
            pre = reference.maxpool2d(x if x.ndim == 4 else x.reshape(len(x), 28, 28, 1), layer.pool_size,
                                      layer.strides, layer.padding)
        elif isinstance(layer, Flatten):
            pre = x.reshape(len(x), -1)
        else:
            pre = x
        x = reference.activate(pre, activation_of(layer))
        yield pre, x


def choose_range(values: np.ndarray, method: str = RANGE_METHOD) -> tuple[float, float]:
    """The real range [lo, hi] (lo <= 0 <= hi) a uint8 tensor covers, from calibration `values`: their min and
    max, the PERCENTILE-th percentiles, or the clipping of min/max that minimises the quantization's mean
    squared error."""
    v = np.ravel(values)
    if len(v) > 1 << 20:  # a million samples estimate any of the three well
        v = v[np.random.default_rng(0).choice(len(v), 1 << 20, replace=False)]
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    if method == "percentile":
        lo = min(float(np.percentile(v, 100 - PERCENTILE)), 0.0)
        hi = max(float(np.percentile(v, PERCENTILE)), 0.0)
    elif method == "mse":
        def error(fraction: float) -> float:
            a, b = lo * fraction, hi * fraction
            scale = (b - a) / 255 or 1.0
            zero = np.round(-a / scale)
            q = np.clip(np.round(v / scale) + zero, 0, 255)
            return float(np.mean((scale * (q - zero) - v) ** 2))
        best = min(np.linspace(0.3, 1.0, 71), key=error)
        lo, hi = lo * best, hi * best
    if hi - lo <= 0:
        hi = lo + 1.0  # a constant-zero tensor: any scale represents it
    return lo, hi


def activation_quantization(lo: float, hi: float) -> int8_format.Quantization:
    """uint8 over [lo, hi] (lo <= 0 <= hi), with zero exactly representable: the zero point is -lo / scale
    rounded, so a range starting at 0 has zero point 0."""
    scale = (hi - lo) / 255.0
    return int8_format.Quantization(float(np.float32(scale)), int(np.clip(round(-lo / scale), 0, 255)))


def _quantize_stages(stages: list[_Stage], model: spec.ModelSpec, images: np.ndarray, method: str):
    """(the int8 file's layer list, its arrays)."""
    layers, arrays = [], {}
    q_in = int8_format.input_quantization((0.0, 1.0))
    kernels = [i for i, s in enumerate(stages) if isinstance(s.layer, (Dense, Conv2D, Activation))]
    last = len(stages) - 1
    if not kernels or kernels[-1] != last or not isinstance(stages[last].layer, Dense):
        raise ValueError("the model must end in a dense layer with softmax to be quantized")
    for i, (stage, (pre, out)) in enumerate(zip(stages, _float_forward(stages, images))):
        layer, p, name = stage.layer, stage.params, stage.layer.name
        layers.append(stage.raw)
        if isinstance(layer, (MaxPool2D, Flatten)):
            continue
        if isinstance(layer, (Dense, Conv2D)):
            kernel = p["kernel"]
            largest = np.abs(kernel.reshape(-1, kernel.shape[-1])).max(axis=0)
            # an all-zero channel takes the smallest other scale: any scale holds its zeros, and this one keeps
            # its requantization multiplier in range
            smallest = largest[largest > 0].min() if (largest > 0).any() else 1.0
            kernel_scale = (np.where(largest > 0, largest, smallest) / KERNEL_LEVELS).astype(np.float32)
            arrays[f"{name}/kernel"] = np.clip(np.round(kernel / kernel_scale), -KERNEL_LEVELS,
                                               KERNEL_LEVELS).astype(np.int8)
            arrays[f"{name}/kernel_scale"] = kernel_scale
            if layer.use_bias:
                bias_scale = q_in.scale * kernel_scale.astype(np.float64)
                arrays[f"{name}/bias"] = np.clip(np.round(p["bias"] / bias_scale), -2 ** 30, 2 ** 30).astype(np.int32)
            if i == last:
                break
            # the requantization multiplier must stay below 1: an output finer than the accumulator's
            # resolution would only hold rounding noise
            floor_scale = q_in.scale * float(kernel_scale.max()) * (1 + 2 ** -20)
        else:
            floor_scale = 0.0
        table = int8_format.uses_table(layer, False)
        if isinstance(layer, Activation):
            q_pre = q_in  # a table on the tensor as the previous layer quantized it
        else:
            q_pre = activation_quantization(*choose_range(pre, method)) if table else None
        if q_pre is not None and q_pre.scale < floor_scale:
            q_pre = int8_format.Quantization(float(np.float32(floor_scale)), q_pre.zero_point)
        q_out = activation_quantization(*choose_range(out, method))
        if not table and q_out.scale < floor_scale:
            q_out = int8_format.Quantization(float(np.float32(floor_scale)), q_out.zero_point)
        if table:
            grid = np.float32(q_pre.scale) * (np.arange(256, dtype=np.float64) - q_pre.zero_point)
            real = reference.activate(grid.astype(np.float64), layer.activation)
            if not isinstance(layer, Activation):
                arrays[f"{name}/table_input_scale"] = np.float32([q_pre.scale])
                arrays[f"{name}/table_input_zero_point"] = np.int32([q_pre.zero_point])
            arrays[f"{name}/table"] = np.clip(np.round(real / np.float32(q_out.scale)) + q_out.zero_point,
                                              0, 255).astype(np.int32)
        arrays[f"{name}/output_scale"] = np.float32([q_out.scale])
        arrays[f"{name}/output_zero_point"] = np.int32([q_out.zero_point])
        q_in = q_out
    return layers, {k: np.asarray(v) for k, v in arrays.items()}
