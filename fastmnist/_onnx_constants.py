"""Constant folding for the ONNX importer: the handlers of nodes whose inputs are all constants (initializers,
Constant nodes, or the Shape of a run-time tensor), such as the Shape -> Gather -> Unsqueeze -> Concat chains
that feed a Reshape. Each takes the converter, the node and its inputs and returns the node's outputs as
NumPy arrays."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ._onnx_node import Node, axes_of, reshape_target
from ._onnx_read import DTYPES, MAX_RANK, MAX_TENSOR_BYTES, short
from ._onnx_values import Tensor

if TYPE_CHECKING:
    from ._onnx_convert import Converter


def _const_identity(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    return [node.constant(inputs, 0, "input")]


def _const_constant(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    attributes = node.attributes
    if len(attributes) != 1:
        raise node.fail(f"has attributes {sorted(attributes)}, expected exactly one value")
    name = next(iter(attributes))
    kinds = {"value": "tensor", "value_float": "float", "value_floats": "floats", "value_int": "int",
             "value_ints": "ints"}
    if name not in kinds:
        raise node.fail(f"attribute '{short(name)}' is not supported; expected one of {', '.join(kinds)}")
    value = node.attr(name, kinds[name])
    dtype = np.int64 if kinds[name] in ("int", "ints") else np.float32
    return [np.asarray(value, dtype=dtype) if not isinstance(value, np.ndarray) else value]


def _const_shape(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    value = inputs[0]
    shape = (c.batch, *value.shape) if isinstance(value, Tensor) else node.constant(inputs, 0, "input").shape
    start, end = node.attr("start", "int", 0), node.attr("end", "int", None)
    return [np.array(shape[start:end], dtype=np.int64)]


def _const_gather(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data, indices = node.constant(inputs, 0, "data"), np.asarray(node.constant(inputs, 1, "indices"))
    axis = axes_of(node, [node.attr("axis", "int", 0)], max(data.ndim, 1), "axis")[0]
    if indices.dtype.kind not in "iu" or data.ndim == 0:
        raise node.fail("expects integer indices into a tensor of rank 1 or more")
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise node.fail(f"indices {indices.ravel()[:8].tolist()} are outside axis {axis} of size {size}")
    if indices.size * (data.size // max(size, 1)) > MAX_TENSOR_BYTES // 8:
        raise node.fail("the gathered tensor is too large")
    return [np.take(data, indices, axis=axis)]


def _const_unsqueeze(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    axes = node.ints(inputs, 1, "axes", 13, "axes") or []
    axes = axes_of(node, axes, data.ndim + len(axes), "axes")
    if not axes or data.ndim + len(axes) > MAX_RANK:
        raise node.fail(f"axes {axes} are missing or the result exceeds rank {MAX_RANK}")
    return [np.expand_dims(data, tuple(axes))]


def _const_squeeze(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    axes = node.ints(inputs, 1, "axes", 13, "axes")
    axes = axes_of(node, axes, data.ndim, "axes") if axes else [a for a, d in enumerate(data.shape) if d == 1]
    if any(data.shape[a] != 1 for a in axes):
        raise node.fail(f"squeezes axes {axes} of shape {data.shape}, which are not all of size 1")
    return [np.squeeze(data, tuple(axes))]


def _const_concat(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    parts = [np.asarray(node.constant(inputs, i, "input")) for i in range(len(inputs))]
    if not parts or parts[0].ndim == 0:
        raise node.fail("concatenates nothing, or scalars")
    axis = node.attr("axis", "int", None)
    if axis is None:
        raise node.fail("has no axis attribute")
    axis = axes_of(node, [axis], parts[0].ndim, "axis")[0]
    return [np.concatenate(parts, axis=axis)]


def _const_reshape(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    target = node.constant(inputs, 1, "shape")
    return [data.reshape(reshape_target(node, data.shape, target, bool(node.attr("allowzero", "int", 0))))]


def _const_cast(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    dtype = DTYPES.get(node.attr("to", "int", 0))
    if dtype is None:
        raise node.fail(f"casts to type {node.attr('to', 'int', 0)}, expected a number or bool type")
    with np.errstate(all="ignore"):
        return [np.asarray(node.constant(inputs, 0, "input")).astype(dtype)]


def _const_slice(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    if node.opset < 10:
        starts, ends = node.attr("starts", "ints", []), node.attr("ends", "ints", [])
        axes, steps = node.attr("axes", "ints", None), None
    else:
        starts, ends = node.ints(inputs, 1, "", 0, "starts"), node.ints(inputs, 2, "", 0, "ends")
        axes, steps = node.ints(inputs, 3, "", 0, "axes"), node.ints(inputs, 4, "", 0, "steps")
    if starts is None or ends is None or len(starts) != len(ends):
        raise node.fail("starts and ends must be given, of the same length")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(axes) == len(steps) == len(starts) or 0 in steps:
        raise node.fail("starts, ends, axes and steps must have the same length, with no zero step")
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes_of(node, axes, data.ndim, "axes") if axes else [], starts, ends, steps):
        index[axis] = slice(start, end, step)
    return [data[tuple(index)]]


def _const_constant_of_shape(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    shape = np.asarray(node.constant(inputs, 0, "shape"))
    value = node.attr("value", "tensor", np.zeros(1, np.float32))
    if shape.ndim != 1 or shape.dtype.kind not in "iu" or shape.size > MAX_RANK or (shape < 0).any() or \
            value.size != 1:
        raise node.fail(f"shape {shape.tolist()!r:.80} is not up to {MAX_RANK} sizes, or the value is not one number")
    if math.prod(int(d) for d in shape) * value.itemsize > MAX_TENSOR_BYTES:
        raise node.fail(f"shape {shape.tolist()} is too large")
    return [np.full(tuple(int(d) for d in shape), value.ravel()[0], dtype=value.dtype)]


def _const_transpose(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    perm = node.attr("perm", "ints", list(range(data.ndim))[::-1])
    if sorted(perm) != list(range(data.ndim)):
        raise node.fail(f"perm {perm} is not a permutation of the {data.ndim} axes")
    return [data.transpose(perm)]


def _const_flatten(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    axis = node.attr("axis", "int", 1)
    axis = axis + data.ndim if axis < 0 else axis
    if not 0 <= axis <= data.ndim:
        raise node.fail(f"axis {axis} is outside a rank-{data.ndim} tensor")
    return [data.reshape(math.prod(data.shape[:axis]), -1 if data.size else 0)]


def _elementwise(function: Callable[..., np.ndarray]) -> Callable:
    def handler(c: Converter, node: Node, inputs: list[Any]) -> list[Any]:
        operands = [np.asarray(node.constant(inputs, i, "input")) for i in range(len(inputs))]
        if not operands:
            raise node.fail("has no inputs")
        shape = np.broadcast_shapes(*(o.shape for o in operands))
        if math.prod(shape) * 8 > MAX_TENSOR_BYTES:
            raise node.fail(f"the result of shape {shape} is too large")
        with np.errstate(all="ignore"):
            return [np.asarray(function(*operands))]
    return handler


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if (b == 0).any():
            raise ZeroDivisionError("integer division by zero")
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))  # truncates
    return a / b


CONSTANT_OPS: dict[str, Callable] = {
    "Constant": _const_constant, "Identity": _const_identity, "Dropout": _const_identity,
    "Shape": _const_shape, "Gather": _const_gather, "Unsqueeze": _const_unsqueeze, "Squeeze": _const_squeeze,
    "Concat": _const_concat, "Reshape": _const_reshape, "Cast": _const_cast, "Slice": _const_slice,
    "ConstantOfShape": _const_constant_of_shape, "Transpose": _const_transpose, "Flatten": _const_flatten,
    "Add": _elementwise(np.add), "Sub": _elementwise(np.subtract), "Mul": _elementwise(np.multiply),
    "Div": _elementwise(_divide), "Neg": _elementwise(np.negative), "Sqrt": _elementwise(np.sqrt),
    "Reciprocal": _elementwise(np.reciprocal),
}
