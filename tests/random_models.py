"""Random models of any layer list, written as weights files, for the engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastmnist import format
from fastmnist.layers import parse_layer

CLASSES = [str(i) for i in range(10)]


def head(units: int = 10) -> list[dict]:
    """Flatten and a dense softmax: what turns any feature map into a valid model."""
    return [{"type": "flatten", "name": "head_flatten"},
            {"type": "dense", "name": "head", "units": units, "activation": "softmax"}]


def random_arrays(layers: list[dict], input_shape: tuple[int, ...], rng: np.random.Generator) -> dict:
    """Weights for `layers`: He-like kernels, small biases, batchnorm statistics far from the identity."""
    arrays, shape = {}, input_shape
    for raw in layers:
        layer = parse_layer(raw)
        for key, param_shape in layer.param_shapes(shape).items():
            if key == "kernel" and layer.type == "depthwise_conv2d":  # each output reads kh * kw inputs
                value = rng.normal(0.0, 1.5 / np.sqrt(param_shape[0] * param_shape[1]), param_shape)
            elif key == "kernel":
                fan_in = int(np.prod(param_shape[:-1]))
                value = rng.normal(0.0, 1.5 / np.sqrt(fan_in), param_shape)
            elif key == "gamma":
                value = rng.uniform(0.5, 1.5, param_shape)
            elif key == "moving_variance":
                value = rng.uniform(0.2, 3.0, param_shape)
            else:
                value = rng.normal(0.0, 0.3, param_shape)
            arrays[f"{layer.name}/{key}"] = value.astype(np.float32)
        shape = layer.output_shape(shape)
    return arrays


def spec_for(layers: list[dict], input_shape=(28, 28, 1), input_range=(0.0, 1.0),
             version: int = format.FORMAT_VERSION) -> dict:
    return {"format": "fastmnist-weights", "version": version,
            "input": {"shape": list(input_shape), "range": list(input_range)},
            "classes": CLASSES, "layers": layers}


def write_model(path: Path, layers: list[dict], input_shape=(28, 28, 1), seed: int = 0,
                input_range=(0.0, 1.0)) -> Path:
    rng = np.random.default_rng(seed)
    format.save(path, spec_for(layers, input_shape, input_range), random_arrays(layers, input_shape, rng))
    return path


def random_images(count: int, seed: int = 1) -> np.ndarray:
    """(count, 28, 28) float32 in [0, 1], with MNIST-like sparsity (most pixels blank)."""
    rng = np.random.default_rng(seed)
    images = rng.random((count, 28, 28), dtype=np.float32)
    images[rng.random((count, 28, 28)) < 0.6] = 0.0
    return images


CNN_LAYERS = [
    {"type": "conv2d", "name": "conv1", "filters": 32, "kernel_size": [5, 5], "padding": "same", "activation": "relu"},
    {"type": "maxpool2d", "name": "pool1", "pool_size": [2, 2], "padding": "same"},
    {"type": "conv2d", "name": "conv2", "filters": 64, "kernel_size": [5, 5], "padding": "same", "activation": "relu"},
    {"type": "maxpool2d", "name": "pool2", "pool_size": [2, 2], "padding": "same"},
    {"type": "flatten", "name": "flatten"},
    {"type": "dense", "name": "fc1", "units": 1024, "activation": "relu"},
    {"type": "dropout", "name": "dropout", "rate": 0.5},
    {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"},
]

# Every layer type and padding form of format version 2, with activations that take parameters.
V2_LAYERS = [
    {"type": "zeropad2d", "name": "pad", "padding": [[1, 2], [0, 3]]},
    {"type": "depthwise_conv2d", "name": "dw", "kernel_size": [3, 3], "depth_multiplier": 2,
     "padding": [[1, 0], [2, 1]], "activation": {"name": "relu", "max_value": 6.0}},
    {"type": "batchnorm", "name": "bn_map"},
    {"type": "conv2d", "name": "pw", "filters": 5, "kernel_size": [1, 1], "activation": "gelu"},
    {"type": "avgpool2d", "name": "avg", "pool_size": [3, 3], "strides": [2, 2], "padding": [[1, 1], [2, 0]],
     "count_include_pad": True},
    {"type": "maxpool2d", "name": "max", "pool_size": [2, 2], "padding": [[0, 1], [1, 0]]},
    {"type": "activation", "name": "act", "activation": {"name": "elu", "alpha": 0.5}},
    {"type": "global_avgpool2d", "name": "gap"},
    {"type": "batchnorm", "name": "bn_vec"},
    {"type": "dense", "name": "fc", "units": 12, "activation": {"name": "hard_sigmoid", "alpha": 0.25}},
    {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"},
]

MLP_BN_ELU_LAYERS = [
    {"type": "dense", "name": "fc1", "units": 300},
    {"type": "batchnorm", "name": "bn1", "epsilon": 0.001},
    {"type": "activation", "name": "elu1", "activation": "elu"},
    {"type": "dense", "name": "fc2", "units": 100},
    {"type": "batchnorm", "name": "bn2", "epsilon": 0.001},
    {"type": "activation", "name": "elu2", "activation": "elu"},
    {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"},
]

# Format version 2 at a size where a team of two threads splits each op of a single image (over 1M MACs).
V2_HEAVY_LAYERS = [
    {"type": "conv2d", "name": "conv1", "filters": 48, "kernel_size": [5, 5], "padding": [[2, 3], [1, 2]],
     "activation": {"name": "relu", "max_value": 6.0}},
    {"type": "depthwise_conv2d", "name": "dw", "kernel_size": [3, 3], "strides": [2, 2], "depth_multiplier": 2,
     "padding": "same", "activation": "silu"},
    {"type": "batchnorm", "name": "bn"},
    {"type": "avgpool2d", "name": "avg", "pool_size": [2, 2], "strides": [1, 1], "padding": [[1, 0], [0, 1]]},
    {"type": "zeropad2d", "name": "pad", "padding": [[0, 1], [2, 0]]},
    {"type": "conv2d", "name": "conv2", "filters": 33, "kernel_size": [3, 3], "strides": [2, 2],
     "activation": {"name": "gelu", "approximate": True}},
    {"type": "global_avgpool2d", "name": "gap"},  # split by channels in a team
    {"type": "dense", "name": "fc", "units": 40, "activation": "tanh"},
    {"type": "dense", "name": "logits", "units": 10, "activation": "softmax"},
]
