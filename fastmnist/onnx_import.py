"""Import an ONNX model (torch.onnx.export, tf2onnx, onnx.helper) into a fastmnist weights file (docs/FORMAT.md).

The importer is the only place that knows ONNX. It walks the graph once, in order, with two kinds of value:
constants (initializers, Constant nodes and whatever is computed from constants alone, such as the
Shape -> Gather -> Unsqueeze -> Concat chains that feed a Reshape), and tensors that the engine computes at
run time. A run-time tensor remembers where each of its ONNX (NCHW) elements sits in the engine's (NHWC)
output, so Transpose, Reshape and Flatten cost nothing: convolution kernels are transposed to HWIO and the
rows of the first dense layer after a flatten are permuted instead. It also carries the element-wise
operations applied since the last layer; a layer that consumes it turns them into what the format has: an
affine map (Mul/Add/Sub/Div by constants, BatchNormalization) folded into the producing kernel, or, on the
input, into the first layer's weights or the input range, else a batchnorm layer; activations fused into the
producing kernel's epilogue (including the exact GELU that exporters spell with Erf); a zero Pad folded into
the next convolution.

`import_onnx` then runs the model with an independent executor (onnxruntime when installed, else onnx's
reference evaluator) on reference images, stores its probabilities in the file, and writes the file only
after the engine has reproduced them. The file is untrusted: tensors stored outside it are refused, and every
size is checked before anything is allocated.

onnx is imported inside the functions, so ``import fastmnist`` stays light.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import _fold
from . import format as weights_format
from ._converted import as_unit_images, write_proven
from .spec import MAX_ACTIVATION_VALUES, MAX_LAYERS

MAX_FILE_BYTES = 1 << 30
MAX_TENSOR_BYTES = weights_format.MAX_ARRAY_BYTES
MAX_RANK = 8
MAX_NODES = 20000
MAX_ELEMENTWISE_DEPTH = 64  # element-wise operations in a row between two layers
MIN_OPSET = 9
MAX_INPUT_RANGE = 1e6  # the format's limit on |lo| and |hi| of input.range
# The batch size used to evaluate shape arithmetic when the model leaves it open: not 1, so that a Reshape
# that folds the batch axis into another one shows up as a wrong leading dimension.
PROBE_BATCH = 3
EXECUTOR_BATCH = 256
MAX_FIXED_BATCH = 4096  # the executor runs batches of the size a model fixes, padded with blank images
RELATIVE_TOLERANCE = 1e-6  # for the constants of a recognised pattern (GELU's 0.5, 1, 1/sqrt(2))
_LAYER_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")

OUTPUT_SOFTMAX = _fold.SOFTMAX
OUTPUT_LOG_SOFTMAX = _fold.LOG_SOFTMAX_REPLACED
OUTPUT_LOGITS = _fold.SOFTMAX_APPENDED

# ONNX TensorProto data types the importer reads, and where their values live when raw_data is empty.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
           10: np.float16, 11: np.float64}
_TYPED_FIELDS = {1: "float_data", 11: "double_data", 7: "int64_data"}  # the others use int32_data
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_ATTRIBUTE_TYPES = {"float": 1, "int": 2, "string": 3, "tensor": 4, "floats": 6, "ints": 7}


class OnnxImportError(ValueError):
    """An ONNX model cannot be read or written in the fastmnist format, or the written file does not match."""


@dataclass(frozen=True, eq=False)
class _Expr:
    """An element-wise function of the engine's current output, with constants in the engine's layout."""
    op: str                          # "x" (the output itself), "const", "add", "mul", "erf", "activation"
    args: tuple["_Expr", ...] = ()
    value: np.ndarray | None = None  # "const": float64, a scalar or the engine output's shape
    activation: Any = None           # "activation": the format's activation (a name or an object)
    depth: int = 0                   # operations between this and "x": bounded, as they are walked recursively

    def __post_init__(self):
        object.__setattr__(self, "depth", 1 + max((a.depth for a in self.args), default=-1))


_X = _Expr("x")


@dataclass(frozen=True, eq=False)
class _Tensor:
    """A tensor the engine computes at run time."""
    head: int               # which engine output it is a function of (a counter of emitted layers)
    shape: tuple[int, ...]  # its ONNX shape without the batch axis
    index: np.ndarray       # int64, `shape`: where each element sits in the engine's flat output
    expr: _Expr = _X        # element-wise operations still to apply to that output
    final: str | None = None  # the output activation's ONNX op once it was applied


@dataclass(frozen=True)
class OnnxConversion:
    """An ONNX model converted to the format: spec (without the reference) and float64 arrays."""
    spec: dict[str, Any]
    arrays: dict[str, np.ndarray]
    model: Any                    # the onnx.ModelProto, checked
    input_shape: tuple[int, ...]  # the ONNX input's shape without the batch axis
    fixed_batch: int | None       # the batch size the ONNX input requires, if it fixes one
    output: str                   # OUTPUT_SOFTMAX, OUTPUT_LOG_SOFTMAX or OUTPUT_LOGITS


def import_onnx(
    source: str | os.PathLike | bytes | Any,
    path: str | os.PathLike,
    *,
    mean: float | None = None,
    std: float | None = None,
    reference_images: np.ndarray | None = None,
) -> Path:
    """Convert the ONNX model ``source`` to the weights file ``path`` and verify it.

    source: a path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``. mean, std: the input
    normalisation the model was trained with (``transforms.Normalize((mean,), (std,))``): the engine then
    takes pixels in [0, 1] (or 0..255) and the normalisation is folded into the file. reference_images:
    ``(N, 28, 28)`` (or ``(N, 784)``) images, uint8 0..255 or floats in [0, 1], ink high; the first 16 are
    stored with the independent executor's probabilities and all N are checked against the engine (within
    1e-5). Without them, 16 fixed pseudo-random images are used.

    Returns the path. Raises ``OnnxImportError`` naming the node and what is not supported, or the parity
    failure; the file is only written (atomically) when the check passes.
    """
    conversion = convert_onnx(source, mean=mean, std=std)
    images = as_unit_images(reference_images, OnnxImportError)
    inputs = _normalised(images, mean, std).reshape(-1, *conversion.input_shape)
    outputs = run_executor(conversion.model, inputs, conversion.fixed_batch)
    probabilities = _probabilities(outputs, conversion.output)
    return write_proven(path, conversion.spec, conversion.arrays, images, probabilities,
                        source="the independent executor's", error=OnnxImportError)


def convert_onnx(source: str | os.PathLike | bytes | Any, *, mean: float | None = None,
                 std: float | None = None) -> OnnxConversion:
    """The format's spec and arrays for an ONNX model, without running it. Raises ``OnnxImportError``."""
    model, where = _read_model(source)
    scale, shift = _input_normalisation(mean, std)
    converter = _Converter(model, where, scale, shift)
    spec, arrays = converter.convert()
    if mean is not None or std is not None:
        spec["metadata"]["input_normalization"] = {"mean": float(mean or 0.0),
                                                   "std": float(1.0 if std is None else std)}
    return OnnxConversion(spec, arrays, model, converter.input_shape, converter.fixed_batch, converter.output)


def run_executor(model: Any, inputs: np.ndarray, fixed_batch: int | None = None) -> np.ndarray:
    """The ONNX model's outputs ``(N, classes) float64`` for ``inputs`` (``(N, ...)`` float32), computed by
    onnxruntime when installed, else by onnx's reference evaluator. Raises ``OnnxImportError``."""
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    name = "onnxruntime" if onnxruntime is not None else "onnx.reference"
    try:
        if onnxruntime is not None:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                   providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name
            run: Callable[[np.ndarray], Any] = lambda x: session.run(None, {input_name: x})[0]
        else:
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(model)
            input_name = evaluator.input_names[0]
            run = lambda x: evaluator.run(None, {input_name: x})[0]
        chunk = fixed_batch or EXECUTOR_BATCH
        outputs = []
        for start in range(0, len(inputs), chunk):
            batch = inputs[start:start + chunk]
            padded = np.concatenate([batch, np.zeros((chunk - len(batch), *batch.shape[1:]), batch.dtype)]) \
                if fixed_batch and len(batch) < chunk else batch
            outputs.append(np.asarray(run(np.ascontiguousarray(padded, np.float32)), np.float64)[:len(batch)])
    except Exception as error:  # each executor has its own exception types for a model it cannot run
        raise OnnxImportError(f"the independent executor ({name}) cannot run the model: "
                              f"{type(error).__name__}: {str(error)[:300]}") from None
    result = np.concatenate(outputs)
    if result.ndim != 2 or len(result) != len(inputs) or not np.isfinite(result).all():
        raise OnnxImportError(f"the independent executor ({name}) returned shape {result.shape} or non-finite "
                              f"values, expected finite ({len(inputs)}, classes)")
    return result


# ---------------------------------------------------------------------------------------------------------
# Reading and checking the file


def _read_model(source: Any) -> tuple[Any, str]:
    import onnx

    if isinstance(source, onnx.ModelProto):
        data, where = source.SerializeToString(), "ONNX model"
    elif isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), "ONNX model"
    else:
        where = f"ONNX file '{source}'"
        try:
            size = os.stat(source).st_size
            if size > MAX_FILE_BYTES:
                raise OnnxImportError(f"{where}: {size} bytes, expected at most {MAX_FILE_BYTES}")
            data = Path(source).read_bytes()
        except OSError as error:
            raise OnnxImportError(f"{where}: cannot be read ({error.strerror or error})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # DecodeError, or what the native parser raises for malformed input
        raise OnnxImportError(f"{where}: not an ONNX model (the protobuf does not parse: {error})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(f"{where}: not an ONNX model (no graph with nodes); is it truncated?")
    _check_no_external_data(model.graph, where)
    return model, where


def _check_no_external_data(graph: Any, where: str) -> None:
    """Refuse tensors stored outside the file before any is read: their location could name any file."""
    def check(tensor: Any, owner: str) -> None:
        name = _short(tensor.name)
        if tensor.data_location == _EXTERNAL or len(tensor.external_data):
            raise OnnxImportError(f"{where}: {owner} tensor '{name}' keeps its data in an external file; "
                                  "only self-contained models are accepted (save with all tensors inside)")

    if len(graph.sparse_initializer):
        raise OnnxImportError(f"{where}: graph '{_short(graph.name)}' has sparse initializers, which are not supported")
    for tensor in graph.initializer:
        check(tensor, "initializer")
    for node in graph.node:
        for attribute in node.attribute:
            owner = f"node '{_short(node.name)}' ({_short(node.op_type)}) attribute '{_short(attribute.name)}'"
            tensors = [attribute.t] if attribute.HasField("t") else []
            for sparse in ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(
                    attribute.sparse_tensors):
                tensors += [sparse.values, sparse.indices]
            for tensor in [*tensors, *attribute.tensors]:
                check(tensor, owner)
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                _check_no_external_data(subgraph, where)


def _to_array(tensor: Any, where: str) -> np.ndarray:
    """A TensorProto as a NumPy array, with its dims and data size checked before anything is allocated."""
    name = _short(tensor.name)
    dtype = _DTYPES.get(tensor.data_type)
    if dtype is None:
        raise OnnxImportError(f"{where}: tensor '{name}' has data type {tensor.data_type}, expected one of "
                              "float, double, float16, int8/16/32/64, uint8, bool")
    dims = tuple(tensor.dims)
    if len(dims) > MAX_RANK or any(d < 0 for d in dims):
        raise OnnxImportError(f"{where}: tensor '{name}' has dims {_short(str(dims))}, expected at most {MAX_RANK} "
                              "non-negative sizes")
    count = math.prod(dims)
    itemsize = np.dtype(dtype).itemsize
    if count * itemsize > MAX_TENSOR_BYTES:
        raise OnnxImportError(f"{where}: tensor '{name}' of dims {dims} needs {count * itemsize} bytes, "
                              f"expected at most {MAX_TENSOR_BYTES}")
    if tensor.HasField("segment"):
        raise OnnxImportError(f"{where}: tensor '{name}' is segmented, which is not supported")
    if tensor.raw_data:
        if len(tensor.raw_data) != count * itemsize:
            raise OnnxImportError(f"{where}: tensor '{name}' of dims {dims} holds {len(tensor.raw_data)} "
                                  f"bytes, expected {count * itemsize}")
        return np.frombuffer(tensor.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(dims)
    values = getattr(tensor, _TYPED_FIELDS.get(tensor.data_type, "int32_data"))
    if len(values) != count:
        raise OnnxImportError(f"{where}: tensor '{name}' of dims {dims} holds {len(values)} values, "
                              f"expected {count}")
    if dtype in (np.float32, np.float64):
        return np.array(values, dtype=dtype).reshape(dims)
    integers = np.array(values, dtype=np.int64)
    storage = np.uint16 if dtype == np.float16 else dtype  # float16 values are stored as their bit patterns
    info = np.iinfo(storage) if storage != np.bool_ else np.iinfo(np.uint8)
    if integers.size and (integers.min() < info.min or integers.max() > (1 if dtype == np.bool_ else info.max)):
        raise OnnxImportError(f"{where}: tensor '{name}' holds values outside the range of its type")
    return integers.astype(storage).view(dtype).reshape(dims) if dtype == np.float16 else \
        integers.astype(dtype).reshape(dims)


def _input_normalisation(mean: float | None, std: float | None) -> tuple[float, float]:
    """(scale, shift) with model input = scale * pixel + shift, pixel in [0, 1]."""
    mean = 0.0 if mean is None else mean
    std = 1.0 if std is None else std
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
            raise OnnxImportError(f"{name} is {value!r}, expected a finite number")
    if not std > 0:
        raise OnnxImportError(f"std is {std!r}, expected a positive number")
    return 1.0 / std, -mean / std


# ---------------------------------------------------------------------------------------------------------
# The graph walk


def _fail(where: str, message: str) -> OnnxImportError:
    return OnnxImportError(f"{where}: {message}")


class _Converter:
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
        self.output = OUTPUT_LOGITS
        self.opset = self._default_opset()

    # -- the walk

    def convert(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        graph = self.graph
        if len(graph.node) > MAX_NODES:
            raise _fail(self.where, f"{len(graph.node)} nodes, expected at most {MAX_NODES}")
        for tensor in graph.initializer:
            self.values[tensor.name] = _to_array(tensor, self.where)
        self._read_input()
        if len(graph.output) != 1:
            raise _fail(self.where, f"the graph has {len(graph.output)} outputs, expected 1 (the class scores)")
        for position, node in enumerate(graph.node):
            self._convert_node(position, node)
        output_name = graph.output[0].name
        result = self.values.get(output_name)
        if not isinstance(result, _Tensor):
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
                        f"({_short(', '.join(i.name for i in inputs))}), expected 1 (the images)")
        value = inputs[0]
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type != 1:
            raise _fail(self.where, f"input '{_short(value.name)}' is not a float32 tensor")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shape = tuple(dims[1:])
        accepted = {(1, 28, 28): ((28, 28, 1), (2, 0, 1)), (28, 28, 1): ((28, 28, 1), (0, 1, 2)),
                    (28, 28): ((28, 28, 1), None), (784,): ((784,), None)}
        if not dims or shape not in accepted:
            raise _fail(self.where, f"input '{_short(value.name)}' has shape {_short(str(dims))}, expected "
                        "(N, 1, 28, 28), (N, 28, 28, 1), (N, 28, 28) or (N, 784)")
        self.input_engine_shape, order = accepted[shape]
        self.input_shape = shape
        self.fixed_batch = dims[0] if dims[0] else None
        if self.fixed_batch is not None and self.fixed_batch > MAX_FIXED_BATCH:
            raise _fail(self.where, f"input '{_short(value.name)}' fixes the batch size to {self.fixed_batch}, "
                        f"expected at most {MAX_FIXED_BATCH} (or a symbolic batch size)")
        self.batch = self.fixed_batch or PROBE_BATCH
        self.engine_shape = self.input_engine_shape
        positions = np.arange(784, dtype=np.int64).reshape(self.input_engine_shape)
        index = positions.transpose(order) if order else positions.reshape(shape)
        self.values[value.name] = _Tensor(self.head, shape, index)

    def _convert_node(self, position: int, node: Any) -> None:
        where = f"{self.where}: node {position} '{_short(node.name)}' ({_short(node.op_type)})"
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
                raise OnnxImportError(f"{where}: reads '{_short(name)}', which no earlier node produces (the graph "
                                      "must be topologically sorted, and only the first output of a node is "
                                      "available)")
        dynamic = [value for value in inputs if isinstance(value, _Tensor)]
        op = node.op_type
        try:
            if not dynamic or op == "Shape":
                handler = _CONSTANT_OPS.get(op)
                if handler is None and op in _TENSOR_OPS:
                    raise OnnxImportError(f"all its inputs are constants, which {op} supports only on tensors "
                                          "computed from the graph input; constant ops: "
                                          f"{', '.join(sorted(_CONSTANT_OPS))}")
                if handler is None:
                    raise _unsupported(op)
                outputs = handler(self, _Node(node, where, self.opset), inputs)
            else:
                handler = _TENSOR_OPS.get(op)
                if handler is None:
                    raise _unsupported(op)
                for value in dynamic:
                    if value.final is not None and op not in _PASS_THROUGH:
                        raise OnnxImportError(f"comes after the output {value.final}, expected the {value.final} "
                                              "to be the last operation")
                outputs = handler(self, _Node(node, where, self.opset), inputs)
        except OnnxImportError as error:
            message = str(error)
            raise OnnxImportError(message if message.startswith(self.where) else f"{where}: {message}") from None
        except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError, MemoryError) as error:
            raise OnnxImportError(f"{where}: cannot be evaluated ({type(error).__name__}: {str(error)[:200]})") \
                from None
        for name, value in zip(node.output, outputs):
            if isinstance(value, _Tensor) and value.expr.depth > MAX_ELEMENTWISE_DEPTH:
                raise OnnxImportError(f"{where}: more than {MAX_ELEMENTWISE_DEPTH} element-wise operations in a row; "
                                      "expected them to be activations or constants folded between layers")
            if name in self.values:
                raise OnnxImportError(f"{where}: output '{_short(name)}' is produced twice")
            if name:
                if isinstance(value, np.ndarray) and value.nbytes > MAX_TENSOR_BYTES:
                    raise OnnxImportError(f"{where}: output '{_short(name)}' would need {value.nbytes} bytes")
                self.values[name] = value

    # -- run-time tensors: layout, materialisation and layers

    def tensor(self, value: Any, node: _Node) -> _Tensor:
        if not isinstance(value, _Tensor):
            raise node.fail("expected its data input to be computed from the graph input, found a constant")
        return value

    def with_layout(self, tensor: _Tensor, shape: tuple[int, ...], index: np.ndarray) -> _Tensor:
        return _Tensor(tensor.head, tuple(int(d) for d in shape), index, tensor.expr, tensor.final)

    def materialise(self, tensor: _Tensor, node: _Node) -> _Tensor:
        """Apply the tensor's pending element-wise operations to the engine's output; returns it as the head."""
        self.check_current(tensor, node)
        if tensor.expr is _X:
            return tensor
        self.apply_steps(self.steps(tensor.expr, node), node, vector=len(tensor.shape) == 1)
        self.head += 1
        return _Tensor(self.head, tensor.shape, tensor.index, _X, tensor.final)

    def check_current(self, tensor: _Tensor, node: _Node) -> None:
        if tensor.head != self.head:
            raise node.fail("reads a tensor computed before a later layer; the graph branches (e.g. a residual "
                            "connection), and only a chain of layers is supported")

    def spatial(self, tensor: _Tensor, node: _Node) -> tuple[_Tensor, int, int, int]:
        """A (C, H, W) tensor whose layout is the engine's NHWC map, materialised; and its (h, w, c)."""
        tensor = self.materialise(tensor, node)
        if len(tensor.shape) != 3 or len(self.engine_shape) != 3:
            raise node.fail(f"input has shape (N, {', '.join(map(str, tensor.shape))}), expected (N, C, H, W)")
        c, h, w = tensor.shape
        if self.engine_shape != (h, w, c) or not np.array_equal(tensor.index, _nchw_index(h, w, c)):
            raise node.fail("input is not in NCHW order (it was transposed); expected (N, C, H, W)")
        return tensor, h, w, c

    def emit(self, node: _Node, layer: dict[str, Any], params: dict[str, np.ndarray],
             engine_shape: tuple[int, ...], shape: tuple[int, ...], index: np.ndarray, name: str = "") -> _Tensor:
        """Append a layer and return its output as the new head."""
        _check_size(node, engine_shape)
        name = self._layer_name_for(name) if name else self._layer_name(node)
        self.layers.append({"type": layer.pop("type"), "name": name, **layer})
        for key, value in params.items():
            self.arrays[f"{name}/{key}"] = value
        self.head += 1
        self.engine_shape = engine_shape
        return _Tensor(self.head, shape, index)

    def _layer_name(self, node: _Node) -> str:
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

    def dense(self, node: _Node, tensor: _Tensor, kernel: np.ndarray, bias: np.ndarray | None) -> list[_Tensor]:
        tensor = self.materialise(tensor, node)
        if len(tensor.shape) != 1 or kernel.shape[0] != tensor.shape[0]:
            raise node.fail(f"multiplies (N, {', '.join(map(str, tensor.shape))}) by a ({kernel.shape[0]}, "
                            f"{kernel.shape[1]}) matrix, expected (N, {kernel.shape[0]}) (flatten first)")
        if len(self.engine_shape) > 1:
            self.flatten_engine(node)
            tensor = _Tensor(self.head, tensor.shape, tensor.index)
        # The engine's vector is the NHWC flattening; row i of the ONNX matrix meets engine element index[i].
        rows = np.empty_like(kernel)
        rows[tensor.index] = kernel
        params = {"kernel": rows} | ({} if bias is None else {"bias": bias})
        units = kernel.shape[1]
        layer = {"type": "dense", "units": units, "activation": "linear", "use_bias": bias is not None}
        return [self.emit(node, layer, params, (units,), (units,), np.arange(units, dtype=np.int64))]

    def flatten_engine(self, node: _Node) -> None:
        """Append a flatten layer: the engine's flat output, and so every tensor's index, stays the same."""
        self.emit(node, {"type": "flatten"}, {}, (math.prod(self.engine_shape),), (), np.empty(0), name="flatten")

    def map_output(self, node: _Node, layer: dict[str, Any], params: dict[str, np.ndarray],
                   h: int, w: int, c: int) -> list[_Tensor]:
        _check_size(node, (h, w, c))
        return [self.emit(node, layer, params, (h, w, c), (c, h, w), _nchw_index(h, w, c))]

    def engine_constant(self, tensor: _Tensor, value: np.ndarray, node: _Node) -> np.ndarray:
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

    def combine(self, node: _Node, op: str, a: _Tensor, b: _Tensor) -> _Tensor:
        """Two tensors meeting element-wise: allowed only as functions of the same output in the same layout."""
        self.check_current(a, node)
        self.check_current(b, node)
        if a.shape != b.shape or not np.array_equal(a.index, b.index):
            raise node.fail(f"combines tensors of shapes {a.shape} and {b.shape} in different layouts")
        return _Tensor(a.head, a.shape, a.index, _Expr(op, (a.expr, b.expr)))

    # -- element-wise operations: recognised, then applied

    def steps(self, expr: _Expr, node: _Node) -> list[tuple]:
        """An element-wise expression as a list of ("affine", scale, shift) and ("activation", a) steps."""
        if expr is _X:
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

    def _product_activation(self, expr: _Expr) -> tuple[_Expr, str] | None:
        factors, constant = _factors(expr)
        if len(factors) != 2 or not _is_uniform(constant):
            return None
        constant = float(np.ravel(constant)[0])
        for inner, other in (factors, factors[::-1]):
            if (other.op == "activation" and other.activation == "sigmoid" and other.args[0] is inner
                    and _close(constant, 1.0)):
                return inner, "silu"
            if _close(constant, 0.5) and _is_erf_term(other, inner):
                return inner, "gelu"
        return None

    def apply_steps(self, steps: list[tuple], node: _Node, vector: bool = False) -> None:
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

    def _apply_affine(self, scale: np.ndarray, shift: np.ndarray, node: _Node) -> None:
        if np.all(scale == 1.0) and np.all(shift == 0.0):
            return
        if not self.layers:
            if not (_is_uniform(scale) and _is_uniform(shift)):
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

    def _per_channel(self, value: np.ndarray, node: _Node) -> np.ndarray:
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

    def _finish_output(self, result: _Tensor) -> None:
        where = _Node(None, f"{self.where}: the graph output '{self.graph.output[0].name}'", self.opset)
        result = self.materialise(result, where)
        if result.final is None:
            self.check_classes(result, where)
            self.output = _fold.append_softmax(self.layers)
        else:
            self.output = _fold.finish_with_softmax(self.layers, self.graph.name)

    def check_classes(self, tensor: _Tensor, node: _Node) -> None:
        if (len(tensor.shape) != 1 or tensor.shape[0] < 1 or len(self.engine_shape) != 1
                or not np.array_equal(tensor.index, np.arange(tensor.shape[0]))):
            raise node.fail(f"the scores have shape (N, {', '.join(map(str, tensor.shape))}), expected "
                            "(N, classes) from a Gemm/MatMul or a global pooling")
        if not self.layers:
            raise node.fail("the model computes nothing from its input")

    def _fold_input_normalisation(self) -> None:
        pixels = 28 * 28
        lo, hi = _fold.fold_input_map(self.layers, self.arrays, self.input_shape,
                                      np.full(pixels, self.input_scale), np.full(pixels, self.input_shift))
        if not max(abs(lo), abs(hi)) <= MAX_INPUT_RANGE:
            raise _fail(self.where, f"the input normalisation maps pixels to [{lo}, {hi}], expected within "
                        f"+-{MAX_INPUT_RANGE:g}")
        self.input_range = [lo, hi]


def _check_size(node: _Node, shape: tuple[int, ...]) -> None:
    if math.prod(shape) > MAX_ACTIVATION_VALUES:
        raise node.fail(f"output shape {shape} exceeds {MAX_ACTIVATION_VALUES} values per image")


def _per_channel_or_none(value: np.ndarray, engine_shape: tuple[int, ...]) -> np.ndarray | None:
    """A scalar or engine-shaped constant as one value per channel (the last axis), or None if it varies."""
    channels = engine_shape[-1]
    if value.ndim == 0:
        return np.full(channels, float(value))
    rows = value.reshape(-1, channels)
    return rows[0].copy() if (rows == rows[0]).all() else None


def _nchw_index(h: int, w: int, c: int) -> np.ndarray:
    """(c, h, w) int64: where element (c, y, x) of an NCHW map sits in the engine's flat NHWC map."""
    return np.arange(h * w * c, dtype=np.int64).reshape(h, w, c).transpose(2, 0, 1)


def _factors(expr: _Expr) -> tuple[list[_Expr], Any]:
    """A product flattened: its non-constant factors, and the product of its constants."""
    if expr.op == "mul":
        (left, c_left), (right, c_right) = _factors(expr.args[0]), _factors(expr.args[1])
        return left + right, c_left * c_right
    if expr.op == "const":
        return [], expr.value
    return [expr], 1.0


def _is_erf_term(expr: _Expr, inner: _Expr) -> bool:
    """Whether `expr` is 1 + erf(inner / sqrt(2)), in either order of the sum."""
    if expr.op != "add":
        return False
    erf = next((a for a in expr.args if a.op == "erf"), None)
    one = next((a for a in expr.args if a.op == "const"), None)
    if erf is None or one is None or not _is_uniform(one.value) or not _close(float(np.ravel(one.value)[0]), 1.0):
        return False
    argument = erf.args[0]
    if argument.op != "mul":
        return False
    scale = next((a for a in argument.args if a.op == "const"), None)
    return (scale is not None and inner in argument.args and _is_uniform(scale.value)
            and _close(float(np.ravel(scale.value)[0]), 1.0 / math.sqrt(2.0)))


def _is_uniform(value: Any) -> bool:
    value = np.asarray(value)
    return bool((value == np.ravel(value)[0]).all())


def _close(value: float, expected: float) -> bool:
    return abs(value - expected) <= RELATIVE_TOLERANCE * abs(expected)


def _unsupported(op: str) -> OnnxImportError:
    return OnnxImportError(f"op '{_short(op)}' is not supported; supported ops: {', '.join(SUPPORTED_OPS)}")


def _short(text: str, limit: int = 80) -> str:
    """A name from the file, cut for an error message (a hostile file may make it any length)."""
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------------------------------------
# One node's attributes and constant inputs


class _Node:
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
            return _to_array(attribute.t, self.where)
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
        if isinstance(value, _Tensor):
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


def _axes(node: _Node, axes: list[int] | None, rank: int, what: str) -> list[int]:
    normalised = sorted(a + rank if a < 0 else a for a in (axes or []))
    if any(not 0 <= a < rank for a in normalised) or len(set(normalised)) != len(normalised):
        raise node.fail(f"{what} {axes} are not distinct axes of a rank-{rank} tensor")
    return normalised


def _reshape_target(node: _Node, shape: tuple[int, ...], target: Any, allowzero: bool) -> tuple[int, ...]:
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


def _pads(node: _Node, size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int]):
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


def _window_settings(node: _Node, h: int, w: int, kernel: tuple[int, int], extra=((0, 0), (0, 0))):
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


# ---------------------------------------------------------------------------------------------------------
# Handlers: constant folding


def _const_identity(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    return [node.constant(inputs, 0, "input")]


def _const_constant(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    attributes = node.attributes
    if len(attributes) != 1:
        raise node.fail(f"has attributes {sorted(attributes)}, expected exactly one value")
    name = next(iter(attributes))
    kinds = {"value": "tensor", "value_float": "float", "value_floats": "floats", "value_int": "int",
             "value_ints": "ints"}
    if name not in kinds:
        raise node.fail(f"attribute '{_short(name)}' is not supported; expected one of {', '.join(kinds)}")
    value = node.attr(name, kinds[name])
    dtype = np.int64 if kinds[name] in ("int", "ints") else np.float32
    return [np.asarray(value, dtype=dtype) if not isinstance(value, np.ndarray) else value]


def _const_shape(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    value = inputs[0]
    shape = (c.batch, *value.shape) if isinstance(value, _Tensor) else node.constant(inputs, 0, "input").shape
    start, end = node.attr("start", "int", 0), node.attr("end", "int", None)
    return [np.array(shape[start:end], dtype=np.int64)]


def _const_gather(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    data, indices = node.constant(inputs, 0, "data"), np.asarray(node.constant(inputs, 1, "indices"))
    axis = _axes(node, [node.attr("axis", "int", 0)], max(data.ndim, 1), "axis")[0]
    if indices.dtype.kind not in "iu" or data.ndim == 0:
        raise node.fail("expects integer indices into a tensor of rank 1 or more")
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise node.fail(f"indices {indices.ravel()[:8].tolist()} are outside axis {axis} of size {size}")
    if indices.size * (data.size // max(size, 1)) > MAX_TENSOR_BYTES // 8:
        raise node.fail("the gathered tensor is too large")
    return [np.take(data, indices, axis=axis)]


def _const_unsqueeze(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    axes = node.ints(inputs, 1, "axes", 13, "axes") or []
    axes = _axes(node, axes, data.ndim + len(axes), "axes")
    if not axes or data.ndim + len(axes) > MAX_RANK:
        raise node.fail(f"axes {axes} are missing or the result exceeds rank {MAX_RANK}")
    return [np.expand_dims(data, tuple(axes))]


def _const_squeeze(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    axes = node.ints(inputs, 1, "axes", 13, "axes")
    axes = _axes(node, axes, data.ndim, "axes") if axes else [a for a, d in enumerate(data.shape) if d == 1]
    if any(data.shape[a] != 1 for a in axes):
        raise node.fail(f"squeezes axes {axes} of shape {data.shape}, which are not all of size 1")
    return [np.squeeze(data, tuple(axes))]


def _const_concat(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    parts = [np.asarray(node.constant(inputs, i, "input")) for i in range(len(inputs))]
    if not parts or parts[0].ndim == 0:
        raise node.fail("concatenates nothing, or scalars")
    axis = node.attr("axis", "int", None)
    if axis is None:
        raise node.fail("has no axis attribute")
    axis = _axes(node, [axis], parts[0].ndim, "axis")[0]
    return [np.concatenate(parts, axis=axis)]


def _const_reshape(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    target = node.constant(inputs, 1, "shape")
    return [data.reshape(_reshape_target(node, data.shape, target, bool(node.attr("allowzero", "int", 0))))]


def _const_cast(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    dtype = _DTYPES.get(node.attr("to", "int", 0))
    if dtype is None:
        raise node.fail(f"casts to type {node.attr('to', 'int', 0)}, expected a number or bool type")
    with np.errstate(all="ignore"):
        return [np.asarray(node.constant(inputs, 0, "input")).astype(dtype)]


def _const_slice(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
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
    for axis, start, end, step in zip(_axes(node, axes, data.ndim, "axes") if axes else [], starts, ends, steps):
        index[axis] = slice(start, end, step)
    return [data[tuple(index)]]


def _const_constant_of_shape(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    shape = np.asarray(node.constant(inputs, 0, "shape"))
    value = node.attr("value", "tensor", np.zeros(1, np.float32))
    if shape.ndim != 1 or shape.dtype.kind not in "iu" or shape.size > MAX_RANK or (shape < 0).any() or \
            value.size != 1:
        raise node.fail(f"shape {shape.tolist()!r:.80} is not up to {MAX_RANK} sizes, or the value is not one number")
    if math.prod(int(d) for d in shape) * value.itemsize > MAX_TENSOR_BYTES:
        raise node.fail(f"shape {shape.tolist()} is too large")
    return [np.full(tuple(int(d) for d in shape), value.ravel()[0], dtype=value.dtype)]


def _const_transpose(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    perm = node.attr("perm", "ints", list(range(data.ndim))[::-1])
    if sorted(perm) != list(range(data.ndim)):
        raise node.fail(f"perm {perm} is not a permutation of the {data.ndim} axes")
    return [data.transpose(perm)]


def _const_flatten(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    data = np.asarray(node.constant(inputs, 0, "data"))
    axis = node.attr("axis", "int", 1)
    axis = axis + data.ndim if axis < 0 else axis
    if not 0 <= axis <= data.ndim:
        raise node.fail(f"axis {axis} is outside a rank-{data.ndim} tensor")
    return [data.reshape(math.prod(data.shape[:axis]), -1 if data.size else 0)]


def _elementwise(function: Callable[..., np.ndarray]) -> Callable:
    def handler(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
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


# ---------------------------------------------------------------------------------------------------------
# Handlers: tensors the engine computes


def _pass_through(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    if node.proto.op_type == "Cast" and node.attr("to", "int", 0) != 1:
        raise node.fail("casts a computed tensor to a type other than float32")
    if node.proto.op_type == "Dropout" and len(inputs) > 2 and inputs[2] is not None and \
            np.asarray(node.constant(inputs, 2, "training_mode")).any():
        raise node.fail("runs in training mode; expected inference (training_mode false)")
    return [c.tensor(inputs[0], node)]


def _flatten(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    rank = len(tensor.shape) + 1
    axis = node.attr("axis", "int", 1)
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis <= rank or math.prod(tensor.shape[:axis - 1]) != 1:
        raise node.fail(f"axis {node.attr('axis', 'int', 1)} would fold the batch axis into another one; "
                        "expected axis 1")
    shape = (math.prod(tensor.shape[axis - 1:]),)
    return [c.with_layout(tensor, shape, tensor.index.reshape(shape))]


def _reshape(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    full = _reshape_target(node, (c.batch, *tensor.shape), node.constant(inputs, 1, "shape"),
                           bool(node.attr("allowzero", "int", 0)))
    if not full or full[0] != c.batch:
        raise node.fail(f"reshapes (N, {', '.join(map(str, tensor.shape))}) to {list(full)}, which mixes the batch "
                        "axis with the others; expected (N, ...)")
    return [c.with_layout(tensor, full[1:], tensor.index.reshape(full[1:]))]


def _transpose(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    rank = len(tensor.shape) + 1
    perm = node.attr("perm", "ints", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise node.fail(f"perm {perm} moves the batch axis or is not a permutation of {rank} axes")
    inner = [p - 1 for p in perm[1:]]
    return [c.with_layout(tensor, tuple(tensor.shape[p] for p in inner), tensor.index.transpose(inner))]


def _squeeze_or_unsqueeze(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    full = [c.batch, *tensor.shape]
    axes = node.ints(inputs, 1, "axes", 13, "axes")
    if node.proto.op_type == "Squeeze":
        axes = _axes(node, axes, len(full), "axes") if axes else [a for a in range(1, len(full)) if full[a] == 1]
        if any(full[a] != 1 or a == 0 for a in axes):
            raise node.fail(f"squeezes axes {axes} of (N, {', '.join(map(str, tensor.shape))}); expected axes of size "
                            "1 other than the batch axis")
        shape = [d for a, d in enumerate(full) if a not in axes]
    else:
        axes = _axes(node, axes, len(full) + len(axes or []), "axes")
        if not axes or 0 in axes or len(full) + len(axes) > MAX_RANK:
            raise node.fail(f"axes {axes}: expected new axes after the batch axis, up to rank {MAX_RANK}")
        shape = list(full)
        for a in axes:
            shape.insert(a, 1)
    return [c.with_layout(tensor, tuple(shape[1:]), tensor.index.reshape(shape[1:]))]


def _binary(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    op = node.proto.op_type
    if len(inputs) != 2:
        raise node.fail(f"has {len(inputs)} inputs, expected 2")
    a, b = inputs
    if isinstance(a, _Tensor) and isinstance(b, _Tensor):
        if op != "Mul":
            raise node.fail(f"{op.lower()}s two computed tensors (a branch such as a residual connection), which "
                            "is not supported")
        return [c.combine(node, "mul", a, b)]
    tensor, constant, tensor_first = (a, b, True) if isinstance(a, _Tensor) else (b, a, False)
    c.check_current(tensor, node)
    value = c.engine_constant(tensor, node.float_constant(inputs, 1 if tensor_first else 0, "constant"), node)
    x = tensor.expr
    if op == "Add":
        expr = _Expr("add", (x, _Expr("const", value=value)))
    elif op == "Mul":
        expr = _Expr("mul", (x, _Expr("const", value=value)))
    elif op == "Sub":
        expr = _Expr("add", (x, _Expr("const", value=-value))) if tensor_first else \
            _Expr("add", (_Expr("mul", (x, _Expr("const", value=np.array(-1.0)))), _Expr("const", value=value)))
    else:
        if not tensor_first:
            raise node.fail("divides a constant by a computed tensor, which is not supported")
        if (value == 0).any():
            raise node.fail("divides by a constant that holds zeros")
        expr = _Expr("mul", (x, _Expr("const", value=1.0 / value)))
    return [_Tensor(tensor.head, tensor.shape, tensor.index, expr)]


def _activation(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor = c.tensor(inputs[0], node)
    c.check_current(tensor, node)
    op = node.proto.op_type
    if op == "Erf":
        return [_Tensor(tensor.head, tensor.shape, tensor.index, _Expr("erf", (tensor.expr,)))]
    return [_Tensor(tensor.head, tensor.shape, tensor.index,
                    _Expr("activation", (tensor.expr,), activation=_activation_of(node, inputs)))]


def _activation_of(node: _Node, inputs: list[Any]) -> Any:
    op = node.proto.op_type
    if op in ("Relu", "Tanh", "Sigmoid", "Softplus"):
        return op.lower()
    if op == "LeakyRelu":
        return {"name": "relu", "negative_slope": node.attr("alpha", "float", 0.01)}
    if op == "PRelu":
        slope = node.float_constant(inputs, 1, "slope")
        if slope.size == 0 or not _is_uniform(slope) or not slope.ravel()[0] >= 0:
            raise node.fail(f"slope of shape {slope.shape} is not one non-negative number; only a single slope "
                            "(nn.PReLU() with num_parameters=1) is supported")
        return {"name": "relu", "negative_slope": float(slope.ravel()[0])}
    if op == "Elu":
        alpha = node.attr("alpha", "float", 1.0)
        return "elu" if alpha == 1.0 else {"name": "elu", "alpha": alpha}
    if op == "Selu":
        alpha, gamma = node.attr("alpha", "float", 1.6732632423543772), node.attr("gamma", "float",
                                                                                   1.0507009873554805)
        if not (_close(alpha, 1.6732632423543772) and _close(gamma, 1.0507009873554805)):
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


def _softmax(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor = c.materialise(c.tensor(inputs[0], node), node)
    axis = node.attr("axis", "int", 1 if node.opset < 13 else -1)
    if axis not in (1, -1):
        raise node.fail(f"axis {axis}, expected the class axis of (N, classes) (1 or -1)")
    c.check_classes(tensor, node)
    c.apply_activation(_fold.SOFTMAX if node.proto.op_type == "Softmax" else _fold.LOG_SOFTMAX)
    c.head += 1
    return [_Tensor(c.head, tensor.shape, tensor.index, final=node.proto.op_type)]


def _gemm(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
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


def _matmul(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    if not isinstance(inputs[0], _Tensor):
        raise node.fail("multiplies a constant by the data (W @ x); expected the data first (x @ W)")
    weight = node.float_constant(inputs, 1, "B")
    if weight.ndim != 2:
        raise node.fail(f"B has shape {weight.shape}, expected a matrix")
    return c.dense(node, inputs[0], weight, None)


def _conv(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
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
    strides, padding, (h_out, w_out) = _window_settings(node, h, w, (kh, kw), extra)
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


def _pool(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.fail("its Indices output is used, which is not supported")
    kernel = node.attr("kernel_shape", "ints", None)
    if kernel is None or len(kernel) != 2:
        raise node.fail(f"kernel_shape {kernel}, expected two sizes (2-D pooling)")
    strides, padding, (h_out, w_out) = _window_settings(node, h, w, tuple(kernel))
    layer = {"type": "maxpool2d", "pool_size": kernel, "strides": strides, "padding": padding}
    if node.proto.op_type == "AveragePool":
        layer.update(type="avgpool2d", count_include_pad=bool(node.attr("count_include_pad", "int", 0)))
    elif node.attr("storage_order", "int", 0) not in (0, 1):
        raise node.fail("storage_order must be 0 or 1")
    return c.map_output(node, layer, {}, h_out, w_out, channels)


def _global_pool(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    kind = "global_avgpool2d" if node.proto.op_type == "GlobalAveragePool" else "global_maxpool2d"
    index = np.arange(channels, dtype=np.int64).reshape(channels, 1, 1)
    return [c.emit(node, {"type": kind}, {}, (channels,), (channels, 1, 1), index)]


def _pad(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
    tensor, h, w, channels = c.spatial(c.tensor(inputs[0], node), node)
    mode = node.attr("mode", "string", "constant")
    if node.opset < 11:
        pads, value = node.attr("pads", "ints", None), node.attr("value", "float", 0.0)
    else:
        pads = node.ints(inputs, 1, "", 0, "pads")
        constant = node.float_constant(inputs, 2, "constant_value", required=False)
        value = 0.0 if constant is None or constant.size == 0 else float(constant.ravel()[0])
    axes = node.ints(inputs, 3, "", 0, "axes") if node.opset >= 18 else None
    axes = _axes(node, axes, 4, "axes") if axes is not None else [0, 1, 2, 3]
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


def _batch_normalization(c: _Converter, node: _Node, inputs: list[Any]) -> list[Any]:
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
    scaled = _Expr("mul", (x, _Expr("const", value=c.engine_constant(tensor, scale.reshape(broadcast), node))))
    shift = c.engine_constant(tensor, (beta - mean * scale).reshape(broadcast), node)
    return [_Tensor(tensor.head, tensor.shape, tensor.index, _Expr("add", (scaled, _Expr("const", value=shift))))]


_CONSTANT_OPS: dict[str, Callable] = {
    "Constant": _const_constant, "Identity": _const_identity, "Dropout": _const_identity,
    "Shape": _const_shape, "Gather": _const_gather, "Unsqueeze": _const_unsqueeze, "Squeeze": _const_squeeze,
    "Concat": _const_concat, "Reshape": _const_reshape, "Cast": _const_cast, "Slice": _const_slice,
    "ConstantOfShape": _const_constant_of_shape, "Transpose": _const_transpose, "Flatten": _const_flatten,
    "Add": _elementwise(np.add), "Sub": _elementwise(np.subtract), "Mul": _elementwise(np.multiply),
    "Div": _elementwise(_divide), "Neg": _elementwise(np.negative), "Sqrt": _elementwise(np.sqrt),
    "Reciprocal": _elementwise(np.reciprocal),
}
_TENSOR_OPS: dict[str, Callable] = {
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
_PASS_THROUGH = ("Identity", "Dropout", "Cast")
SUPPORTED_OPS = tuple(sorted(set(_TENSOR_OPS) | set(_CONSTANT_OPS)))


# ---------------------------------------------------------------------------------------------------------
# Reference images and the parity check


def _normalised(images: np.ndarray, mean: float | None, std: float | None) -> np.ndarray:
    """What the ONNX model takes: (pixel - mean) / std, float32."""
    return ((images.astype(np.float64) - (mean or 0.0)) / (1.0 if std is None else std)).astype(np.float32)


def _probabilities(outputs: np.ndarray, output: str) -> np.ndarray:
    if output == OUTPUT_SOFTMAX:
        return outputs
    if output == OUTPUT_LOG_SOFTMAX:
        return np.exp(outputs)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
