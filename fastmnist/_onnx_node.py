"""One ONNX node as the importer's handlers see it: typed attributes, constant inputs, errors that name the node,
and the shape rules that several ops share (axes, Reshape targets, convolution and pooling windows)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._onnx_read import MAX_RANK, to_array
from ._onnx_values import Tensor
from .errors import OnnxImportError

_ATTRIBUTE_TYPES = {"float": 1, "int": 2, "string": 3, "tensor": 4, "floats": 6, "ints": 7}


class Node:
    """A node with typed access to its attributes and constant inputs, and errors that name it."""

    def __init__(self, proto: Any, where: str, opset: int):
        self.proto, self.where, self.opset = proto, where, opset
        self.attributes = {a.name: a for a in proto.attribute} if proto is not None else {}

    def fail(self, message: str) -> OnnxImportError:
        return OnnxImportError(f"{self.where}: {message}")

    def attr(self, name: str, kind: str, default: Any = None) -> Any:
        attribute = self.attributes.get(name)
        if attribute is None:
            return default
        if attribute.type != _ATTRIBUTE_TYPES[kind]:
            raise self.fail(f"attribute '{name}' has type {attribute.type}, expected {kind}")
        if kind == "float":
            return float(attribute.f)
        if kind == "int":
            return int(attribute.i)
        if kind == "string":
            return attribute.s.decode("utf-8", "replace")
        if kind == "tensor":
            return to_array(attribute.t, self.where)
        values = attribute.floats if kind == "floats" else attribute.ints
        if len(values) > 64:
            raise self.fail(f"attribute '{name}' has {len(values)} values, expected at most 64")
        return [float(v) for v in values] if kind == "floats" else [int(v) for v in values]

    def constant(self, inputs: list[Any], position: int, what: str, required: bool = True) -> np.ndarray | None:
        value = inputs[position] if position < len(inputs) else None
        if value is None:
            if required:
                raise self.fail(f"{what} (input {position}) is missing")
            return None
        if isinstance(value, Tensor):
            raise self.fail(f"{what} (input {position}) is computed from the graph input, expected a constant")
        return value

    def float_constant(self, inputs: list[Any], position: int, what: str, required: bool = True):
        value = self.constant(inputs, position, what, required)
        if value is None:
            return None
        value = np.asarray(value, np.float64)
        if not np.isfinite(value).all():
            raise self.fail(f"{what} (input {position}) holds NaN or infinite values")
        return value

    def ints(self, inputs: list[Any], position: int, attribute: str, since: int, what: str,
             default: list[int] | None = None) -> list[int] | None:
        """An integer list that is an attribute before opset `since` and a constant input from then on."""
        if self.opset < since:
            return self.attr(attribute, "ints", default)
        value = self.constant(inputs, position, what, required=False)
        if value is None:
            return default
        value = np.asarray(value)
        if value.ndim > 1 or value.size > 64 or value.dtype.kind not in "iu":
            raise self.fail(f"{what} has shape {value.shape} and type {value.dtype}, expected up to 64 integers")
        return [int(v) for v in value.ravel()]


def axes_of(node: Node, axes: list[int] | None, rank: int, what: str) -> list[int]:
    """``axes`` of a rank-``rank`` tensor, negative ones counted from the end, sorted; refused unless distinct."""
    normalised = sorted(a + rank if a < 0 else a for a in (axes or []))
    if any(not 0 <= a < rank for a in normalised) or len(set(normalised)) != len(normalised):
        raise node.fail(f"{what} {axes} are not distinct axes of a rank-{rank} tensor")
    return normalised


def reshape_target(node: Node, shape: tuple[int, ...], target: Any, allowzero: bool) -> tuple[int, ...]:
    """The output shape of Reshape(shape -> target) with ONNX's 0 (copy) and -1 (infer) rules."""
    target = np.asarray(target)
    if target.ndim != 1 or target.dtype.kind not in "iu" or target.size > MAX_RANK:
        raise node.fail(f"the target shape {target.tolist()!r:.80} is not up to {MAX_RANK} integers")
    out = [int(d) for d in target]
    for axis, size in enumerate(out):
        if size == 0 and not allowzero:
            if axis >= len(shape):
                raise node.fail(f"target shape {out} copies axis {axis}, which the input {shape} does not have")
            out[axis] = shape[axis]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise node.fail(f"target shape {out} is not a shape (at most one -1, no other negative sizes)")
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise node.fail(f"cannot reshape {shape} to {out}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise node.fail(f"cannot reshape {shape} ({total} values) to {out}")
    return tuple(out)


def _pads(node: Node, size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int]):
    """Explicit ((top, bottom), (left, right)) padding from auto_pad / pads."""
    auto_pad = node.attr("auto_pad", "string", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, s in zip(size, kernel, strides):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            small = total // 2
            pads.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        return tuple(pads)
    if auto_pad == "VALID":
        return (0, 0), (0, 0)
    if auto_pad != "NOTSET":
        raise node.fail(f"auto_pad is {auto_pad!r}, expected NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    pads = node.attr("pads", "ints", [0, 0, 0, 0])
    if len(pads) != 4 or any(not 0 <= p <= 1024 for p in pads):
        raise node.fail(f"pads {pads}, expected four sizes from 0 to 1024 (top, left, bottom, right)")
    return (pads[0], pads[2]), (pads[1], pads[3])


def window_settings(node: Node, h: int, w: int, kernel: tuple[int, int], extra=((0, 0), (0, 0))):
    """strides, padding and output size of a convolution or pooling window on an (h, w) input padded by `extra`
    before the node pads it; checks dilations."""
    if any(not 1 <= k <= 1024 for k in kernel):
        raise node.fail(f"window {kernel}, expected sizes from 1 to 1024")
    dilations = node.attr("dilations", "ints", [1, 1])
    if dilations != [1, 1]:
        raise node.fail(f"dilations {dilations} are not supported; expected [1, 1]")
    strides = node.attr("strides", "ints", [1, 1])
    if len(strides) != 2 or any(not 1 <= s <= 1024 for s in strides):
        raise node.fail(f"strides {strides}, expected two integers from 1 to 1024")
    (top, bottom), (left, right) = extra
    padding = tuple((before + more_before, after + more_after) for (before, after), (more_before, more_after) in
                    zip(_pads(node, (h + top + bottom, w + left + right), kernel, tuple(strides)), extra))
    out = []
    for n, k, s, (before, after) in zip((h, w), kernel, strides, padding):
        span = n + before + after - k
        if span < 0:
            raise node.fail(f"window {kernel} is larger than the padded input ({h}, {w})")
        if node.attr("ceil_mode", "int", 0) and span % s:
            raise node.fail("ceil_mode=1 leaves a partial window at the edge, which is not supported; expected "
                            "ceil_mode=0 or windows that fit")
        out.append(span // s + 1)
    return list(strides), _padding_name(padding, (h, w), kernel, strides), tuple(out)


def _padding_name(padding, size: tuple[int, int], kernel: tuple[int, int], strides: list[int]):
    """"valid" or "same" when the explicit padding is what that name means (TensorFlow's split), else the pads."""
    if not any(map(any, padding)):
        return "valid"
    same = []
    for n, k, s in zip(size, kernel, strides):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        same.append((total // 2, total - total // 2))
    return "same" if tuple(padding) == tuple(same) else [list(p) for p in padding]
