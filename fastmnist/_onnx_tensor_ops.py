"""The ONNX importer's handlers of nodes on run-time tensors: layout changes (free: they only move the
tensor's index), element-wise operations (kept as a pending expression), activations, and the layers the
format has (dense, conv2d, depthwise_conv2d, pooling, zero padding). Each takes the converter, the node and
its inputs and returns the node's outputs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import _fold
from ._onnx_node import Node, axes_of, reshape_target, window_settings
from ._onnx_read import MAX_RANK
from ._onnx_values import Expr, Tensor, close, is_uniform

if TYPE_CHECKING:
    from ._onnx_convert import Converter


def _pass_through(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    if node.proto.op_type == "Cast" and node.attr("to", "int", 0) != 1:
        raise node.fail("casts a computed tensor to a type other than float32")
    if node.proto.op_type == "Dropout" and len(inputs) > 2 and inputs[2] is not None and \
            np.asarray(node.constant(inputs, 2, "training_mode")).any():
        raise node.fail("runs in training mode; expected inference (training_mode false)")
    return [c.tensor(inputs[0], node)]


def _flatten(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    rank = len(tensor.shape) + 1
    axis = node.attr("axis", "int", 1)
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis <= rank or math.prod(tensor.shape[:axis - 1]) != 1:
        raise node.fail(f"axis {node.attr('axis', 'int', 1)} would fold the batch axis into another one; "
                        "expected axis 1")
    shape = (math.prod(tensor.shape[axis - 1:]),)
    return [c.with_layout(tensor, shape, tensor.index.reshape(shape))]


def _reshape(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    full = reshape_target(node, (c.batch, *tensor.shape), node.constant(inputs, 1, "shape"),
                          bool(node.attr("allowzero", "int", 0)))
    if not full or full[0] != c.batch:
        raise node.fail(f"reshapes (N, {', '.join(map(str, tensor.shape))}) to {list(full)}, which mixes the batch "
                        "axis with the others; expected (N, ...)")
    return [c.with_layout(tensor, full[1:], tensor.index.reshape(full[1:]))]


def _transpose(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    rank = len(tensor.shape) + 1
    perm = node.attr("perm", "ints", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise node.fail(f"perm {perm} moves the batch axis or is not a permutation of {rank} axes")
    inner = [p - 1 for p in perm[1:]]
    return [c.with_layout(tensor, tuple(tensor.shape[p] for p in inner), tensor.index.transpose(inner))]


def _squeeze_or_unsqueeze(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    full = [c.batch, *tensor.shape]
    axes = node.ints(inputs, 1, "axes", 13, "axes")
    if node.proto.op_type == "Squeeze":
        axes = axes_of(node, axes, len(full), "axes") if axes else [a for a in range(1, len(full)) if full[a] == 1]
        if any(full[a] != 1 or a == 0 for a in axes):
            raise node.fail(f"squeezes axes {axes} of (N, {', '.join(map(str, tensor.shape))}); expected axes of size "
                            "1 other than the batch axis")
        shape = [d for a, d in enumerate(full) if a not in axes]
    else:
        axes = axes_of(node, axes, len(full) + len(axes or []), "axes")
        if not axes or 0 in axes or len(full) + len(axes) > MAX_RANK:
            raise node.fail(f"axes {axes}: expected new axes after the batch axis, up to rank {MAX_RANK}")
        shape = list(full)
        for a in axes:
            shape.insert(a, 1)
    return [c.with_layout(tensor, tuple(shape[1:]), tensor.index.reshape(shape[1:]))]


def _binary(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    op = node.proto.op_type
    if len(inputs) != 2:
        raise node.fail(f"has {len(inputs)} inputs, expected 2")
    a, b = inputs
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if op != "Mul":
            raise node.fail(f"{op.lower()}s two computed tensors (a branch such as a residual connection), which "
                            "is not supported")
        return [c.combine(node, "mul", a, b)]
    tensor, constant, tensor_first = (a, b, True) if isinstance(a, Tensor) else (b, a, False)
    c.check_current(tensor, node)
    value = c.engine_constant(tensor, node.float_constant(inputs, 1 if tensor_first else 0, "constant"), node)
    x = tensor.expr
    if op == "Add":
        expr = Expr("add", (x, Expr("const", value=value)))
    elif op == "Mul":
        expr = Expr("mul", (x, Expr("const", value=value)))
    elif op == "Sub":
        expr = Expr("add", (x, Expr("const", value=-value))) if tensor_first else \
            Expr("add", (Expr("mul", (x, Expr("const", value=np.array(-1.0)))), Expr("const", value=value)))
    else:
        if not tensor_first:
            raise node.fail("divides a constant by a computed tensor, which is not supported")
        if (value == 0).any():
            raise node.fail("divides by a constant that holds zeros")
        expr = Expr("mul", (x, Expr("const", value=1.0 / value)))
    return [Tensor(tensor.head, tensor.shape, tensor.index, expr)]


def _activation(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    c.check_current(tensor, node)
    op = node.proto.op_type
    if op == "Erf":
        return [Tensor(tensor.head, tensor.shape, tensor.index, Expr("erf", (tensor.expr,)))]
    return [Tensor(tensor.head, tensor.shape, tensor.index,
                   Expr("activation", (tensor.expr,), activation=_activation_of(node, inputs)))]


def _activation_of(node: Node, inputs: list[Any]) -> Any:
    op = node.proto.op_type
    if op in ("Relu", "Tanh", "Sigmoid", "Softplus"):
        return op.lower()
    if op == "LeakyRelu":
        return {"name": "relu", "negative_slope": node.attr("alpha", "float", 0.01)}
    if op == "PRelu":
        slope = node.float_constant(inputs, 1, "slope")
        if slope.size == 0 or not is_uniform(slope) or not slope.ravel()[0] >= 0:
            raise node.fail(f"slope of shape {slope.shape} is not one non-negative number; only a single slope "
                            "(nn.PReLU() with num_parameters=1) is supported")
        return {"name": "relu", "negative_slope": float(slope.ravel()[0])}
    if op == "Elu":
        alpha = node.attr("alpha", "float", 1.0)
        return "elu" if alpha == 1.0 else {"name": "elu", "alpha": alpha}
    if op == "Selu":
        alpha, gamma = node.attr("alpha", "float", 1.6732632423543772), node.attr("gamma", "float",
                                                                                   1.0507009873554805)
        if not (close(alpha, 1.6732632423543772) and close(gamma, 1.0507009873554805)):
            raise node.fail(f"alpha {alpha} and gamma {gamma} differ from SELU's constants, which the format fixes")
        return "selu"
    if op == "HardSigmoid":
        return {"name": "hard_sigmoid", "alpha": node.attr("alpha", "float", 0.2),
                "beta": node.attr("beta", "float", 0.5)}
    if op == "Gelu":
        approximate = node.attr("approximate", "string", "none")
        if approximate not in ("none", "tanh"):
            raise node.fail(f"approximate is {approximate!r}, expected 'none' or 'tanh'")
        return "gelu" if approximate == "none" else {"name": "gelu", "approximate": True}
    # Clip: a ReLU when the lower bound is 0, with max_value when there is an upper one.
    if node.opset < 11:
        low, high = node.attr("min", "float", -math.inf), node.attr("max", "float", math.inf)
    else:
        bounds = [node.float_constant(inputs, i, name, required=False) for i, name in ((1, "min"), (2, "max"))]
        if any(b is not None and b.size != 1 for b in bounds):
            raise node.fail("min and max must be single numbers")
        low, high = (float(b.ravel()[0]) if b is not None else default
                     for b, default in zip(bounds, (-math.inf, math.inf)))
    if low != 0.0 or not high > 0.0:
        raise node.fail(f"clips to [{low}, {high}]; only [0, max] (a ReLU with a maximum, e.g. ReLU6) is supported")
    return "relu" if high == math.inf else {"name": "relu", "max_value": high}


def _softmax(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.materialise(c.tensor(inputs[0], node), node)
    axis = node.attr("axis", "int", 1 if node.opset < 13 else -1)
    if axis not in (1, -1):
        raise node.fail(f"axis {axis}, expected the class axis of (N, classes) (1 or -1)")
    c.check_classes(tensor, node)
    c.apply_activation(_fold.SOFTMAX if node.proto.op_type == "Softmax" else _fold.LOG_SOFTMAX)
    c.head += 1
    return [Tensor(c.head, tensor.shape, tensor.index, final=node.proto.op_type)]


def _gemm(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    if node.attr("transA", "int", 0):
        raise node.fail("transA=1 transposes the data (N, K) and so moves the batch axis; expected transA=0")
    weight = node.float_constant(inputs, 1, "B")
    if weight.ndim != 2:
        raise node.fail(f"B has shape {weight.shape}, expected a matrix")
    kernel = (weight.T if node.attr("transB", "int", 0) else weight) * node.attr("alpha", "float", 1.0)
    bias = node.float_constant(inputs, 2, "C", required=False)
    if bias is not None:
        if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
            raise node.fail(f"C has shape {bias.shape}, expected one value per output ({kernel.shape[1]},)")
        try:
            bias = np.broadcast_to(bias.reshape(bias.shape[-1:] if bias.ndim else ()), (kernel.shape[1],)).copy()
        except ValueError:
            raise node.fail(f"C has shape {bias.shape}, expected ({kernel.shape[1]},)") from None
        bias = bias * node.attr("beta", "float", 1.0)
    return c.dense(node, tensor, kernel, bias)


def _matmul(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    if not isinstance(inputs[0], Tensor):
        raise node.fail("multiplies a constant by the data (W @ x); expected the data first (x @ W)")
    weight = node.float_constant(inputs, 1, "B")
    if weight.ndim != 2:
        raise node.fail(f"B has shape {weight.shape}, expected a matrix")
    return c.dense(node, inputs[0], weight, None)


def _conv(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    weight = node.float_constant(inputs, 1, "W")
    if weight.ndim != 4:
        raise node.fail(f"W has shape {weight.shape}, expected (out_c, in_c / group, kh, kw): only 2-D "
                        "convolutions are supported")
    out_c, group_c, kh, kw = weight.shape
    kernel_shape = node.attr("kernel_shape", "ints", [kh, kw])
    if kernel_shape != [kh, kw]:
        raise node.fail(f"kernel_shape {kernel_shape} does not match W's shape {weight.shape}")
    bias = node.float_constant(inputs, 2, "B", required=False)
    if bias is not None and bias.shape != (out_c,):
        raise node.fail(f"B has shape {bias.shape}, expected ({out_c},)")
    group = node.attr("group", "int", 1)
    extra = ((0, 0), (0, 0))
    if c.layers and c.layers[-1]["type"] == "zeropad2d":
        # Zero padding, then a convolution: the convolution with both paddings, one layer and one copy fewer.
        (top, bottom), (left, right) = extra = tuple(map(tuple, c.layers.pop()["padding"]))
        h, w = h - top - bottom, w - left - right
    strides, padding, (h_out, w_out) = window_settings(node, h, w, (kh, kw), extra)
    common = {"kernel_size": [kh, kw], "strides": strides, "padding": padding, "activation": "linear",
              "use_bias": bias is not None}
    params = {} if bias is None else {"bias": bias}
    if group == 1 and group_c == channels:
        layer = {"type": "conv2d", "filters": out_c, **common}
        params["kernel"] = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif group == channels and group_c == 1 and out_c % channels == 0:
        # Output channel c * m + j reads input channel c, in ONNX as in the format's depthwise layout.
        layer = {"type": "depthwise_conv2d", **common, "depth_multiplier": out_c // channels}
        params["kernel"] = weight.reshape(channels, out_c // channels, kh, kw).transpose(2, 3, 0, 1)
    else:
        raise node.fail(f"group={group} with W of shape {weight.shape} on {channels} input channels is not supported; "
                        "expected group 1 (a full convolution) or group = input channels (depthwise)")
    return c.map_output(node, layer, params, h_out, w_out, out_c)


def _pool(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.fail("its Indices output is used, which is not supported")
    kernel = node.attr("kernel_shape", "ints", None)
    if kernel is None or len(kernel) != 2:
        raise node.fail(f"kernel_shape {kernel}, expected two sizes (2-D pooling)")
    strides, padding, (h_out, w_out) = window_settings(node, h, w, tuple(kernel))
    layer = {"type": "maxpool2d", "pool_size": kernel, "strides": strides, "padding": padding}
    if node.proto.op_type == "AveragePool":
        layer.update(type="avgpool2d", count_include_pad=bool(node.attr("count_include_pad", "int", 0)))
    elif node.attr("storage_order", "int", 0) not in (0, 1):
        raise node.fail("storage_order must be 0 or 1")
    return c.map_output(node, layer, {}, h_out, w_out, channels)


def _global_pool(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    kind = "global_avgpool2d" if node.proto.op_type == "GlobalAveragePool" else "global_maxpool2d"
    index = np.arange(channels, dtype=np.int64).reshape(channels, 1, 1)
    return [c.emit(node, {"type": kind}, {}, (channels,), (channels, 1, 1), index)]


def _pad(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    mode = node.attr("mode", "string", "constant")
    if node.opset < 11:
        pads, value = node.attr("pads", "ints", None), node.attr("value", "float", 0.0)
    else:
        pads = node.ints(inputs, 1, "", 0, "pads")
        constant = node.float_constant(inputs, 2, "constant_value", required=False)
        value = 0.0 if constant is None or constant.size == 0 else float(constant.ravel()[0])
    axes = node.ints(inputs, 3, "", 0, "axes") if node.opset >= 18 else None
    axes = axes_of(node, axes, 4, "axes") if axes is not None else [0, 1, 2, 3]
    if mode != "constant" or value != 0.0:
        raise node.fail(f"pads in mode {mode!r} with value {value}; only zero padding (mode 'constant') is supported")
    if pads is None or len(pads) != 2 * len(axes):
        raise node.fail(f"pads {pads}, expected two sizes per padded axis")
    before, after = dict(zip(axes, pads[:len(axes)])), dict(zip(axes, pads[len(axes):]))
    if any(before.get(a, 0) or after.get(a, 0) for a in (0, 1)) or any(
            not 0 <= p <= 1024 for p in pads):
        raise node.fail(f"pads {pads}: only the height and width may be padded, by 0 to 1024")
    top, bottom, left, right = before.get(2, 0), after.get(2, 0), before.get(3, 0), after.get(3, 0)
    if not (top or bottom or left or right):
        return [tensor]
    h_out, w_out = h + top + bottom, w + left + right
    layer = {"type": "zeropad2d", "padding": [[top, bottom], [left, right]]}
    return c.map_output(node, layer, {}, h_out, w_out, channels)


def _batch_normalization(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    if node.attr("training_mode", "int", 0) or any(node.proto.output[1:]):
        raise node.fail("runs in training mode (or its running statistics are used); expected inference")
    if node.opset < 9 and not node.attr("spatial", "int", 1):
        raise node.fail("spatial=0 is not supported")
    if len(tensor.shape) not in (1, 3):
        raise node.fail(f"input has shape (N, {', '.join(map(str, tensor.shape))}), expected (N, C) or (N, C, H, W)")
    channels = tensor.shape[0]
    gamma, beta, mean, variance = (node.float_constant(inputs, i, what) for i, what in
                                   enumerate(("scale", "B", "input_mean", "input_var"), start=1))
    if any(p.shape != (channels,) for p in (gamma, beta, mean, variance)):
        raise node.fail(f"its parameters have shapes {[p.shape for p in (gamma, beta, mean, variance)]}, expected "
                        f"({channels},) each")
    epsilon = node.attr("epsilon", "float", 1e-5)
    if not (variance + epsilon > 0).all():
        raise node.fail("input_var + epsilon must be positive")
    scale = gamma / np.sqrt(variance + epsilon)
    broadcast = (channels,) + (1,) * (len(tensor.shape) - 1)
    x = tensor.expr
    c.check_current(tensor, node)
    scaled = Expr("mul", (x, Expr("const", value=c.engine_constant(tensor, scale.reshape(broadcast), node))))
    shift = c.engine_constant(tensor, (beta - mean * scale).reshape(broadcast), node)
    return [Tensor(tensor.head, tensor.shape, tensor.index, Expr("add", (scaled, Expr("const", value=shift))))]


TENSOR_OPS: dict[str, Callable] = {
    "Identity": _pass_through, "Dropout": _pass_through, "Cast": _pass_through,
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "Squeeze": _squeeze_or_unsqueeze, "Unsqueeze": _squeeze_or_unsqueeze,
    "Add": _binary, "Sub": _binary, "Mul": _binary, "Div": _binary,
    **{op: _activation for op in ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Tanh", "Sigmoid", "HardSigmoid",
                                  "Clip", "Softplus", "Gelu", "Erf")},
    "Softmax": _softmax, "LogSoftmax": _softmax,
    "Gemm": _gemm, "MatMul": _matmul, "Conv": _conv,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "Pad": _pad, "BatchNormalization": _batch_normalization,
}
PASS_THROUGH = ("Identity", "Dropout", "Cast")  # the ops that may follow the output softmax
