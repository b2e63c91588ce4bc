"""An ONNX graph of a fastmnist model, built straight from its checked spec (no exporter in between).

The graph takes `images` (batch, *input shape) float32 in [0, 1] and returns `probabilities` (batch, classes).
fastmnist's activations are NHWC, ONNX's Conv and MaxPool are NCHW: the graph transposes to NCHW before the
first of them and back to NHWC before a flatten, so that the flattened order (and thus every dense kernel)
stays the one Keras trained. TensorFlow's "same" padding becomes explicit pads, the extra row/column at the
end, exactly as TensorFlow splits it.
"""

from __future__ import annotations

import numpy as np

from fastmnist.layers import BatchNorm, Conv2D, Dense, Flatten, Layer, MaxPool2D, activation_of, output_size
from fastmnist.spec import ModelSpec, PlannedLayer

OPSET = 17
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def onnx_model(model_spec: ModelSpec):
    """The model as an onnx.ModelProto (checked by onnx.checker)."""
    import onnx
    from onnx import TensorProto, helper

    graph = _GraphBuilder()
    x = "images"
    lo, hi = model_spec.input_range
    if (lo, hi) != (0.0, 1.0):
        x = graph.node("Mul", x, graph.constant("input_scale", np.float32(hi - lo)))
        x = graph.node("Add", x, graph.constant("input_offset", np.float32(lo)))
    channels_first = False  # whether x, when it has rank 4, is NCHW
    for planned in model_spec.layers:
        x, channels_first = _add_layer(graph, planned, x, channels_first)
    graph.node("Identity", x, output="probabilities")

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", *model_spec.input_shape])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                  ["batch", model_spec.num_classes])
    onnx_graph = helper.make_graph(graph.nodes, "fastmnist", [images], [probabilities], graph.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    # The oldest IR that carries the opset, so that onnxruntime builds older than the onnx package load it.
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="fastmnist-benchmarks",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


class _GraphBuilder:
    """Collects nodes and initializers, naming each intermediate tensor uniquely."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def node(self, op: str, *inputs: str, output: str | None = None, **attributes) -> str:
        from onnx import helper

        output = output or f"t{len(self.nodes)}_{op}"
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attributes))
        return output

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name


def _add_layer(graph: _GraphBuilder, planned: PlannedLayer, x: str, channels_first: bool) -> tuple[str, bool]:
    layer, p = planned.layer, planned.params
    rank = len(planned.input_shape) + 1  # with the batch axis
    if isinstance(layer, (Conv2D, MaxPool2D)):
        if not channels_first:
            x, channels_first = graph.node("Transpose", x, perm=TO_NCHW), True
        window = layer.kernel_size if isinstance(layer, Conv2D) else layer.pool_size
        attributes = {"kernel_shape": list(window), "strides": list(layer.strides),
                      "pads": _explicit_pads(planned.input_shape, window, layer.strides, layer.padding)}
        if isinstance(layer, MaxPool2D):
            return graph.node("MaxPool", x, **attributes), channels_first
        weights = [graph.constant(f"{layer.name}/kernel", p["kernel"].transpose(3, 2, 0, 1))]  # HWIO -> OIHW
        if "bias" in p:
            weights.append(graph.constant(f"{layer.name}/bias", p["bias"]))
        x = graph.node("Conv", x, *weights, **attributes)
    elif isinstance(layer, Dense):
        kernel = graph.constant(f"{layer.name}/kernel", p["kernel"])
        x = (graph.node("Gemm", x, kernel, graph.constant(f"{layer.name}/bias", p["bias"])) if "bias" in p
             else graph.node("MatMul", x, kernel))
    elif isinstance(layer, BatchNorm):
        if rank == 4 and not channels_first:
            x, channels_first = graph.node("Transpose", x, perm=TO_NCHW), True
        if rank not in (2, 4):
            raise NotImplementedError(f"layer '{layer.name}': batchnorm on rank-{rank} input is not supported")
        statistics = [graph.constant(f"{layer.name}/{key}", p[key])
                      for key in ("gamma", "beta", "moving_mean", "moving_variance")]
        x = graph.node("BatchNormalization", x, *statistics, epsilon=layer.epsilon)
    elif isinstance(layer, Flatten):
        if rank == 4 and channels_first:
            x, channels_first = graph.node("Transpose", x, perm=TO_NHWC), False
        x = graph.node("Flatten", x, axis=1)
    return _activate(graph, layer, x, rank == 4 and channels_first), channels_first


def _activate(graph: _GraphBuilder, layer: Layer, x: str, channels_first: bool) -> str:
    activation = activation_of(layer).to_json()  # the name when its parameters are the defaults
    if activation == "relu":
        return graph.node("Relu", x)
    if activation == "elu":
        return graph.node("Elu", x, alpha=1.0)
    if activation == "softmax":  # over the channels, which NCHW keeps on axis 1
        return graph.node("Softmax", x, axis=1 if channels_first else -1)
    return x


def _explicit_pads(input_shape, window, strides, padding: str) -> list[int]:
    """ONNX pads [top, left, bottom, right] that reproduce TensorFlow's padding."""
    before, after = [], []
    for size, k, stride in zip(input_shape[:2], window, strides):
        out, start = output_size(size, k, stride, padding)
        total = max((out - 1) * stride + k - size, 0) if padding == "same" else 0
        before.append(start)
        after.append(total - start)
    return before + after
