"""The ONNX graph walk: one pass over the nodes, in order, that builds the format's layer list.

Constants are folded as they come (`fastmnist._onnx_constants`); a run-time tensor (`fastmnist._onnx_values`)
remembers where each of its ONNX (NCHW) elements sits in the engine's (NHWC) output and carries the
element-wise operations applied since the last layer. A layer that consumes it turns them into what the format
has, through `fastmnist._fold`: an affine map folded into the producing kernel, or else a batchnorm layer, or
on the input the input normalisation; activations fused into the producing kernel's epilogue (including the
exact GELU that exporters spell with Erf).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np

from . import _fold
from . import format as weights_format
from ._onnx_constants import CONSTANT_OPS
from ._onnx_node import Node
from ._onnx_read import MAX_TENSOR_BYTES, short, to_array
from ._onnx_tensor_ops import PASS_THROUGH, TENSOR_OPS
from ._onnx_values import X, Expr, Tensor, close, is_uniform, nchw_index
from .errors import OnnxImportError
from .spec import MAX_ACTIVATION_VALUES, MAX_LAYERS

MAX_NODES = 20000
MAX_ELEMENTWISE_DEPTH = 64  # element-wise operations in a row between two layers
MIN_OPSET = 9
MAX_INPUT_RANGE = 1e6  # the format's limit on |lo| and |hi| of input.range
# The batch size used to evaluate shape arithmetic when the model leaves it open: not 1, so that a Reshape
# that folds the batch axis into another one shows up as a wrong leading dimension.
PROBE_BATCH = 3
MAX_FIXED_BATCH = 4096  # the executor runs batches of the size a model fixes, padded with blank images
_LAYER_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")
SUPPORTED_OPS = tuple(sorted(set(TENSOR_OPS) | set(CONSTANT_OPS)))


def _fail(where: str, message: str) -> OnnxImportError:
    return OnnxImportError(f"{where}: {message}")


class Converter:
    """Walks one ONNX graph and builds the format's layer list."""

    def __init__(self, model: Any, where: str, input_scale: float, input_shift: float):
        self.model, self.graph, self.where = model, model.graph, where
        self.input_scale, self.input_shift = input_scale, input_shift
        self.layers: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.layer_names: set[str] = set()
        self.head = 0
        self.engine_shape: tuple[int, ...] = ()
        self.values: dict[str, Any] = {}
        self.output = ""  # metadata.output, known at the end of the walk
        self.opset = self._default_opset()

    # -- the walk

    def convert(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        graph = self.graph
        if len(graph.node) > MAX_NODES:
            raise _fail(self.where, f"{len(graph.node)} nodes, expected at most {MAX_NODES}")
        for tensor in graph.initializer:
            self.values[tensor.name] = to_array(tensor, self.where)
        self._read_input()
        if len(graph.output) != 1:
            raise _fail(self.where, f"the graph has {len(graph.output)} outputs, expected 1 (the class scores)")
        for position, node in enumerate(graph.node):
            self._convert_node(position, node)
        output_name = graph.output[0].name
        result = self.values.get(output_name)
        if not isinstance(result, Tensor):
            raise _fail(self.where, f"the graph output '{output_name}' is "
                        f"{'a constant' if result is not None else 'never computed'}, expected scores "
                        "computed from the input")
        self._finish_output(result)
        self._fold_input_normalisation()
        if len(self.layers) > MAX_LAYERS:
            raise _fail(self.where, f"the model becomes {len(self.layers)} layers, expected at most {MAX_LAYERS}")
        producer = f"{self.model.producer_name} {self.model.producer_version}".strip()[:100]
        spec = {
            "format": weights_format.FORMAT_NAME,
            "version": weights_format.FORMAT_VERSION,
            "input": {"shape": list(self.input_engine_shape), "range": self.input_range},
            "classes": [str(c) for c in range(self.engine_shape[0])],
            "layers": self.layers,
            "metadata": {
                "source": "onnx",
                "output": self.output,
                "onnx_producer": producer or "unknown",
                "onnx_opset": self.opset,
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }
        return spec, self.arrays

    def _default_opset(self) -> int:
        import onnx.defs

        versions = [o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        newest = onnx.defs.onnx_opset_version()
        if len(versions) != 1 or not MIN_OPSET <= versions[0] <= newest:
            raise _fail(self.where, f"imports the default ONNX opset as {versions or 'nothing'}, expected one "
                        f"version from {MIN_OPSET} to {newest}")
        return versions[0]

    def _read_input(self) -> None:
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise _fail(self.where, f"the graph has {len(inputs)} inputs besides its initializers "
                        f"({short(', '.join(i.name for i in inputs))}), expected 1 (the images)")
        value = inputs[0]
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type != 1:
            raise _fail(self.where, f"input '{short(value.name)}' is not a float32 tensor")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shape = tuple(dims[1:])
        accepted = {(1, 28, 28): ((28, 28, 1), (2, 0, 1)), (28, 28, 1): ((28, 28, 1), (0, 1, 2)),
                    (28, 28): ((28, 28, 1), None), (784,): ((784,), None)}
        if not dims or shape not in accepted:
            raise _fail(self.where, f"input '{short(value.name)}' has shape {short(str(dims))}, expected "
                        "(N, 1, 28, 28), (N, 28, 28, 1), (N, 28, 28) or (N, 784)")
        self.input_engine_shape, order = accepted[shape]
        self.input_shape = shape
        self.fixed_batch = dims[0] if dims[0] else None
        if self.fixed_batch is not None and self.fixed_batch > MAX_FIXED_BATCH:
            raise _fail(self.where, f"input '{short(value.name)}' fixes the batch size to {self.fixed_batch}, "
                        f"expected at most {MAX_FIXED_BATCH} (or a symbolic batch size)")
        self.batch = self.fixed_batch or PROBE_BATCH
        self.engine_shape = self.input_engine_shape
        positions = np.arange(784, dtype=np.int64).reshape(self.input_engine_shape)
        index = positions.transpose(order) if order else positions.reshape(shape)
        self.values[value.name] = Tensor(self.head, shape, index)

    def _convert_node(self, position: int, node: Any) -> None:
        where = f"{self.where}: node {position} '{short(node.name)}' ({short(node.op_type)})"
        if node.domain not in ("", "ai.onnx"):
            raise OnnxImportError(f"{where}: op domain '{node.domain}' is not supported; supported ops "
                                  f"(default domain): {', '.join(SUPPORTED_OPS)}")
        inputs = []
        for name in node.input:
            if name == "":
                inputs.append(None)  # an optional input left out
            elif name in self.values:
                inputs.append(self.values[name])
            else:
                raise OnnxImportError(f"{where}: reads '{short(name)}', which no earlier node produces (the graph "
                                      "must be topologically sorted, and only the first output of a node is "
                                      "available)")
        dynamic = [value for value in inputs if isinstance(value, Tensor)]
        op = node.op_type
        try:
            if not dynamic or op == "Shape":
                handler = CONSTANT_OPS.get(op)
                if handler is None and op in TENSOR_OPS:
                    raise OnnxImportError(f"all its inputs are constants, which {op} supports only on tensors "
                                          "computed from the graph input; constant ops: "
                                          f"{', '.join(sorted(CONSTANT_OPS))}")
                if handler is None:
                    raise _unsupported(op)
                outputs = handler(self, Node(node, where, self.opset), inputs)
            else:
                handler = TENSOR_OPS.get(op)
                if handler is None:
                    raise _unsupported(op)
                for value in dynamic:
                    if value.final is not None and op not in PASS_THROUGH:
                        raise OnnxImportError(f"comes after the output {value.final}, expected the {value.final} "
                                              "to be the last operation")
                outputs = handler(self, Node(node, where, self.opset), inputs)
        except OnnxImportError as error:
            message = str(error)
            raise OnnxImportError(message if message.startswith(self.where) else f"{where}: {message}") from None
        except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError, MemoryError) as error:
            raise OnnxImportError(f"{where}: cannot be evaluated ({type(error).__name__}: {str(error)[:200]})") \
                from None
        for name, value in zip(node.output, outputs):
            if isinstance(value, Tensor) and value.expr.depth > MAX_ELEMENTWISE_DEPTH:
                raise OnnxImportError(f"{where}: more than {MAX_ELEMENTWISE_DEPTH} element-wise operations in a row; "
                                      "expected them to be activations or constants folded between layers")
            if name in self.values:
                raise OnnxImportError(f"{where}: output '{short(name)}' is produced twice")
            if name:
                if isinstance(value, np.ndarray) and value.nbytes > MAX_TENSOR_BYTES:
                    raise OnnxImportError(f"{where}: output '{short(name)}' would need {value.nbytes} bytes")
                self.values[name] = value

    # -- run-time tensors: layout, materialisation and layers

    def tensor(self, value: Any, node: Node) -> Tensor:
        if not isinstance(value, Tensor):
            raise node.fail("expected its data input to be computed from the graph input, found a constant")
        return value

    def with_layout(self, tensor: Tensor, shape: tuple[int, ...], index: np.ndarray) -> Tensor:
        return Tensor(tensor.head, tuple(int(d) for d in shape), index, tensor.expr, tensor.final)

    def materialise(self, tensor: Tensor, node: Node) -> Tensor:
        """Apply the tensor's pending element-wise operations to the engine's output; returns it as the head."""
        self.check_current(tensor, node)
        if tensor.expr is X:
            return tensor
        self.apply_steps(self.steps(tensor.expr, node), node, vector=len(tensor.shape) == 1)
        self.head += 1
        return Tensor(self.head, tensor.shape, tensor.index, X, tensor.final)

    def check_current(self, tensor: Tensor, node: Node) -> None:
        if tensor.head != self.head:
            raise node.fail("reads a tensor computed before a later layer; the graph branches (e.g. a residual "
                            "connection), and only a chain of layers is supported")

    def spatial(self, tensor: Tensor, node: Node) -> tuple[Tensor, int, int, int]:
        """A (C, H, W) tensor whose layout is the engine's NHWC map, materialised; and its (h, w, c)."""
        tensor = self.materialise(tensor, node)
        if len(tensor.shape) != 3 or len(self.engine_shape) != 3:
            raise node.fail(f"input has shape (N, {', '.join(map(str, tensor.shape))}), expected (N, C, H, W)")
        c, h, w = tensor.shape
        if self.engine_shape != (h, w, c) or not np.array_equal(tensor.index, nchw_index(h, w, c)):
            raise node.fail("input is not in NCHW order (it was transposed); expected (N, C, H, W)")
        return tensor, h, w, c

    def emit(self, node: Node, layer: dict[str, Any], params: dict[str, np.ndarray],
             engine_shape: tuple[int, ...], shape: tuple[int, ...], index: np.ndarray, name: str = "") -> Tensor:
        """Append a layer and return its output as the new head."""
        _check_size(node, engine_shape)
        name = self._layer_name_for(name) if name else self._layer_name(node)
        self.layers.append({"type": layer.pop("type"), "name": name, **layer})
        for key, value in params.items():
            self.arrays[f"{name}/{key}"] = value
        self.head += 1
        self.engine_shape = engine_shape
        return Tensor(self.head, shape, index)

    def _layer_name(self, node: Node) -> str:
        proto = node.proto
        return self._layer_name_for(
            _LAYER_NAME.sub("_", proto.name or (proto.output[0] if proto.output else "")).strip("_.-")[:56]
            or proto.op_type)

    def _layer_name_for(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.layer_names:
            suffix += 1
            name = f"{base}_{suffix}"
        self.layer_names.add(name)
        return name

    def dense(self, node: Node, tensor: Tensor, kernel: np.ndarray, bias: np.ndarray | None) -> list[Tensor]:
        tensor = self.materialise(tensor, node)
        if len(tensor.shape) != 1 or kernel.shape[0] != tensor.shape[0]:
            raise node.fail(f"multiplies (N, {', '.join(map(str, tensor.shape))}) by a ({kernel.shape[0]}, "
                            f"{kernel.shape[1]}) matrix, expected (N, {kernel.shape[0]}) (flatten first)")
        if len(self.engine_shape) > 1:
            self.flatten_engine(node)
            tensor = Tensor(self.head, tensor.shape, tensor.index)
        # The engine's vector is the NHWC flattening; row i of the ONNX matrix meets engine element index[i].
        rows = np.empty_like(kernel)
        rows[tensor.index] = kernel
        params = {"kernel": rows} | ({} if bias is None else {"bias": bias})
        units = kernel.shape[1]
        layer = {"type": "dense", "units": units, "activation": "linear", "use_bias": bias is not None}
        return [self.emit(node, layer, params, (units,), (units,), np.arange(units, dtype=np.int64))]

    def flatten_engine(self, node: Node) -> None:
        """Append a flatten layer: the engine's flat output, and so every tensor's index, stays the same."""
        self.emit(node, {"type": "flatten"}, {}, (math.prod(self.engine_shape),), (), np.empty(0), name="flatten")

    def map_output(self, node: Node, layer: dict[str, Any], params: dict[str, np.ndarray],
                   h: int, w: int, c: int) -> list[Tensor]:
        _check_size(node, (h, w, c))
        return [self.emit(node, layer, params, (h, w, c), (c, h, w), nchw_index(h, w, c))]

    def engine_constant(self, tensor: Tensor, value: np.ndarray, node: Node) -> np.ndarray:
        """An ONNX constant that meets `tensor` element-wise, in the engine's layout (a scalar if it is one)."""
        value = np.asarray(value, dtype=np.float64)
        rank = len(tensor.shape)
        if value.ndim == rank + 1:
            if value.shape[0] != 1:
                raise node.fail(f"constant of shape {value.shape} varies along the batch axis")
            value = value[0]
        if value.ndim > rank:
            raise node.fail(f"constant of shape {value.shape} has a higher rank than its tensor (N, "
                            f"{', '.join(map(str, tensor.shape))})")
        if value.size == 1:
            return value.reshape(())
        try:
            spread = np.broadcast_to(value, tensor.shape)
        except ValueError:
            raise node.fail(f"constant of shape {value.shape} does not broadcast to the tensor's shape (N, "
                            f"{', '.join(map(str, tensor.shape))})") from None
        engine = np.empty(math.prod(self.engine_shape))
        engine[tensor.index.ravel()] = spread.ravel()
        return engine.reshape(self.engine_shape)

    def combine(self, node: Node, op: str, a: Tensor, b: Tensor) -> Tensor:
        """Two tensors meeting element-wise: allowed only as functions of the same output in the same layout."""
        self.check_current(a, node)
        self.check_current(b, node)
        if a.shape != b.shape or not np.array_equal(a.index, b.index):
            raise node.fail(f"combines tensors of shapes {a.shape} and {b.shape} in different layouts")
        return Tensor(a.head, a.shape, a.index, Expr(op, (a.expr, b.expr)))

    # -- element-wise operations: recognised, then applied

    def steps(self, expr: Expr, node: Node) -> list[tuple]:
        """An element-wise expression as a list of ("affine", scale, shift) and ("activation", a) steps."""
        if expr is X:
            return []
        if expr.op == "activation":
            return self.steps(expr.args[0], node) + [("activation", expr.activation)]
        if expr.op == "erf":
            raise node.fail("uses Erf outside the exact GELU pattern x * 0.5 * (1 + erf(x / sqrt(2)))")
        if expr.op == "mul":  # before the affine maps, as the pattern's constant factor may come last
            recognised = self._product_activation(expr)
            if recognised is not None:
                inner, activation = recognised
                return self.steps(inner, node) + [("activation", activation)]
        dynamic = [a for a in expr.args if a.op != "const"]
        if len(dynamic) == 1:
            constant = next(a.value for a in expr.args if a.op == "const")
            scale, shift = (constant, 0.0) if expr.op == "mul" else (1.0, constant)
            steps = self.steps(dynamic[0], node)
            if steps and steps[-1][0] == "affine":
                _, previous_scale, previous_shift = steps.pop()
                scale, shift = previous_scale * scale, previous_shift * scale + shift
            return steps + [("affine", scale, shift)]
        raise node.fail("combines computed tensors in a way that is not an activation the format supports "
                        "(recognised: x * sigmoid(x), x * 0.5 * (1 + erf(x / sqrt(2))))")

    def _product_activation(self, expr: Expr) -> tuple[Expr, str] | None:
        factors, constant = _factors(expr)
        if len(factors) != 2 or not is_uniform(constant):
            return None
        constant = float(np.ravel(constant)[0])
        for inner, other in (factors, factors[::-1]):
            if (other.op == "activation" and other.activation == "sigmoid" and other.args[0] is inner
                    and close(constant, 1.0)):
                return inner, "silu"
            if close(constant, 0.5) and _is_erf_term(other, inner):
                return inner, "gelu"
        return None

    def apply_steps(self, steps: list[tuple], node: Node, vector: bool = False) -> None:
        """Apply the steps to the engine's output; `vector`: the ONNX tensor is a flattened (N, features)."""
        for step in steps:
            if step[0] == "affine":
                scale, shift = np.asarray(step[1], np.float64), np.asarray(step[2], np.float64)
                if vector and len(self.engine_shape) > 1 and self.layers and not (
                        _per_channel_or_none(scale, self.engine_shape) is not None
                        and _per_channel_or_none(shift, self.engine_shape) is not None):
                    # Per-feature constants on a flattened map: after a flatten layer, features are channels.
                    self.flatten_engine(node)
                self._apply_affine(scale, shift, node)
            else:
                self.apply_activation(step[1])

    def _apply_affine(self, scale: np.ndarray, shift: np.ndarray, node: Node) -> None:
        if np.all(scale == 1.0) and np.all(shift == 0.0):
            return
        if not self.layers:
            if not (is_uniform(scale) and is_uniform(shift)):
                raise node.fail("normalises the input pixels with different constants per pixel or channel; "
                                "expected one scale and offset for all pixels")
            a, b = float(np.ravel(scale)[0]), float(np.ravel(shift)[0])
            self.input_scale, self.input_shift = a * self.input_scale, a * self.input_shift + b
            return
        channels = self.engine_shape[-1]
        scale, shift = (self._per_channel(v, node) for v in (scale, shift))
        if _fold.is_linear_producer(self.layers[-1]):
            _fold.fold_channel_affine(self.layers[-1], self.arrays, scale, shift)
            return
        # A batchnorm with mean 0 and variance 1 is the affine map; epsilon changes the scale by 5e-13.
        self.emit(node, {"type": "batchnorm", "epsilon": 1e-12},
                  {"gamma": scale, "beta": shift, "moving_mean": np.zeros(channels),
                   "moving_variance": np.ones(channels)}, self.engine_shape, (), np.empty(0))

    def _per_channel(self, value: np.ndarray, node: Node) -> np.ndarray:
        result = _per_channel_or_none(value, self.engine_shape)
        if result is None:
            raise node.fail("applies a constant that varies within a channel; expected one value per channel")
        return result

    def apply_activation(self, activation: Any) -> None:
        if self.layers and _fold.is_linear_producer(self.layers[-1]):
            self.layers[-1]["activation"] = activation  # fused into the producing kernel's epilogue
            return
        self.layers.append({"type": "activation", "name": self._layer_name_for("activation"),
                            "activation": activation})

    # -- the end of the graph

    def _finish_output(self, result: Tensor) -> None:
        where = Node(None, f"{self.where}: the graph output '{self.graph.output[0].name}'", self.opset)
        result = self.materialise(result, where)
        if result.final is None:
            self.check_classes(result, where)
            self.output = _fold.append_softmax(self.layers)
        else:
            self.output = _fold.finish_with_softmax(self.layers, self.graph.name)

    def check_classes(self, tensor: Tensor, node: Node) -> None:
        if (len(tensor.shape) != 1 or tensor.shape[0] < 1 or len(self.engine_shape) != 1
                or not np.array_equal(tensor.index, np.arange(tensor.shape[0]))):
            raise node.fail(f"the scores have shape (N, {', '.join(map(str, tensor.shape))}), expected "
                            "(N, classes) from a Gemm/MatMul or a global pooling")
        if not self.layers:
            raise node.fail("the model computes nothing from its input")

    def _fold_input_normalisation(self) -> None:
        pixels = math.prod(self.input_engine_shape)
        lo, hi = _fold.fold_input_map(self.layers, self.arrays, self.input_shape,
                                      np.full(pixels, self.input_scale), np.full(pixels, self.input_shift))
        if not max(abs(lo), abs(hi)) <= MAX_INPUT_RANGE:
            raise _fail(self.where, f"the input normalisation maps pixels to [{lo}, {hi}], expected within "
                        f"+-{MAX_INPUT_RANGE:g}")
        self.input_range = [lo, hi]


def _check_size(node: Node, shape: tuple[int, ...]) -> None:
    if math.prod(shape) > MAX_ACTIVATION_VALUES:
        raise node.fail(f"output shape {shape} exceeds {MAX_ACTIVATION_VALUES} values per image")


def _per_channel_or_none(value: np.ndarray, engine_shape: tuple[int, ...]) -> np.ndarray | None:
    """A scalar or engine-shaped constant as one value per channel (the last axis), or None if it varies."""
    channels = engine_shape[-1]
    if value.ndim == 0:
        return np.full(channels, float(value))
    rows = value.reshape(-1, channels)
    return rows[0].copy() if (rows == rows[0]).all() else None


def _factors(expr: Expr) -> tuple[list[Expr], Any]:
    """A product flattened: its non-constant factors, and the product of its constants."""
    if expr.op == "mul":
        (left, c_left), (right, c_right) = _factors(expr.args[0]), _factors(expr.args[1])
        return left + right, c_left * c_right
    if expr.op == "const":
        return [], expr.value
    return [expr], 1.0


def _is_erf_term(expr: Expr, inner: Expr) -> bool:
    """Whether `expr` is 1 + erf(inner / sqrt(2)), in either order of the sum."""
    if expr.op != "add":
        return False
    erf = next((a for a in expr.args if a.op == "erf"), None)
    one = next((a for a in expr.args if a.op == "const"), None)
    if erf is None or one is None or not is_uniform(one.value) or not close(float(np.ravel(one.value)[0]), 1.0):
        return False
    argument = erf.args[0]
    if argument.op != "mul":
        return False
    scale = next((a for a in argument.args if a.op == "const"), None)
    return (scale is not None and inner in argument.args and is_uniform(scale.value)
            and close(float(np.ravel(scale.value)[0]), 1.0 / math.sqrt(2.0)))


def _unsupported(op: str) -> OnnxImportError:
    return OnnxImportError(f"op '{short(op)}' is not supported; supported ops: {', '.join(SUPPORTED_OPS)}")
