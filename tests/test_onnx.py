"""The ONNX importer on hand-built graphs: every supported op and attribute reproduces the independent executor
(onnxruntime, else onnx's reference evaluator), the layout and the normalisation are folded as documented, and
everything else is refused with an error that names it."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="importing ONNX models needs onnx (pip install 'fastmnist[onnx]')")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from blob_images import blob_images  # noqa: E402
from onnx_graphs import conv_net, executor_probabilities, make_model, mlp, node, weights  # noqa: E402

import fastmnist  # noqa: E402
import fastmnist.reference  # noqa: E402
import fastmnist.spec  # noqa: E402
from fastmnist import onnx_import  # noqa: E402
from fastmnist.onnx_import import (OUTPUT_LOG_SOFTMAX, OUTPUT_LOGITS, OUTPUT_SOFTMAX, OnnxImportError,  # noqa: E402
                                   convert_onnx, import_onnx)

IMAGES = np.concatenate([blob_images(24), np.random.default_rng(1).random((8, 28, 28), dtype=np.float32)])
# Engine (float32) vs executor (float32, another summation order) on probabilities: both round each of a few
# hundred products per output to 2^-24, far below this.
ATOL = 1e-5


def check(model, tmp_path, mean=None, std=None, images=IMAGES):
    """Import `model`; check the NumPy reference of what it became, then the engine, against the independent
    executor's probabilities."""
    conversion = convert_onnx(model, mean=mean, std=std)
    expected = executor_probabilities(conversion, images, mean or 0.0, 1.0 if std is None else std)
    arrays = {name: value.astype(np.float32) for name, value in conversion.arrays.items()}
    planned = fastmnist.spec.parse(conversion.spec, arrays, "converted")
    np.testing.assert_allclose(fastmnist.reference.forward(planned, images), expected, atol=ATOL, rtol=0)
    path = import_onnx(model, tmp_path / "model.npz", mean=mean, std=std, reference_images=images)
    engine = fastmnist.load(path)
    np.testing.assert_allclose(engine.predict_proba(images), expected, atol=ATOL, rtol=0)
    return engine, conversion


def layer_types(conversion) -> list[str]:
    return [layer["type"] for layer in conversion.spec["layers"]]


def dense_head(flat: str, features: int):
    """Nodes and initializers that end a graph: Flatten(flat), Gemm to 10 logits."""
    return ([node("Flatten", [flat], "head_flat"), node("Gemm", ["head_flat", "head_w", "head_b"], "y")],
            {"head_w": weights((features, 10), 20, 1.0 / math.sqrt(features)), "head_b": weights((10,), 21)})


def conv_model(conv_attributes: dict, out_hw: tuple[int, int], filters: int = 4):
    """x -> Conv 3x3 (attributes) -> Flatten -> Gemm; `out_hw` is the conv's output size, worked out by the caller."""
    nodes = [node("Conv", ["x", "w", "b"], "conv", **conv_attributes)]
    tail, initializers = dense_head("conv", filters * out_hw[0] * out_hw[1])
    initializers.update(w=weights((filters, 1, 3, 3), 11), b=weights((filters,), 12))
    return make_model(nodes + tail, initializers)


# ---------------------------------------------------------------------------------------------------------
# Dense layers


@pytest.mark.parametrize("trans_b, alpha, beta, bias_shape", [
    (0, 1.0, 1.0, (10,)), (1, 1.0, 1.0, (10,)), (1, 0.5, 2.0, (1, 10)), (0, 1.5, 0.25, ()), (0, 1.0, 1.0, None)])
def test_gemm_attributes_reproduce_the_executor(tmp_path, trans_b, alpha, beta, bias_shape):
    weight = weights((10, 784) if trans_b else (784, 10), 3, 0.05)
    initializers = {"w": weight}
    inputs = ["f", "w"]
    if bias_shape is not None:
        initializers["b"] = weights(bias_shape, 4)
        inputs.append("b")
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", inputs, "y", transB=trans_b, alpha=alpha, beta=beta)]
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["flatten", "dense"]
    assert conversion.output == OUTPUT_LOGITS and engine.metadata["output"] == "logits, softmax appended"


def test_matmul_then_add_becomes_one_dense_layer_with_bias(tmp_path):
    engine, conversion = check(mlp(), tmp_path)
    assert layer_types(conversion) == ["flatten", "dense", "dense"]
    assert conversion.spec["layers"][1]["use_bias"] and conversion.spec["layers"][1]["activation"] == "relu"


def test_gemm_with_transposed_data_is_refused():
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w"], "y", transA=1)]
    with pytest.raises(OnnxImportError, match=r"node 1 'y' \(Gemm\): transA=1"):
        convert_onnx(make_model(nodes, {"w": weights((784, 10), 1)}))


# ---------------------------------------------------------------------------------------------------------
# Convolutions and the NCHW -> NHWC layout


@pytest.mark.parametrize("attributes, out_hw", [
    ({}, (26, 26)),
    ({"pads": [1, 1, 1, 1]}, (28, 28)),
    ({"pads": [0, 2, 1, 0], "strides": [2, 3]}, (14, 10)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (14, 14)),
    ({"auto_pad": "SAME_LOWER", "strides": [3, 3]}, (10, 10)),
    ({"auto_pad": "VALID", "strides": [2, 1]}, (13, 26)),
])
def test_conv_padding_and_strides_reproduce_the_executor(tmp_path, attributes, out_hw):
    engine, conversion = check(conv_model(attributes, out_hw=out_hw), tmp_path)
    assert layer_types(conversion) == ["conv2d", "flatten", "dense"]


def test_conv_kernel_becomes_hwio_and_the_dense_rows_follow_nhwc(tmp_path):
    engine, conversion = check(conv_model({}, filters=5, out_hw=(26, 26)), tmp_path)
    model = conversion.model
    onnx_weight = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    onnx_dense = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "head_w"))
    conv, _, dense = conversion.spec["layers"]
    np.testing.assert_array_equal(conversion.arrays[f"{conv['name']}/kernel"], onnx_weight.transpose(2, 3, 1, 0))
    # ONNX row (c, y, x) of the flattened NCHW map is engine row (y, x, c) of the NHWC one.
    rows = conversion.arrays[f"{dense['name']}/kernel"]
    c, y, x = 3, 7, 11
    np.testing.assert_array_equal(rows[(y * 26 + x) * 5 + c], onnx_dense[(c * 26 + y) * 26 + x])


def test_depthwise_conv_with_a_multiplier_reproduces_the_executor(tmp_path):
    nodes = [node("Conv", ["x", "w1"], "c1", pads=[1, 1, 1, 1]),
             node("Conv", ["c1", "w2", "b2"], "dw", group=3, strides=[2, 2]),
             node("Relu", ["dw"], "r")]
    tail, initializers = dense_head("r", 6 * 13 * 13)
    initializers.update(w1=weights((3, 1, 3, 3), 1), w2=weights((6, 1, 3, 3), 2), b2=weights((6,), 3))
    engine, conversion = check(make_model(nodes + tail, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "depthwise_conv2d", "flatten", "dense"]
    depthwise = conversion.spec["layers"][1]
    assert depthwise["depth_multiplier"] == 2 and depthwise["activation"] == "relu"


@pytest.mark.parametrize("attributes, weight_shape, message", [
    ({"dilations": [2, 2]}, (4, 1, 3, 3), r"dilations \[2, 2\] are not supported"),
    ({"group": 2}, (4, 2, 3, 3), r"group=2 .* is not supported"),
])
def test_conv_refuses_dilation_and_other_groups(attributes, weight_shape, message):
    nodes = [node("Conv", ["x", "w1"], "c1", pads=[1, 1, 1, 1]), node("Conv", ["c1", "w"], "conv", **attributes)]
    tail, initializers = dense_head("conv", 4 * 24 * 24)
    initializers.update(w1=weights((4, 1, 3, 3), 1), w=weights(weight_shape, 2))
    with pytest.raises(OnnxImportError, match=r"node 1 'conv' \(Conv\): " + message):
        convert_onnx(make_model(nodes + tail, initializers))


def test_nhwc_graph_with_transposes_reproduces_the_executor(tmp_path):
    """tf2onnx's shape: an NHWC input, Transpose to NCHW around the convolution, back to NHWC, Reshape, MatMul."""
    nodes = [node("Transpose", ["x"], "nchw", perm=[0, 3, 1, 2]),
             node("Conv", ["nchw", "w", "b"], "c"),
             node("Relu", ["c"], "r"),
             node("Transpose", ["r"], "nhwc", perm=[0, 2, 3, 1]),
             node("Reshape", ["nhwc", "shape"], "flat"),
             node("MatMul", ["flat", "w2"], "y")]
    initializers = {"w": weights((4, 1, 3, 3), 1), "b": weights((4,), 2), "shape": np.array([-1, 2704]),
                    "w2": weights((2704, 10), 3, 0.02)}
    engine, conversion = check(make_model(nodes, initializers, input_shape=("N", 28, 28, 1)), tmp_path)
    assert conversion.spec["input"]["shape"] == [28, 28, 1]
    # The graph flattens NHWC, as the engine does: the rows keep their order.
    onnx_rows = initializers["w2"]
    np.testing.assert_array_equal(conversion.arrays[f"{conversion.spec['layers'][-1]['name']}/kernel"], onnx_rows)


def test_conv_on_a_transposed_map_is_refused():
    nodes = [node("Transpose", ["x"], "t", perm=[0, 1, 3, 2]), node("Conv", ["t", "w"], "y")]
    with pytest.raises(OnnxImportError, match=r"not in NCHW order"):
        convert_onnx(make_model(nodes, {"w": weights((2, 1, 3, 3), 1)}))


# ---------------------------------------------------------------------------------------------------------
# Pooling and padding


@pytest.mark.parametrize("op, attributes, out_hw", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, (13, 13)),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (13, 13)),
    ("MaxPool", {"kernel_shape": [3, 2]}, (24, 25)),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, (13, 13)),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, (13, 13)),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]}, (13, 13)),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2], "count_include_pad": 1},
     (13, 13)),
    ("AveragePool", {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, (13, 13)),
])
def test_pooling_reproduces_the_executor(tmp_path, op, attributes, out_hw):
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r"), node(op, ["r"], "pool", **attributes)]
    tail, initializers = dense_head("pool", 3 * out_hw[0] * out_hw[1])
    initializers["w"] = weights((3, 1, 3, 3), 1)
    engine, conversion = check(make_model(nodes + tail, initializers), tmp_path)
    pool = conversion.spec["layers"][1]
    assert pool["type"] == {"MaxPool": "maxpool2d", "AveragePool": "avgpool2d"}[op]
    if op == "AveragePool":
        assert pool["count_include_pad"] == bool(attributes.get("count_include_pad", 0))


def test_pooling_with_a_partial_window_in_ceil_mode_is_refused():
    nodes = [node("MaxPool", ["x"], "pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    with pytest.raises(OnnxImportError, match="ceil_mode=1 leaves a partial window"):
        convert_onnx(make_model(nodes, {}))


@pytest.mark.parametrize("op, layer", [("GlobalAveragePool", "global_avgpool2d"),
                                       ("GlobalMaxPool", "global_maxpool2d")])
def test_global_pooling_reproduces_the_executor(tmp_path, op, layer):
    nodes = [node("Conv", ["x", "w", "b"], "c", strides=[2, 2]), node("Relu", ["c"], "r"),
             node(op, ["r"], "g"), node("Flatten", ["g"], "y")]
    initializers = {"w": weights((10, 1, 5, 5), 1), "b": weights((10,), 2)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", layer, "activation"]


@pytest.mark.parametrize("opset", [9, 11, 18])
def test_zero_pad_becomes_a_zeropad_layer(tmp_path, opset):
    pads = [0, 0, 2, 1, 0, 0, 0, 3]
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r")]
    initializers = {"w": weights((2, 1, 3, 3), 1)}
    if opset < 11:
        nodes.append(node("Pad", ["r"], "p", pads=pads))
    else:
        nodes.append(node("Pad", ["r", "pads"], "p"))
        initializers["pads"] = np.array(pads, np.int64)
    tail, head = dense_head("p", 2 * 28 * 30)
    engine, conversion = check(make_model(nodes + tail, initializers | head, opset=opset), tmp_path)
    assert conversion.spec["layers"][1] == {"type": "zeropad2d", "name": "p", "padding": [[2, 0], [1, 3]]}


def test_pad_with_another_value_or_mode_is_refused():
    nodes = [node("Pad", ["x", "pads", "value"], "p")]
    initializers = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "value": np.array(0.5, np.float32)}
    with pytest.raises(OnnxImportError, match="only zero padding"):
        convert_onnx(make_model(nodes, initializers, opset=13))


# ---------------------------------------------------------------------------------------------------------
# Activations


ACTIVATION_NODES = [
    ("Relu", {}, 17, "relu"),
    ("LeakyRelu", {"alpha": 0.1}, 17, {"name": "relu", "negative_slope": pytest.approx(0.1)}),
    ("Elu", {}, 17, "elu"),
    ("Elu", {"alpha": 0.5}, 17, {"name": "elu", "alpha": 0.5}),
    ("Selu", {}, 17, "selu"),
    ("Tanh", {}, 17, "tanh"),
    ("Sigmoid", {}, 17, "sigmoid"),
    ("HardSigmoid", {}, 17, {"name": "hard_sigmoid", "alpha": pytest.approx(0.2), "beta": 0.5}),
    ("HardSigmoid", {"alpha": 1 / 6}, 17, {"name": "hard_sigmoid", "alpha": pytest.approx(1 / 6), "beta": 0.5}),
    ("Softplus", {}, 17, "softplus"),
    ("Clip", {"min": 0.0, "max": 6.0}, 9, {"name": "relu", "max_value": 6.0}),
    ("Clip", {"min": 0.0}, 9, "relu"),
    ("Gelu", {}, 20, "gelu"),
    ("Gelu", {"approximate": "tanh"}, 20, {"name": "gelu", "approximate": True}),
]


@pytest.mark.parametrize("op, attributes, opset, activation", ACTIVATION_NODES)
def test_activation_is_fused_and_reproduces_the_executor(tmp_path, op, attributes, opset, activation):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w1", "b1"], "g1"), node(op, ["g1"], "act", **attributes),
             node("Gemm", ["act", "w2", "b2"], "y")]
    initializers = {"w1": weights((784, 32), 1, 0.2), "b1": weights((32,), 2), "w2": weights((32, 10), 3),
                    "b2": weights((10,), 4)}
    engine, conversion = check(make_model(nodes, initializers, opset=opset), tmp_path)
    assert conversion.spec["layers"][1]["activation"] == activation


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (0.0, None)])
def test_clip_with_bound_inputs_becomes_relu(tmp_path, bounds):
    initializers = {"w1": weights((784, 32), 1, 0.2), "w2": weights((32, 10), 3),
                    "low": np.array(bounds[0], np.float32)}
    inputs = ["g1", "low"]
    if bounds[1] is not None:
        initializers["high"] = np.array(bounds[1], np.float32)
        inputs.append("high")
    nodes = [node("Flatten", ["x"], "f"), node("MatMul", ["f", "w1"], "g1"), node("Clip", inputs, "act"),
             node("MatMul", ["act", "w2"], "y")]
    engine, conversion = check(make_model(nodes, initializers, opset=13), tmp_path)
    assert conversion.spec["layers"][1]["activation"] == ("relu" if bounds[1] is None else
                                                          {"name": "relu", "max_value": 6.0})


def test_clip_from_a_nonzero_minimum_is_refused():
    nodes = [node("Clip", ["x"], "y", min=-1.0, max=1.0)]
    with pytest.raises(OnnxImportError, match=r"clips to \[-1.0, 1.0\]"):
        convert_onnx(make_model(nodes, {}, opset=9))


def gelu_nodes(order: str) -> list:
    """x * 0.5 * (1 + erf(x / sqrt(2))) in the orders torch (TorchScript) and tf2onnx write it."""
    if order == "torch":
        return [node("Div", ["g1", "sqrt2"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a"),
                node("Mul", ["g1", "a"], "m"), node("Mul", ["m", "half"], "act")]
    if order == "half_first":
        return [node("Mul", ["g1", "half"], "h"), node("Mul", ["g1", "inv_sqrt2"], "d"), node("Erf", ["d"], "e"),
                node("Add", ["one", "e"], "a"), node("Mul", ["h", "a"], "act")]
    return [node("Mul", ["inv_sqrt2", "g1"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a"),
            node("Mul", ["half", "g1"], "h"), node("Mul", ["a", "h"], "act")]


@pytest.mark.parametrize("order", ["torch", "half_first", "constants_first"])
def test_gelu_erf_pattern_becomes_exact_gelu(tmp_path, order):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w1", "b1"], "g1"), *gelu_nodes(order),
             node("Gemm", ["act", "w2", "b2"], "y")]
    initializers = {"w1": weights((784, 32), 1, 0.2), "b1": weights((32,), 2), "w2": weights((32, 10), 3),
                    "b2": weights((10,), 4), "sqrt2": np.array(math.sqrt(2), np.float32),
                    "inv_sqrt2": np.array(1 / math.sqrt(2), np.float32), "one": np.array(1.0, np.float32),
                    "half": np.array(0.5, np.float32)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["flatten", "dense", "dense"]
    assert conversion.spec["layers"][1]["activation"] == "gelu"


def test_x_times_sigmoid_becomes_silu(tmp_path):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w1"], "g1"), node("Sigmoid", ["g1"], "s"),
             node("Mul", ["g1", "s"], "act"), node("Gemm", ["act", "w2"], "y")]
    initializers = {"w1": weights((784, 32), 1, 0.2), "w2": weights((32, 10), 3)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert conversion.spec["layers"][1]["activation"] == "silu"


@pytest.mark.parametrize("nodes, message", [
    ([node("Erf", ["g1"], "act")], "uses Erf outside the exact GELU pattern"),
    ([node("Div", ["g1", "two"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "a"),
      node("Mul", ["g1", "a"], "m"), node("Mul", ["m", "half"], "act")], "not an activation the format supports"),
    ([node("Tanh", ["g1"], "t"), node("Mul", ["g1", "t"], "act")], "not an activation the format supports"),
])
def test_element_wise_expressions_that_are_no_activation_are_refused(nodes, message):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w1"], "g1"), *nodes, node("Gemm", ["act", "w2"], "y")]
    initializers = {"w1": weights((784, 32), 1), "w2": weights((32, 10), 3), "two": np.array(2.0, np.float32),
                    "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    with pytest.raises(OnnxImportError, match=message):
        convert_onnx(make_model(nodes, initializers))


# ---------------------------------------------------------------------------------------------------------
# The output


@pytest.mark.parametrize("op, opset, output", [("Softmax", 11, OUTPUT_SOFTMAX), ("Softmax", 13, OUTPUT_SOFTMAX),
                                               ("LogSoftmax", 13, OUTPUT_LOG_SOFTMAX)])
def test_softmax_outputs_are_recorded(tmp_path, op, opset, output):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w"], "g"), node(op, ["g"], "y")]
    engine, conversion = check(make_model(nodes, {"w": weights((784, 10), 1, 0.1)}, opset=opset), tmp_path)
    assert conversion.output == output and engine.metadata["output"] == output
    assert engine.metadata["source"] == "onnx"
    assert conversion.spec["layers"][-1]["activation"] == "softmax"


def test_an_op_after_the_softmax_is_refused():
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w"], "g"), node("Softmax", ["g"], "s"),
             node("Relu", ["s"], "y")]
    with pytest.raises(OnnxImportError, match="comes after the output Softmax"):
        convert_onnx(make_model(nodes, {"w": weights((784, 10), 1)}))


def test_softmax_over_another_axis_is_refused():
    nodes = [node("Softmax", ["x"], "y", axis=2)]
    with pytest.raises(OnnxImportError, match="axis 2"):
        convert_onnx(make_model(nodes, {}))


# ---------------------------------------------------------------------------------------------------------
# Shape arithmetic, reshapes and squeezes


def test_torch_style_flatten_through_shape_gather_concat_reshape(tmp_path):
    nodes = [node("Conv", ["x", "w"], "c"), node("Shape", ["c"], "shape"),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
             node("Gather", ["shape", "zero"], "batch", axis=0), node("Unsqueeze", ["batch", "axes"], "batch1"),
             node("Concat", ["batch1", "minus_one"], "target", axis=0), node("Reshape", ["c", "target"], "flat"),
             node("Gemm", ["flat", "w2"], "y", transB=1)]
    initializers = {"w": weights((3, 1, 5, 5), 1), "axes": np.array([0], np.int64),
                    "minus_one": np.array([-1], np.int64), "w2": weights((10, 3 * 24 * 24), 2, 0.03)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "flatten", "dense"]


def test_squeeze_and_unsqueeze_are_layout_only(tmp_path):
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r"),
             node("GlobalMaxPool", ["r"], "g"), node("Squeeze", ["g", "axes23"], "s"),
             node("Unsqueeze", ["s", "axes1"], "u"), node("Squeeze", ["u", "axes1"], "v"),
             node("Gemm", ["v", "w2"], "y")]
    initializers = {"w": weights((6, 1, 3, 3), 1), "axes23": np.array([2, 3], np.int64),
                    "axes1": np.array([1], np.int64), "w2": weights((6, 10), 2)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "global_maxpool2d", "dense"]


@pytest.mark.parametrize("target", [[1, -1], [-1, 392]])
def test_reshape_that_mixes_the_batch_axis_is_refused(target):
    nodes = [node("Reshape", ["x", "shape"], "r"), node("Gemm", ["r", "w"], "y")]
    with pytest.raises(OnnxImportError, match="mixes the batch axis"):
        convert_onnx(make_model(nodes, {"shape": np.array(target, np.int64), "w": weights((784, 10), 1)}))


def test_transpose_that_moves_the_batch_axis_is_refused():
    nodes = [node("Transpose", ["x"], "t", perm=[1, 0, 2, 3]), node("Flatten", ["t"], "y")]
    with pytest.raises(OnnxImportError, match=r"perm \[1, 0, 2, 3\] moves the batch axis"):
        convert_onnx(make_model(nodes, {}))


@pytest.mark.parametrize("input_shape, engine_shape", [(("N", 1, 28, 28), [28, 28, 1]), ((1, 28, 28, 1), [28, 28, 1]),
                                                       (("N", 28, 28), [28, 28, 1]), (("batch", 784), [784])])
def test_accepted_input_shapes(tmp_path, input_shape, engine_shape):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w"], "y")]
    engine, conversion = check(make_model(nodes, {"w": weights((784, 10), 1, 0.05)}, input_shape=input_shape),
                               tmp_path)
    assert conversion.spec["input"]["shape"] == engine_shape
    assert conversion.fixed_batch == (1 if input_shape[0] == 1 else None)


# ---------------------------------------------------------------------------------------------------------
# BatchNormalization and constants folded


def batchnorm_initializers(prefix: str, channels: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{prefix}_scale": rng.uniform(0.5, 1.5, channels).astype(np.float32),
            f"{prefix}_bias": rng.uniform(-0.3, 0.3, channels).astype(np.float32),
            f"{prefix}_mean": rng.uniform(-0.3, 0.3, channels).astype(np.float32),
            f"{prefix}_var": rng.uniform(0.5, 2.0, channels).astype(np.float32)}


def bn(prefix: str, source: str, output: str):
    return node("BatchNormalization", [source] + [f"{prefix}_{p}" for p in ("scale", "bias", "mean", "var")], output,
                epsilon=1e-3)


def test_batchnorm_is_folded_into_the_conv_before_it_and_kept_after_an_activation(tmp_path):
    nodes = [node("Conv", ["x", "w"], "c"), bn("bn1", "c", "n1"), node("Relu", ["n1"], "r"),
             bn("bn2", "r", "n2"), node("Flatten", ["n2"], "f"), node("Gemm", ["f", "w2"], "g"),
             bn("bn3", "g", "y")]
    initializers = {"w": weights((4, 1, 3, 3), 1), "w2": weights((4 * 26 * 26, 10), 2, 0.02),
                    **batchnorm_initializers("bn1", 4, 3), **batchnorm_initializers("bn2", 4, 4),
                    **batchnorm_initializers("bn3", 10, 5)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "batchnorm", "flatten", "dense"]
    assert conversion.spec["layers"][0]["activation"] == "relu"


def test_batchnorm_on_a_vector_before_any_layer_with_a_kernel(tmp_path):
    nodes = [node("Flatten", ["x"], "f"), node("Relu", ["f"], "r"), bn("bn", "r", "n"), node("Gemm", ["n", "w"], "y")]
    initializers = {"w": weights((784, 10), 2, 0.05), **batchnorm_initializers("bn", 784, 3)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path)
    assert layer_types(conversion) == ["activation", "flatten", "batchnorm", "dense"]


def test_per_channel_mul_and_add_after_an_activation_become_a_batchnorm_layer(tmp_path):
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r"), node("Mul", ["r", "scale"], "m"),
             node("Sub", ["m", "shift"], "s")]
    tail, initializers = dense_head("s", 3 * 26 * 26)
    initializers.update(w=weights((3, 1, 3, 3), 1), scale=np.array([0.5, 2.0, -1.0], np.float32).reshape(1, 3, 1, 1),
                        shift=np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1, 1))
    engine, conversion = check(make_model(nodes + tail, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "batchnorm", "flatten", "dense"]


def test_constant_that_varies_within_a_channel_becomes_per_feature_after_a_flatten(tmp_path):
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r"), node("Mul", ["r", "map"], "m")]
    tail, initializers = dense_head("m", 26 * 26)
    initializers.update(w=weights((1, 1, 3, 3), 1), map=weights((1, 26, 26), 2))
    engine, conversion = check(make_model(nodes + tail, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "flatten", "batchnorm", "dense"]


def test_constant_that_varies_within_a_channel_of_a_map_is_refused():
    nodes = [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r"), node("Mul", ["r", "map"], "m"),
             node("MaxPool", ["m"], "p", kernel_shape=[2, 2], strides=[2, 2])]
    tail, initializers = dense_head("p", 13 * 13)
    initializers.update(w=weights((1, 1, 3, 3), 1), map=weights((1, 26, 26), 2))
    with pytest.raises(OnnxImportError, match="varies within a channel"):
        convert_onnx(make_model(nodes + tail, initializers))


# ---------------------------------------------------------------------------------------------------------
# The input normalisation


MEAN, STD = 0.1307, 0.3081


def test_normalisation_is_folded_into_a_first_dense_layer_and_a_blank_pixel_stays_zero(tmp_path):
    engine, conversion = check(mlp(), tmp_path, mean=MEAN, std=STD)
    assert conversion.spec["input"]["range"] == [0.0, 1.0]
    assert engine.metadata["input_normalization"] == {"mean": MEAN, "std": STD}
    # The first dense layer computes (p - mean) / std @ W + b from the pixels p themselves.
    onnx_kernel = numpy_helper.to_array(conversion.model.graph.initializer[0]).astype(np.float64)
    first = conversion.spec["layers"][1]["name"]
    np.testing.assert_allclose(conversion.arrays[f"{first}/kernel"], onnx_kernel / STD, rtol=1e-12)


def test_normalisation_is_folded_into_a_first_valid_conv(tmp_path):
    engine, conversion = check(conv_model({}, out_hw=(26, 26)), tmp_path, mean=MEAN, std=STD)
    assert conversion.spec["input"]["range"] == [0.0, 1.0]


def test_normalisation_before_a_padded_conv_goes_to_the_input_range(tmp_path):
    """Folding into a zero-padded conv would be wrong at the borders, where the padding is not a shifted 0."""
    engine, conversion = check(conv_net(), tmp_path, mean=MEAN, std=STD)
    assert conversion.spec["input"]["range"] == pytest.approx([-MEAN / STD, (1 - MEAN) / STD])


def test_normalisation_nodes_in_the_graph_compose_with_mean_and_std(tmp_path):
    nodes = [node("Sub", ["x", "m"], "s"), node("Div", ["s", "d"], "n"), node("Flatten", ["n"], "f"),
             node("Gemm", ["f", "w"], "y")]
    initializers = {"m": np.array([0.5], np.float32), "d": np.array(2.0, np.float32), "w": weights((784, 10), 1, 0.1)}
    engine, conversion = check(make_model(nodes, initializers), tmp_path, mean=MEAN, std=STD)
    assert conversion.spec["input"]["range"] == [0.0, 1.0]
    assert layer_types(conversion) == ["flatten", "dense"]


def test_per_pixel_normalisation_before_a_conv_is_refused():
    nodes = [node("Sub", ["x", "m"], "s"), node("Conv", ["s", "w"], "y")]
    initializers = {"m": weights((1, 28, 28), 1), "w": weights((2, 1, 3, 3), 2)}
    with pytest.raises(OnnxImportError, match="one scale and offset for all pixels"):
        convert_onnx(make_model(nodes, initializers))


@pytest.mark.parametrize("mean, std, message", [(0.0, 0.0, "std is 0.0"), (float("nan"), 1.0, "mean is nan")])
def test_bad_mean_or_std_is_refused(mean, std, message):
    with pytest.raises(OnnxImportError, match=message):
        convert_onnx(mlp(), mean=mean, std=std)


# ---------------------------------------------------------------------------------------------------------
# Hostile and unsupported files


def test_unsupported_op_is_named_with_its_node_and_the_supported_ops():
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w"], "g"), node("Hardmax", ["g"], "y")]
    with pytest.raises(OnnxImportError, match=r"node 2 'y' \(Hardmax\): op 'Hardmax' is not supported; "
                                              r"supported ops: .*AveragePool.*Gemm.*Softmax"):
        convert_onnx(make_model(nodes, {"w": weights((784, 10), 1)}))


def test_op_of_another_domain_is_refused():
    nodes = [node("Flatten", ["x"], "f"), helper.make_node("Gemm", ["f", "w"], ["y"], domain="com.example")]
    with pytest.raises(OnnxImportError, match="op domain 'com.example' is not supported"):
        convert_onnx(make_model(nodes, {"w": weights((784, 10), 1)}))


def test_residual_connection_is_refused():
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w1"], "a"), node("Relu", ["a"], "r"),
             node("Gemm", ["r", "w2"], "b"), node("Add", ["a", "b"], "y")]
    with pytest.raises(OnnxImportError, match="adds two computed tensors"):
        convert_onnx(make_model(nodes, {"w1": weights((784, 10), 1), "w2": weights((10, 10), 2)}))


def test_reading_a_tensor_from_before_a_later_layer_is_refused():
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w1"], "a"), node("Gemm", ["a", "w2"], "b"),
             node("Gemm", ["a", "w2"], "y")]
    with pytest.raises(OnnxImportError, match="the graph branches"):
        convert_onnx(make_model(nodes, {"w1": weights((784, 10), 1), "w2": weights((10, 10), 2)}))


def test_external_data_is_refused_before_any_tensor_is_read(tmp_path):
    model = mlp()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(OnnxImportError, match=r"initializer tensor 'w1' keeps its data in an external file"):
        import_onnx(model, tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


def test_external_data_in_a_constant_node_is_refused():
    value = numpy_helper.from_array(np.zeros(784, np.float32), "c")
    value.ClearField("raw_data")
    value.external_data.add(key="location", value="weights.bin")
    nodes = [helper.make_node("Constant", [], ["c"], value=value), node("Flatten", ["x"], "f"),
             node("Add", ["f", "c"], "y")]
    with pytest.raises(OnnxImportError, match=r"node '' \(Constant\) attribute 'value' tensor 'c' keeps its data"):
        convert_onnx(make_model(nodes, {}))


def test_tensor_larger_than_the_limit_is_refused_before_it_is_allocated():
    model = mlp()
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([1 << 20, 1 << 20])
    with pytest.raises(OnnxImportError, match=r"tensor 'w1' of dims \(1048576, 1048576\) needs 4398046511104 bytes"):
        convert_onnx(model)


def test_tensor_whose_data_does_not_match_its_dims_is_refused():
    model = mlp()
    tensor = model.graph.initializer[0]
    tensor.dims[0] = 785
    with pytest.raises(OnnxImportError, match=r"tensor 'w1' of dims \(785, 16\) holds 50176 bytes, expected 50240"):
        convert_onnx(model)


def test_activation_larger_than_the_limit_is_refused():
    nodes = [node("Conv", ["x", "w"], "c", pads=[1000, 1000, 1000, 1000]), node("Flatten", ["c"], "y")]
    with pytest.raises(OnnxImportError, match="exceeds 16777216 values per image"):
        convert_onnx(make_model(nodes, {"w": weights((64, 1, 1, 1), 1)}))


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_file_is_refused(tmp_path, cut):
    data = mlp().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(OnnxImportError, match=f"ONNX file '{path}': "):
        convert_onnx(path)


@pytest.mark.parametrize("data", [b"", b"not an onnx model at all", bytes(range(256)) * 4, b"PK\x03\x04" + b"\0" * 60])
def test_non_onnx_bytes_are_refused(tmp_path, data):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(OnnxImportError, match="not an ONNX model"):
        convert_onnx(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(OnnxImportError, match="cannot be read"):
        convert_onnx(tmp_path / "missing.onnx")


@pytest.mark.parametrize("input_shape", [("N", 3, 28, 28), ("N", 1, 32, 32), ("N", 10)])
def test_other_input_shapes_are_refused(input_shape):
    nodes = [node("Flatten", ["x"], "y")]
    with pytest.raises(OnnxImportError, match=r"expected \(N, 1, 28, 28\), \(N, 28, 28, 1\), \(N, 28, 28\) or "
                                              r"\(N, 784\)"):
        convert_onnx(make_model(nodes, {}, input_shape=input_shape))


def test_opset_older_than_9_is_refused():
    with pytest.raises(OnnxImportError, match="imports the default ONNX opset as \\[8\\], expected one version from 9"):
        convert_onnx(make_model([node("Flatten", ["x"], "y")], {}, opset=8))


def test_output_that_is_not_the_class_scores_is_refused():
    nodes = [node("Conv", ["x", "w"], "y")]
    with pytest.raises(OnnxImportError, match=r"the scores have shape \(N, 2, 26, 26\), expected \(N, classes\)"):
        convert_onnx(make_model(nodes, {"w": weights((2, 1, 3, 3), 1)}))


# ---------------------------------------------------------------------------------------------------------
# The written file and the executors


def test_file_is_written_only_when_the_engine_reproduces_the_executor(tmp_path, monkeypatch):
    real = onnx_import.run_executor
    monkeypatch.setattr(onnx_import, "run_executor", lambda *args: real(*args) * 1.01)
    with pytest.raises(OnnxImportError, match="the engine does not accept the converted file: .* differ from the "
                                              "stored ones"):
        import_onnx(mlp(), tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


def test_reference_evaluator_is_the_executor_without_onnxruntime(monkeypatch):
    conversion = convert_onnx(conv_net())
    inputs = IMAGES[:4].reshape(-1, 1, 28, 28)
    with_onnxruntime = onnx_import.run_executor(conversion.model, inputs)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    without = onnx_import.run_executor(conversion.model, inputs)
    np.testing.assert_allclose(without, with_onnxruntime, atol=1e-6, rtol=0)


def test_file_stores_the_reference_and_loads_with_its_check(tmp_path):
    path = import_onnx(conv_net(), tmp_path / "m.npz", reference_images=IMAGES)
    model = fastmnist.load(path)
    spec, arrays = fastmnist.format.read(path)
    assert arrays["reference/inputs"].shape == (16, 28, 28) and spec["reference"] == {"atol": ATOL}
    assert model.metadata["onnx_producer"] == "fastmnist-tests" and model.metadata["onnx_opset"] == 17


def test_import_does_not_load_onnx_for_inference():
    code = "import sys, fastmnist; fastmnist.load('cnn'); assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_import_writes_a_checked_file_and_reports_errors(tmp_path, capsys):
    from fastmnist.cli import main
    from test_cli import write_band_dataset

    labels = np.arange(20, dtype=np.uint8) % 10
    write_band_dataset(tmp_path / "data", labels, labels)
    source = tmp_path / "mlp.onnx"
    source.write_bytes(mlp().SerializeToString())
    status = main(["import", str(source), str(tmp_path / "mlp.npz"), "--mean", "0.5", "--std", "0.25",
                   "--data", str(tmp_path / "data")])
    assert status == 0 and "logits, softmax appended" in capsys.readouterr().out
    assert fastmnist.load(tmp_path / "mlp.npz").metadata["input_normalization"] == {"mean": 0.5, "std": 0.25}
    source.write_bytes(b"garbage")
    assert main(["import", str(source), str(tmp_path / "bad.npz"), "--data", str(tmp_path / "data")]) == 2
    assert "fastmnist import: ONNX file" in capsys.readouterr().err


def test_long_chains_of_element_wise_operations_are_refused():
    nodes = [node("Flatten", ["x"], "t0")] + [node("Mul", [f"t{i}", "two"], f"t{i + 1}") for i in range(100)]
    nodes.append(node("Gemm", ["t100", "w"], "y"))
    with pytest.raises(OnnxImportError, match="more than 64 element-wise operations in a row"):
        convert_onnx(make_model(nodes, {"two": np.array(2.0, np.float32), "w": weights((784, 10), 1)}))


def test_tf2onnx_style_flatten_through_shape_slice_concat_reshape(tmp_path):
    """Keras' Flatten as tf2onnx writes it on an NHWC map: Reshape to Concat(Slice(Shape(x), 0, 1), [-1])."""
    nodes = [node("Transpose", ["x"], "nchw", perm=[0, 3, 1, 2]), node("Conv", ["nchw", "w", "b"], "c"),
             node("Relu", ["c"], "r"), node("Transpose", ["r"], "nhwc", perm=[0, 2, 3, 1]),
             node("Shape", ["nhwc"], "shape"), node("Slice", ["shape", "start", "end"], "batch"),
             node("Cast", ["minus_one"], "minus_one_i", to=TensorProto.INT64),
             node("Concat", ["batch", "minus_one_i"], "target", axis=0), node("Reshape", ["nhwc", "target"], "flat"),
             node("MatMul", ["flat", "w2"], "m"), node("Add", ["m", "b2"], "logits"), node("Softmax", ["logits"], "y")]
    initializers = {"w": weights((4, 1, 3, 3), 1), "b": weights((4,), 2), "start": np.array([0], np.int64),
                    "end": np.array([1], np.int64), "minus_one": np.array([-1.0], np.float32),
                    "w2": weights((26 * 26 * 4, 10), 3, 0.02), "b2": weights((10,), 4)}
    engine, conversion = check(make_model(nodes, initializers, input_shape=("unk__6", 28, 28, 1), opset=13),
                               tmp_path)
    assert layer_types(conversion) == ["conv2d", "flatten", "dense"] and conversion.output == OUTPUT_SOFTMAX


@pytest.mark.parametrize("nodes, initializers, opset, message", [
    ([node("Selu", ["x"], "y", alpha=2.0)], {}, 17, "differ from SELU's constants"),
    ([node("BatchNormalization", ["x", "s", "b", "m", "v"], "y", training_mode=1)],
     {k: np.ones(1, np.float32) for k in "sbmv"}, 15, "runs in training mode"),
    ([node("Flatten", ["x"], "f"), node("Gemm", ["f", "w", "c"], "y")],
     {"w": weights((784, 10), 1), "c": weights((3, 10), 2)}, 17, r"C has shape \(3, 10\), expected one value per"),
    ([node("Flatten", ["x"], "f"), node("Add", ["f", "strings"], "y")],
     {"strings": np.array(["a"], dtype=object)}, 17, "tensor 'strings' has data type 8"),
])
def test_unsupported_settings_are_refused(nodes, initializers, opset, message):
    with pytest.raises(OnnxImportError, match=message):
        convert_onnx(make_model(nodes, initializers, opset=opset))


def test_sparse_initializers_and_huge_fixed_batches_are_refused():
    model = mlp()
    model.graph.sparse_initializer.add().values.name = "sparse"
    with pytest.raises(OnnxImportError, match="has sparse initializers"):
        convert_onnx(model)
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "w"], "y")]
    with pytest.raises(OnnxImportError, match="fixes the batch size to 100000, expected at most 4096"):
        convert_onnx(make_model(nodes, {"w": weights((784, 10), 1)}, input_shape=(100000, 784)))


@pytest.mark.parametrize("group, conv_attributes, out_hw", [
    (1, {}, (26, 28)), (1, {"pads": [1, 0, 0, 1], "strides": [2, 2]}, (14, 15)),
    (2, {"auto_pad": "SAME_UPPER"}, (28, 30))])
def test_zero_pad_before_a_conv_is_folded_into_its_padding(tmp_path, group, conv_attributes, out_hw):
    """Pad (top 2, left 1, right 3) of a 26 x 26 map: 28 x 30 before the second convolution's own padding."""
    nodes = [node("Conv", ["x", "w1"], "c1"), node("Relu", ["c1"], "r"), node("Pad", ["r", "pads"], "p"),
             node("Conv", ["p", "w2"], "c2", group=group, **conv_attributes)]
    tail, initializers = dense_head("c2", 4 * out_hw[0] * out_hw[1])
    initializers.update(w1=weights((2, 1, 3, 3), 1), w2=weights((4, 2 // group, 3, 3), 2),
                        pads=np.array([0, 0, 2, 1, 0, 0, 0, 3], np.int64))
    engine, conversion = check(make_model(nodes + tail, initializers), tmp_path)
    assert layer_types(conversion) == ["conv2d", "depthwise_conv2d" if group == 2 else "conv2d", "flatten", "dense"]


def test_prelu_with_one_slope_becomes_leaky_relu_and_per_channel_slopes_are_refused(tmp_path):
    nodes = [node("Conv", ["x", "w"], "c"), node("PRelu", ["c", "slope"], "r")]
    tail, initializers = dense_head("r", 3 * 26 * 26)
    initializers.update(w=weights((3, 1, 3, 3), 1), slope=np.full((1, 1, 1), 0.25, np.float32))
    engine, conversion = check(make_model(nodes + tail, initializers), tmp_path)
    assert conversion.spec["layers"][0]["activation"] == {"name": "relu", "negative_slope": 0.25}
    initializers["slope"] = np.array([0.1, 0.2, 0.3], np.float32).reshape(3, 1, 1)
    with pytest.raises(OnnxImportError, match=r"node 1 'r' \(PRelu\): slope of shape \(3, 1, 1\) is not one"):
        convert_onnx(make_model(nodes + tail, initializers))
