"""Weights files: a valid one round-trips; every kind of malformed one is refused with a message that says
which file, which part and what was expected."""

import io
import json
import zipfile

import numpy as np
import pytest

import fastmnist
from fastmnist import WeightsFormatError, format, layers, spec
from random_models import MLP_BN_ELU_LAYERS, V2_LAYERS, random_arrays, spec_for, write_model


@pytest.fixture
def valid(tmp_path):
    """(spec, arrays) of a small valid model, with reference vectors that the engine reproduces."""
    layers = [{"type": "dense", "name": "fc1", "units": 20, "activation": "relu"},
              {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    spec, arrays = spec_for(layers, (784,)), random_arrays(layers, (784,), np.random.default_rng(0))
    path = format.save(tmp_path / "valid.npz", spec, arrays)
    inputs = np.random.default_rng(1).random((4, 28, 28), dtype=np.float32)
    arrays["reference/inputs"] = inputs
    arrays["reference/probabilities"] = fastmnist.load(path).predict_proba(inputs)
    spec["reference"] = {"atol": 1e-5}
    return spec, arrays


def write(tmp_path, spec, arrays, name="m.npz"):
    return format.save(tmp_path / name, spec, arrays)


def refused(path, *fragments):
    with pytest.raises(WeightsFormatError) as info:
        fastmnist.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_valid_file_round_trips(tmp_path, valid):
    spec, arrays = valid
    path = write(tmp_path, spec, arrays)
    read_spec, read_arrays = format.read(path)
    assert read_spec == spec
    assert set(read_arrays) == set(arrays)
    assert all(read_arrays[k].dtype == np.float32 for k in read_arrays)
    fastmnist.load(path)  # reproduces its reference vectors


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.npz", "no such file")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    refused(path, "not an .npz")


def test_truncated_file(tmp_path, valid):
    data = write(tmp_path, *valid).read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsFormatError):
            fastmnist.load(path)


def test_missing_array(tmp_path, valid):
    spec, arrays = valid
    del arrays["fc1/bias"]
    refused(write(tmp_path, spec, arrays), "fc1", "'fc1/bias' is missing")


def test_extra_array(tmp_path, valid):
    spec, arrays = valid
    arrays["stowaway"] = np.zeros(3)
    refused(write(tmp_path, spec, arrays), "stowaway", "belong to no layer")


def test_wrong_shape(tmp_path, valid):
    spec, arrays = valid
    arrays["fc1/kernel"] = np.zeros((784, 21))
    refused(write(tmp_path, spec, arrays), "'fc1/kernel' has shape (784, 21), expected (784, 20)")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights(tmp_path, valid, value):
    spec, arrays = valid
    arrays["out/kernel"][3, 4] = value
    refused(write(tmp_path, spec, arrays), "out", "NaN or infinite")


def raw_npz(path, members: dict):
    """An .npz whose members are written as given (arrays of any dtype, or raw bytes)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, value in members.items():
            if isinstance(value, bytes):
                z.writestr(name + ".npy", value)
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, value, allow_pickle=True)
                z.writestr(name + ".npy", buffer.getvalue())
    return path


def spec_bytes(spec):
    return np.frombuffer(json.dumps(spec).encode(), np.uint8)


def test_wrong_dtype(tmp_path, valid):
    spec, arrays = valid
    members = {"spec": spec_bytes(spec), **arrays, "fc1/kernel": arrays["fc1/kernel"].astype(np.float64)}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/kernel", "dtype float64, expected float32")


def test_pickled_object_array_is_never_loaded(tmp_path, valid):
    spec, arrays = valid
    members = {"spec": spec_bytes(spec), **arrays, "fc1/kernel": np.array([{"evil": 1}], dtype=object)}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/kernel", "never loaded")


def test_huge_shape_claim_is_refused_before_allocating(tmp_path, valid):
    spec, arrays = valid
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (1 << 20, 1 << 20)})
    members = {"spec": spec_bytes(spec), **arrays, "fc1/kernel": header.getvalue() + b"\x00" * 64}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/kernel", "header claims shape")


@pytest.mark.parametrize("text,fragment", [
    (b"{not json", "not valid UTF-8 JSON"),
    (b"\xff\xfe", "not valid UTF-8 JSON"),
    (b"[1, 2]", "expected an object"),
    (b'{"format": "fastmnist-weights", "version": NaN}', "not valid UTF-8 JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid UTF-8 JSON"),
])
def test_spec_not_json(tmp_path, valid, text, fragment):
    _, arrays = valid
    refused(raw_npz(tmp_path / "m.npz", {"spec": np.frombuffer(text, np.uint8), **arrays}), fragment)


def test_no_spec(tmp_path, valid):
    _, arrays = valid
    refused(raw_npz(tmp_path / "m.npz", dict(arrays)), "no 'spec' array")


@pytest.mark.parametrize("change,fragment", [
    (lambda s: s.update(version=3), "format version 3, this reader knows versions 1, 2"),
    (lambda s: s.update(version="2"), "format version '2'"),
    (lambda s: s.update(version=2.0), "format version 2.0"),
    (lambda s: s.update(format="other"), "format is 'other'"),
    (lambda s: s["layers"][0].update(type="lstm"), "type 'lstm' is not supported"),
    (lambda s: s["layers"][0].update(units=0), "'units' is 0"),
    (lambda s: s["layers"][0].update(activation="swish"), "activation 'swish' is not supported; supported: linear"),
    (lambda s: s["layers"][0].update(kernel_size=[3, 3]), "unknown field(s) 'kernel_size'"),
    (lambda s: s["layers"][1].update(name="fc1"), "used by an earlier layer"),
    (lambda s: s["layers"][1].update(activation="relu"), "expected softmax"),
    (lambda s: s.update(classes=["a", "b"]), "expected (2,) for 2 classes"),
    (lambda s: s["input"].update(shape=[32, 32, 1]), "input shape [32, 32, 1]"),
    (lambda s: s.update(reference={"atol": 5.0}), "reference atol 5.0"),
    (lambda s: s.update(extra=1), "unknown spec field(s) 'extra'"),
    (lambda s: s["layers"].insert(0, {"type": "conv2d", "name": "c", "filters": 4, "kernel_size": [3, 3]}),
     "expected (height, width, channels)"),
])
def test_spec_contradictions(tmp_path, valid, change, fragment):
    spec, arrays = valid
    change(spec)
    refused(write(tmp_path, spec, arrays), fragment)


def test_activation_too_large_for_memory_is_refused_before_reading_weights(tmp_path):
    layers = [{"type": "conv2d", "name": "c", "filters": 65536, "kernel_size": [1, 1]},
              {"type": "flatten", "name": "f"}, {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    refused(write(tmp_path, spec_for(layers), {}), "layer 0 'c'", "(28, 28, 65536) exceeds")


def test_reference_not_reproduced(tmp_path, valid):
    spec, arrays = valid
    arrays["reference/probabilities"] = np.roll(arrays["reference/probabilities"], 1, axis=1)
    refused(write(tmp_path, spec, arrays), "reference inputs differ", "at most 1e-05")


def test_reference_needs_both_arrays(tmp_path, valid):
    spec, arrays = valid
    del arrays["reference/probabilities"]
    refused(write(tmp_path, spec, arrays), "reference")


def test_shipped_name_and_path(tmp_path, monkeypatch):
    path = write_model(tmp_path / "tiny.npz", MLP_BN_ELU_LAYERS, input_shape=(784,))
    monkeypatch.setattr(fastmnist.model, "shipped_weights_dir", lambda: tmp_path)
    assert fastmnist.shipped_models() == ["tiny"]
    assert fastmnist.load("tiny").path == path
    with pytest.raises(WeightsFormatError, match="no such file"):
        fastmnist.load("no_such_model")


def test_negative_variance_is_refused(tmp_path):
    layers = [{"type": "dense", "name": "fc", "units": 5}, {"type": "batchnorm", "name": "bn"},
              {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    arrays = random_arrays(layers, (784,), np.random.default_rng(0))
    arrays["bn/moving_variance"][2] = -1.0
    refused(write(tmp_path, spec_for(layers, (784,)), arrays), "'bn'", "'moving_variance' + epsilon must be positive")


def test_overflowing_weights_raise_instead_of_answering_nan(tmp_path):
    layers = [{"type": "dense", "name": "fc", "units": 5}, {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    arrays = random_arrays(layers, (784,), np.random.default_rng(0))
    arrays["fc/kernel"][:] = 3e38  # finite, but any ink overflows float32
    model = fastmnist.load(write(tmp_path, spec_for(layers, (784,)), arrays))
    with pytest.raises(FloatingPointError, match="image 1"):
        model.predict_proba(np.stack([np.zeros((28, 28)), np.ones((28, 28))]))


def test_shipped_version_1_files_still_load():
    for name in fastmnist.shipped_models():
        raw_spec, _ = format.read(fastmnist.model.shipped_weights_dir() / f"{name}.npz")
        assert raw_spec["version"] == 1
        fastmnist.load(name)  # and reproduces its stored reference outputs


def test_version_1_file_written_today_loads(tmp_path):
    layers_v1 = [{"type": "dense", "name": "fc", "units": 12, "activation": "elu"},
                 {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    arrays = random_arrays(layers_v1, (784,), np.random.default_rng(3))
    model = fastmnist.load(write(tmp_path, spec_for(layers_v1, (784,), version=1), arrays))
    assert model.predict_proba(np.zeros((28, 28))).shape == (1, 10)


def parse_v2(layer_list, input_shape=(28, 28, 1), arrays=None):
    """spec.parse of a version 2 spec (the layer list checked without running it)."""
    if arrays is None:
        arrays = random_arrays(layer_list, input_shape, np.random.default_rng(0))
    return spec.parse(spec_for(layer_list, input_shape), arrays, "v2.npz")


def test_every_version_2_layer_parses_with_its_shapes():
    model = parse_v2(V2_LAYERS)
    shapes = {p.layer.name: (p.input_shape, p.output_shape, {k: v.shape for k, v in p.params.items()})
              for p in model.layers}
    assert shapes["pad"][1] == (31, 31, 1)
    # explicit pads: floor((31 + 1 + 0 - 3) / 1) + 1 = 30 rows, floor((31 + 2 + 1 - 3) / 1) + 1 = 32 columns
    assert shapes["dw"][1:] == ((30, 32, 2), {"kernel": (3, 3, 1, 2), "bias": (2,)})
    assert shapes["bn_map"][2]["gamma"] == (2,)
    assert shapes["avg"][1] == ((30 + 2 - 3) // 2 + 1, (32 + 2 - 3) // 2 + 1, 5)
    assert shapes["max"][1] == (8, 8, 5)
    assert shapes["gap"][1] == (5,)
    assert shapes["bn_vec"][2]["moving_mean"] == (5,)
    layer = {p.layer.name: p.layer for p in model.layers}
    assert layer["dw"].activation == layers.ActivationSpec("relu", (("max_value", 6.0),))
    assert layer["avg"].count_include_pad and layer["avg"].padding == ((1, 1), (2, 0))
    assert layer["act"].activation["alpha"] == 0.5


@pytest.mark.parametrize("raw,expected", [
    ("relu", "relu"),
    ({"name": "relu"}, "relu"),
    ({"name": "relu", "max_value": 6}, {"name": "relu", "max_value": 6.0}),
    ({"name": "relu", "negative_slope": 0.1, "threshold": 0.5},
     {"name": "relu", "negative_slope": 0.1, "threshold": 0.5}),
    ({"name": "elu", "alpha": 1.0}, "elu"),
    ({"name": "elu", "alpha": 0.3}, {"name": "elu", "alpha": 0.3}),
    ({"name": "hard_sigmoid", "alpha": 1 / 6, "beta": 0.5}, {"name": "hard_sigmoid", "alpha": 1 / 6}),
    ({"name": "gelu", "approximate": True}, {"name": "gelu", "approximate": True}),
    ({"name": "gelu", "approximate": False}, "gelu"),
    *((name, name) for name in layers.ACTIVATIONS),
])
def test_activation_parses_and_writes_back(raw, expected):
    activation = layers.parse_activation(raw)
    assert activation.to_json() == expected
    assert layers.parse_activation(activation.to_json()) == activation


def test_every_activation_of_the_table_is_supported():
    assert layers.ACTIVATIONS == ("linear", "relu", "elu", "selu", "tanh", "sigmoid", "hard_sigmoid", "silu",
                                  "gelu", "softplus", "softmax")


@pytest.mark.parametrize("raw,fragment", [
    ("swish", "activation 'swish' is not supported; supported: linear, relu, elu"),
    (3, "neither a name nor an object"),
    ({"alpha": 1.0}, "neither a name nor an object"),
    ({"name": "elu", "beta": 1.0}, "activation 'elu' has no parameter(s) 'beta'; its parameters: alpha"),
    ({"name": "tanh", "alpha": 1.0}, "its parameters: none"),
    ({"name": "relu", "max_value": -1.0}, "'max_value' is -1.0, expected a number from 0.0"),
    ({"name": "relu", "max_value": 0.5, "threshold": 1.0}, "'max_value' is 0.5, expected a number from 1.0"),
    ({"name": "relu", "negative_slope": -0.5}, "'negative_slope' is -0.5"),
    ({"name": "relu", "threshold": -1}, "'threshold' is -1"),
    ({"name": "relu", "max_value": "6"}, "'max_value' is '6'"),
    ({"name": "relu", "max_value": True}, "'max_value' is True"),
    ({"name": "elu", "alpha": 1e9}, "'alpha' is 1000000000.0"),
    ({"name": "elu", "alpha": None}, "'alpha' is None"),
    ({"name": "hard_sigmoid", "beta": [0.5]}, "'beta' is [0.5]"),
    ({"name": "gelu", "approximate": "tanh"}, "'approximate' is 'tanh', expected true or false"),
    ({"name": "gelu", "approximate": 1}, "'approximate' is 1"),
])
def test_bad_activation_is_refused(raw, fragment):
    with pytest.raises(layers.LayerError) as info:
        layers.parse_activation(raw)
    assert fragment in str(info.value), str(info.value)


def test_bad_activation_in_a_file_names_the_layer(tmp_path, valid):
    spec_dict, arrays = valid
    spec_dict["layers"][0]["activation"] = {"name": "relu", "slope": 0.1}
    refused(write(tmp_path, spec_dict, arrays), "layer 0 'fc1' (dense)", "'activation'", "no parameter(s) 'slope'")


CONV = {"type": "conv2d", "name": "c", "filters": 3, "kernel_size": [3, 3]}
DW = {"type": "depthwise_conv2d", "name": "c", "kernel_size": [3, 3]}
POOL = {"type": "avgpool2d", "name": "c", "pool_size": [3, 3]}


@pytest.mark.parametrize("layer,fragment", [
    ({**CONV, "padding": [[1, -1], [0, 0]]}, "expected 'same' or 'valid' or [[top, bottom], [left, right]]"),
    ({**CONV, "padding": [[1, 1]]}, "'padding' is [[1, 1]]"),
    ({**CONV, "padding": [1, 1, 1, 1]}, "'padding' is [1, 1, 1, 1]"),
    ({**CONV, "padding": [[1.0, 1], [0, 0]]}, "'padding' is [[1.0, 1], [0, 0]]"),
    ({**CONV, "padding": [[True, 1], [0, 0]]}, "'padding' is [[True, 1], [0, 0]]"),
    ({**CONV, "padding": "full"}, "'padding' is 'full'"),
    ({**CONV, "kernel_size": [30, 3], "padding": [[1, 0], [0, 0]]}, "window 30 is larger than the padded input height"),
    ({**CONV, "strides": [65536, 65536], "padding": [[65536, 65536], [65536, 65536]]}, "exceeds 16777216 values"),
    ({**DW, "depth_multiplier": 0}, "'depth_multiplier' is 0"),
    ({**DW, "filters": 3}, "unknown field(s) 'filters'"),
    ({**DW, "activation": "softmax2"}, "activation 'softmax2' is not supported"),
    ({**POOL, "padding": [[3, 0], [0, 0]]}, "top/bottom pads [3, 0] must each be smaller than the pool size 3"),
    ({**POOL, "padding": [[0, 0], [0, 4]]}, "left/right pads [0, 4]"),
    ({**POOL, "count_include_pad": 1}, "'count_include_pad' is 1, expected true or false"),
    ({**POOL, "type": "maxpool2d", "count_include_pad": True}, "unknown field(s) 'count_include_pad'"),
    ({"type": "zeropad2d", "name": "c", "padding": "same"}, "'padding' is 'same', expected [[top, bottom]"),
    ({"type": "zeropad2d", "name": "c"}, "'padding' is missing"),
    ({"type": "global_avgpool2d", "name": "c", "keepdims": True}, "unknown field(s) 'keepdims'"),
])
def test_bad_version_2_layer_is_refused(layer, fragment):
    layer_list = [layer, {"type": "flatten", "name": "f"}, {"type": "dense", "name": "out", "units": 10,
                                                            "activation": "softmax"}]
    with pytest.raises(WeightsFormatError) as info:
        parse_v2(layer_list, arrays={})
    assert "layer 0 'c'" in str(info.value) and fragment in str(info.value), str(info.value)


def test_global_pool_needs_a_map():
    layer_list = [{"type": "global_maxpool2d", "name": "g"}, {"type": "dense", "name": "out", "units": 10,
                                                               "activation": "softmax"}]
    with pytest.raises(WeightsFormatError, match=r"input has shape \(784,\), expected \(height, width, channels\)"):
        parse_v2(layer_list, (784,), arrays={})


def test_depthwise_kernel_of_the_wrong_shape_is_refused():
    layer_list = [{**DW, "depth_multiplier": 2}, *V2_LAYERS[-4:-3], {"type": "flatten", "name": "f"},
                  {"type": "dense", "name": "out", "units": 10, "activation": "softmax"}]
    arrays = random_arrays(layer_list, (28, 28, 1), np.random.default_rng(0))
    arrays["c/kernel"] = np.zeros((3, 3, 2, 1), np.float32)  # (kh, kw, in_c, dm) with in_c and dm swapped
    with pytest.raises(WeightsFormatError, match=r"'c/kernel' has shape \(3, 3, 2, 1\), expected \(3, 3, 1, 2\)"):
        parse_v2(layer_list, arrays=arrays)


@pytest.mark.parametrize("dtype", [np.int8, np.int32])
def test_integer_arrays_are_kept_but_refused_by_float_layers(tmp_path, valid, dtype):
    spec_dict, arrays = valid
    arrays["fc1/kernel"] = (arrays["fc1/kernel"] * 50).astype(dtype)
    path = write(tmp_path, spec_dict, arrays)
    _, read_arrays = format.read(path)
    assert read_arrays["fc1/kernel"].dtype == dtype
    np.testing.assert_array_equal(read_arrays["fc1/kernel"], arrays["fc1/kernel"])
    refused(path, "'fc1/kernel' has dtype " + np.dtype(dtype).name + ", expected float32")


def test_float64_arrays_are_saved_as_float32(tmp_path, valid):
    spec_dict, arrays = valid
    arrays["fc1/bias"] = arrays["fc1/bias"].astype(np.float64)
    _, read_arrays = format.read(write(tmp_path, spec_dict, arrays))
    assert read_arrays["fc1/bias"].dtype == np.float32


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float16, np.int64, np.complex64])
def test_container_refuses_other_dtypes(tmp_path, valid, dtype):
    spec_dict, arrays = valid
    members = {"spec": spec_bytes(spec_dict), **arrays, "fc1/bias": arrays["fc1/bias"].astype(dtype)}
    refused(raw_npz(tmp_path / "m.npz", members), "fc1/bias", f"dtype {np.dtype(dtype)}, expected float32 or int8 or int32")


def test_reference_arrays_must_be_float32(tmp_path, valid):
    spec_dict, arrays = valid
    arrays["reference/inputs"] = (arrays["reference/inputs"] * 100).astype(np.int8)
    refused(write(tmp_path, spec_dict, arrays), "'reference/inputs' has dtype int8, expected float32")
