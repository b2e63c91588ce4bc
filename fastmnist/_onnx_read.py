"""Reading an ONNX file for the importer: the protobuf parsed, and its tensors as NumPy arrays, with every size
checked before anything is allocated (the file is untrusted) and tensors stored outside the file refused.

onnx is imported inside the functions, so ``import fastmnist`` stays light.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import format as weights_format
from .errors import OnnxImportError

MAX_FILE_BYTES = 1 << 30
MAX_TENSOR_BYTES = weights_format.MAX_ARRAY_BYTES
MAX_RANK = 8

# ONNX TensorProto data types the importer reads, and where their values live when raw_data is empty.
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
          10: np.float16, 11: np.float64}
_TYPED_FIELDS = {1: "float_data", 11: "double_data", 7: "int64_data"}  # the others use int32_data
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def read_model(source: Any) -> tuple[Any, str]:
    """The ``onnx.ModelProto`` in ``source`` (a path, bytes or a ModelProto) and how messages name it.

    Refuses a file over 1 GiB, a protobuf that does not parse, a graph without nodes, and tensors stored outside
    the file (``OnnxImportError``).
    """
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
        name = short(tensor.name)
        if tensor.data_location == _EXTERNAL or len(tensor.external_data):
            raise OnnxImportError(f"{where}: {owner} tensor '{name}' keeps its data in an external file; "
                                  "only self-contained models are accepted (save with all tensors inside)")

    if len(graph.sparse_initializer):
        raise OnnxImportError(f"{where}: graph '{short(graph.name)}' has sparse initializers, which are not supported")
    for tensor in graph.initializer:
        check(tensor, "initializer")
    for node in graph.node:
        for attribute in node.attribute:
            owner = f"node '{short(node.name)}' ({short(node.op_type)}) attribute '{short(attribute.name)}'"
            tensors = [attribute.t] if attribute.HasField("t") else []
            for sparse in ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(
                    attribute.sparse_tensors):
                tensors += [sparse.values, sparse.indices]
            for tensor in [*tensors, *attribute.tensors]:
                check(tensor, owner)
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                _check_no_external_data(subgraph, where)


def to_array(tensor: Any, where: str) -> np.ndarray:
    """A TensorProto as a NumPy array, with its dims and data size checked before anything is allocated."""
    name = short(tensor.name)
    dtype = DTYPES.get(tensor.data_type)
    if dtype is None:
        raise OnnxImportError(f"{where}: tensor '{name}' has data type {tensor.data_type}, expected one of "
                              "float, double, float16, int8/16/32/64, uint8, bool")
    dims = tuple(tensor.dims)
    if len(dims) > MAX_RANK or any(d < 0 for d in dims):
        raise OnnxImportError(f"{where}: tensor '{name}' has dims {short(str(dims))}, expected at most {MAX_RANK} "
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


def short(text: str, limit: int = 80) -> str:
    """A name from the file, cut for an error message (a hostile file may make it any length)."""
    return text if len(text) <= limit else text[:limit] + "..."
