"""The values the ONNX graph walk passes between nodes, besides constants (NumPy arrays): run-time tensors, the
element-wise expressions pending on them, and comparisons of the constants a recognised pattern needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RELATIVE_TOLERANCE = 1e-6  # for the constants of a recognised pattern (GELU's 0.5, 1, 1/sqrt(2))


@dataclass(frozen=True, eq=False)
class Expr:
    """An element-wise function of the engine's current output, with constants in the engine's layout."""
    op: str                          # "x" (the output itself), "const", "add", "mul", "erf", "activation"
    args: tuple["Expr", ...] = ()
    value: np.ndarray | None = None  # "const": float64, a scalar or the engine output's shape
    activation: Any = None           # "activation": the format's activation (a name or an object)
    depth: int = 0                   # operations between this and "x": bounded, as they are walked recursively

    def __post_init__(self):
        object.__setattr__(self, "depth", 1 + max((a.depth for a in self.args), default=-1))


X = Expr("x")


@dataclass(frozen=True, eq=False)
class Tensor:
    """A tensor the engine computes at run time."""
    head: int               # which engine output it is a function of (a counter of emitted layers)
    shape: tuple[int, ...]  # its ONNX shape without the batch axis
    index: np.ndarray       # int64, `shape`: where each element sits in the engine's flat output
    expr: Expr = X          # element-wise operations still to apply to that output
    final: str | None = None  # the output activation's ONNX op once it was applied


def nchw_index(h: int, w: int, c: int) -> np.ndarray:
    """(c, h, w) int64: where element (c, y, x) of an NCHW map sits in the engine's flat NHWC map."""
    return np.arange(h * w * c, dtype=np.int64).reshape(h, w, c).transpose(2, 0, 1)


def is_uniform(value: Any) -> bool:
    value = np.asarray(value)
    return bool((value == np.ravel(value)[0]).all())


def close(value: float, expected: float) -> bool:
    return abs(value - expected) <= RELATIVE_TOLERANCE * abs(expected)
