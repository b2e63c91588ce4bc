"""Hand-built ONNX graphs for the importer's tests and fuzzer, and the independent executor's probabilities."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from fastmnist.onnx_import import OUTPUT_LOG_SOFTMAX, OUTPUT_SOFTMAX, run_executor


def ir_version(opset: int) -> int:
    """The oldest IR version that allows `opset`, so that any onnxruntime of the last years runs the model."""
    return 7 if opset <= 12 else 8 if opset <= 15 else 9 if opset <= 20 else 10


def make_model(nodes: list, initializers: dict[str, np.ndarray], input_shape=("N", 1, 28, 28), opset: int = 17,
               output: str = "y"):
    """A model with input 'x' of `input_shape` and output `output`; initializers keep their dtypes."""
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version(opset),
                             producer_name="fastmnist-tests")


def weights(shape: tuple[int, ...], seed: int, scale: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def executor_probabilities(conversion, images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """The independent executor's outputs for `images`, as probabilities (float64)."""
    inputs = ((images.astype(np.float64) - mean) / std).astype(np.float32).reshape(-1, *conversion.input_shape)
    outputs = run_executor(conversion.model, inputs, conversion.fixed_batch)
    if conversion.output == OUTPUT_SOFTMAX:
        return outputs
    if conversion.output == OUTPUT_LOG_SOFTMAX:
        return np.exp(outputs)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def node(op: str, inputs: list[str], output: str, **attributes):
    return helper.make_node(op, inputs, [output], name=output, **attributes)


def conv_net(opset: int = 17):
    """conv 1->3 (3x3, pad 1) relu, max pool 2, conv 3->4 (3x3, stride 2) tanh, flatten, Gemm 144->10: 8 nodes."""
    nodes = [
        node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]),
        node("Relu", ["c1"], "r1"),
        node("MaxPool", ["r1"], "p1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p1", "w2", "b2"], "c2", strides=[2, 2]),
        node("Tanh", ["c2"], "t2"),
        node("Flatten", ["t2"], "f"),
        node("Gemm", ["f", "w3", "b3"], "g", transB=1),
        node("Softmax", ["g"], "y", axis=1),
    ]
    initializers = {"w1": weights((3, 1, 3, 3), 1), "b1": weights((3,), 2), "w2": weights((4, 3, 3, 3), 3),
                    "b2": weights((4,), 4), "w3": weights((10, 144), 5, 0.1), "b3": weights((10,), 6)}
    return make_model(nodes, initializers, opset=opset)


def mlp(opset: int = 13):
    """Flatten, MatMul 784->16 + Add, Relu, Gemm 16->10 (logits)."""
    nodes = [
        node("Flatten", ["x"], "f"),
        node("MatMul", ["f", "w1"], "m1"),
        node("Add", ["m1", "b1"], "a1"),
        node("Relu", ["a1"], "r1"),
        node("Gemm", ["r1", "w2", "b2"], "y"),
    ]
    initializers = {"w1": weights((784, 16), 7, 0.1), "b1": weights((16,), 8), "w2": weights((16, 10), 9),
                    "b2": weights((10,), 10)}
    return make_model(nodes, initializers, opset=opset)
